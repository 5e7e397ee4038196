"""Port pairs: the split between media processes, binding, round robin, exhaustion.

Covers: disjoint even/odd slices for N processes, range validation, bound RTP/RTCP sockets on
an even port and the next, round-robin reuse, skipping ports someone else holds, exhaustion,
IPv6 when the host has it.
"""

from __future__ import annotations

import socket

import pytest

from siprec_src.errors import ConfigError
from siprec_src.media.ports import PortAllocator, PortsExhaustedError, split_port_range


@pytest.mark.parametrize(("low", "high", "parts"), [(20000, 29999, 1), (20000, 29999, 3), (20001, 20010, 4)])
def test_split_is_disjoint_and_made_of_whole_pairs(low: int, high: int, parts: int) -> None:
    slices = split_port_range(low, high, parts)
    assert len(slices) == parts
    covered: list[int] = []
    for first, last in slices:
        assert first % 2 == 0 and last % 2 == 1 and first < last
        covered += range(first, last + 1)
    assert len(covered) == len(set(covered))
    assert min(covered) >= low and max(covered) <= high
    sizes = [last - first for first, last in slices]
    assert max(sizes) - min(sizes) <= 2  # balanced to one pair


def test_bad_ranges_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="fewer than the 4 media processes"):
        split_port_range(20000, 20005, 4)
    with pytest.raises(ConfigError, match="1024 <= port_min < port_max"):
        PortAllocator(80, 90)
    with pytest.raises(ConfigError, match="no even/odd pair"):
        PortAllocator(20001, 20002)


def test_pairs_are_bound_round_robin_and_released() -> None:
    ports = PortAllocator(53000, 53007)  # four pairs
    rtp, rtcp, address = ports.bind_pair("127.0.0.1")
    assert address == ("127.0.0.1", 53000)
    assert rtp.getsockname() == address and rtcp.getsockname() == ("127.0.0.1", 53001)
    assert not rtp.getblocking()
    ports.release(53000)
    rtp.close()
    rtcp.close()
    # Round robin: the pair just released is reused last (late packets of an old call).
    taken = [ports.bind_pair("127.0.0.1") for _ in range(4)]
    assert [t[2][1] for t in taken] == [53002, 53004, 53006, 53000]
    with pytest.raises(PortsExhaustedError, match="4 of 4 pairs in use"):
        ports.bind_pair("127.0.0.1")
    for rtp, rtcp, _ in taken:
        rtp.close()
        rtcp.close()


def test_ports_held_elsewhere_are_skipped() -> None:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 53101))  # the RTCP port of the first pair
    ports = PortAllocator(53100, 53105)
    rtp, rtcp, address = ports.bind_pair("127.0.0.1")
    assert address[1] == 53102 and len(ports) == 1
    for sock in (rtp, rtcp, squatter):
        sock.close()


def test_ipv6_pairs() -> None:
    # ::1 is loopback: every machine this runs on has it (a missing one fails, it is not skipped).
    rtp, rtcp, address = PortAllocator(53200, 53299).bind_pair("::1")
    assert address == ("::1", 53200) and rtp.family == socket.AF_INET6
    rtp.close()
    rtcp.close()
