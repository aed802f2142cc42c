"""Classic BPF programs, built here and run by the kernel before a frame or datagram is queued.

Two kinds: the heartbeat lane steering (``lanes``) and the responder's frame filters. A frame
filter keeps only ARP requests (not gratuitous) or ICMPv6 Neighbor Solicitations whose target
address is one this socket answers for, so every other frame on the link, and every request for
an IP another node answers, is dropped in the kernel without waking the speaker.

The target addresses are looked up with a binary search compiled into the program: ``jgt``
splits the sorted keys in half until a leaf of at most 32 ``jeq`` is left, so a lookup costs about
2 log2(N/32) + 32 instructions. The filter only has to let through every frame that could be ours
(Python still checks each one exactly): for IPv6 the key is the last 32 bits of the target.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence

from reconciler.speaker.packets import (
    ARP_OP_REQUEST,
    ETH_P_ARP,
    ETH_P_IPV6,
    ICMPV6_NEIGHBOR_SOLICITATION,
    IPPROTO_ICMPV6,
)

Instruction = tuple[int, int, int, int]  # (code, jt, jf, k): struct sock_filter

# Opcodes (<linux/filter.h>).
LD_W_ABS = 0x20
LD_H_ABS = 0x28
LD_B_ABS = 0x30
TAX = 0x07
JA = 0x05
JEQ_K = 0x15
JGT_K = 0x25
JEQ_X = 0x1D
RET_K = 0x06

MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS: the kernel refuses longer classic programs
ACCEPT = 0x40000  # bytes of the frame to keep: all of any frame we read (RECV_SIZE is less)
DROP = 0
LEAF = 32  # keys compared one by one at the bottom of the search (jt offsets must stay < 256)

SO_ATTACH_FILTER = 26
_INSTRUCTION = struct.Struct("=HBBI")
_PROGRAM = struct.Struct("@HP")  # struct sock_fprog: length, then a pointer (native alignment)

_ARP_OP = 20
_ARP_SENDER_IP = 28
_ARP_TARGET_IP = 38
_IPV6_NEXT_HEADER = 20
_ICMPV6_TYPE = 54
_NS_TARGET_LAST_WORD = 74  # 14 Ethernet + 40 IPv6 + 8 ICMPv6 header and reserved + 12


def attach(sock: socket.socket, option: int, program: Sequence[Instruction]) -> None:
    """Attach ``program`` with ``option``; the kernel swaps it in atomically for any older one."""
    code = ctypes.create_string_buffer(b"".join(_INSTRUCTION.pack(*i) for i in program))
    # The kernel copies the program during the call: the buffer only has to outlive it.
    sock.setsockopt(socket.SOL_SOCKET, option, _PROGRAM.pack(len(program), ctypes.addressof(code)))


def _lookup(keys: Sequence[int]) -> list[Instruction]:
    """Accept when the accumulator is one of ``keys`` (sorted, unique), else drop.

    A leaf is a run of ``jeq`` that jump (8-bit offsets: leaves stay short) to the ``ret`` that
    accepts, right after the one that drops; the halves are joined by ``ja`` (32-bit offset), so
    no conditional offset overflows however many keys there are. About 1.1 instructions a key.
    """
    if len(keys) <= LEAF:
        program: list[Instruction] = [(JEQ_K, len(keys) - i, 0, key) for i, key in enumerate(keys)]
        return [*program, (RET_K, 0, 0, DROP), (RET_K, 0, 0, ACCEPT)]
    middle = len(keys) // 2
    low, high = _lookup(keys[:middle]), _lookup(keys[middle:])
    # Greater than the last low key: the ja to the high half; else fall into the low half.
    return [(JGT_K, 0, 1, keys[middle - 1]), (JA, 0, 0, len(low)), *low, *high]


def _with_targets(prologue: list[Instruction], keys: Iterable[int] | None) -> list[Instruction] | None:
    if keys is None:
        return [*prologue, (RET_K, 0, 0, ACCEPT)]
    unique = sorted(set(keys))
    if len(unique) > MAX_INSTRUCTIONS:  # each key takes at least one instruction
        return None
    program = prologue + _lookup(unique)
    return program if len(program) <= MAX_INSTRUCTIONS else None


def arp_request_filter(targets: Iterable[str] | None) -> list[Instruction] | None:
    """ARP requests, not gratuitous (sender IP = target IP), for one of ``targets``.

    ``None`` targets: every such request. Returns None when the program would be too long.
    """
    prologue = [
        (LD_H_ABS, 0, 0, 12),
        (JEQ_K, 0, 6, ETH_P_ARP),
        (LD_H_ABS, 0, 0, _ARP_OP),
        (JEQ_K, 0, 4, ARP_OP_REQUEST),
        (LD_W_ABS, 0, 0, _ARP_SENDER_IP),
        (TAX, 0, 0, 0),
        (LD_W_ABS, 0, 0, _ARP_TARGET_IP),
        (JEQ_X, 0, 1, 0),  # gratuitous: the drop right below
        (RET_K, 0, 0, DROP),
    ]
    keys = None if targets is None else (int(ipaddress.IPv4Address(ip)) for ip in targets)
    return _with_targets(prologue, keys)


def neighbor_solicitation_filter(targets: Iterable[str] | None) -> list[Instruction] | None:
    """ICMPv6 Neighbor Solicitations without extension headers whose target may be in ``targets``."""
    prologue = [
        (LD_H_ABS, 0, 0, 12),
        (JEQ_K, 0, 4, ETH_P_IPV6),
        (LD_B_ABS, 0, 0, _IPV6_NEXT_HEADER),
        (JEQ_K, 0, 2, IPPROTO_ICMPV6),
        (LD_B_ABS, 0, 0, _ICMPV6_TYPE),
        (JEQ_K, 1, 0, ICMPV6_NEIGHBOR_SOLICITATION),
        (RET_K, 0, 0, DROP),
        (LD_W_ABS, 0, 0, _NS_TARGET_LAST_WORD),
    ]
    keys = None if targets is None else (int(ipaddress.IPv6Address(ip)) & 0xFFFFFFFF for ip in targets)
    return _with_targets(prologue, keys)
