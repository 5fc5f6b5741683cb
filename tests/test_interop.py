"""tinyvpn against a peer nobody here wrote: socat's TUN-over-UDP speaks the same wire (one raw
IP packet per UDP datagram, no header of its own). tinyvpn runs in namespace a, socat in b.
socat's own tests are not ours to write; what is checked here is that the two understand each
other, both ways, also when tinyvpn's batches are refused (TUN MTU 1500) and every datagram is
fragmented on the 1500-byte link."""

import pytest
from conftest import skip_or_fail
from netns import TUNNEL, Hosts, bring_up_tunnel, missing_tools, start_socat, start_tinyvpn
from traffic import ping, tcp_transfer


@pytest.mark.parametrize("mtu", [1400, 1500])
def test_tinyvpn_and_socat_carry_ping_and_tcp_both_ways(hosts: Hosts, mtu: int) -> None:
    if missing_tools("socat"):
        skip_or_fail("needs socat: apt-get install socat")
    start_tinyvpn(hosts, "a")  # first: socat exits if its first datagram finds no one bound
    start_socat(hosts, "b")
    bring_up_tunnel(hosts, mtu)
    ping(hosts, TUNNEL["b"][0])
    ping(hosts, TUNNEL["a"][0], side="b")
    for source, sink in ("ab", "ba"):
        sent, received, _ = tcp_transfer(hosts, 4 * 1024 * 1024, source, sink)
        assert received == sent  # same size, same SHA-256
