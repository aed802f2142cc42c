"""Send UDP datagrams to one address at a steady high rate, for flood tests (not a pytest module).

    python tests/udp_flood.py IP PORT SECONDS RATE FILE
    python tests/udp_flood.py packet:IFACE 0 SECONDS RATE FILE   (whole Ethernet frames)

FILE holds the datagrams, each preceded by its length (u16, big-endian); they are sent in turn,
256 per ``sendmmsg`` call (one system call per batch: a Python ``sendto`` loop cannot reach
the rates of a real flood). Prints how many were sent.
"""

from __future__ import annotations

import ctypes
import socket
import sys
import time
from pathlib import Path

BATCH = 256


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_IoVec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def read_datagrams(path: Path) -> list[bytes]:
    data, datagrams, at = path.read_bytes(), [], 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 2], "big")
        datagrams.append(data[at + 2:at + 2 + size])
        at += 2 + size
    return datagrams


def write_datagrams(path: Path, datagrams: list[bytes]) -> None:
    path.write_bytes(b"".join(len(d).to_bytes(2, "big") + d for d in datagrams))


def main() -> int:
    ip, port, seconds, rate, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    datagrams = read_datagrams(Path(path))
    # Whole batches, cycling through every datagram: the last batch wraps around to the first.
    total = -(-len(datagrams) // BATCH) * BATCH
    cycle = [datagrams[i % len(datagrams)] for i in range(total)]
    buffers = [ctypes.create_string_buffer(d, len(d)) for d in cycle]
    vectors = (_IoVec * total)(*[_IoVec(ctypes.addressof(b), len(d)) for b, d in zip(buffers, cycle, strict=True)])
    messages = (_MMsgHdr * total)()
    for i in range(total):
        messages[i].hdr.iov = ctypes.pointer(vectors[i])
        messages[i].hdr.iovlen = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if ip.startswith("packet:"):  # frames for an interface, through a packet socket bound to it
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.bind((ip.removeprefix("packet:"), 0))
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((ip, port))
    sent, began, at = 0, time.monotonic(), 0
    while (elapsed := time.monotonic() - began) < seconds:
        if sent > rate * elapsed:  # ahead of the rate: yield the CPU for a moment
            time.sleep(0.0005)
            continue
        count = libc.sendmmsg(sock.fileno(), ctypes.byref(messages, at * ctypes.sizeof(_MMsgHdr)), BATCH, 0)
        sent += max(0, count)
        at = (at + BATCH) % total
    print(f"sent {sent} in {seconds} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
