"""The interface source reads a real kernel's addresses (in a network namespace of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import sys
from reconciler.ddns.addresses import AddressProblem
from reconciler.ddns.lookup import interface_address
try:
    print(interface_address(sys.argv[1], int(sys.argv[2])))
except AddressProblem as exc:
    print("problem:", exc)
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ps-ddns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True)


def probe(netns: str, interface: str, family: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PROBE, interface, str(family)],
                         capture_output=True, text=True, env=env, timeout=30, check=True)
    return out.stdout.strip()


def test_the_interfaces_public_address_of_each_family(netns: str) -> None:
    ip(netns, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
    ip(netns, "link", "set", "wan0", "up")
    ip(netns, "addr", "add", "10.0.0.2/24", "dev", "wan0")  # a private one first: skipped
    ip(netns, "addr", "add", "93.184.216.34/24", "dev", "wan0")
    ip(netns, "-6", "addr", "add", "2a00:1450:4001:82b::200e/64", "dev", "wan0", "nodad")
    assert probe(netns, "wan0", 4) == "93.184.216.34"
    assert probe(netns, "wan0", 6) == "2a00:1450:4001:82b::200e"


def test_an_interface_with_only_private_addresses_or_none_at_all(netns: str) -> None:
    ip(netns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")  # down: no link-local
    ip(netns, "addr", "add", "192.168.1.2/24", "dev", "lan0")
    assert probe(netns, "lan0", 4) == "192.168.1.2"  # given back, and refused by the judge with why
    assert probe(netns, "lan0", 6) == "problem: no IPv6 address on it"
    assert probe(netns, "nope0", 4) == "problem: no such interface"
