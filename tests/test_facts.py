"""The kernel facts that tinyvpn.py and the README teach, checked on the running kernel.

A number a learner reads must be true: each test here measures one, inside two namespaces
joined by a 1500-byte veth cable (see netns.py), and names the text that states it.
"""

import json
import platform
import socket
import sys
from pathlib import Path

import pytest
from netns import OTHER, TUNNEL, UNDERLAY, Hosts, bring_up_tunnel, run, start_tinyvpn

import tinyvpn

# Run inside namespace a: one sendmsg() to b, with UDP_SEGMENT unless segments is 0.
SEND_PROBE = """
import errno, json, socket, struct, sys
peer, segments, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if ":" in peer else socket.AF_INET
gso = [(socket.SOL_UDP, 103, struct.pack("=H", size))] if segments else []
with socket.socket(family, socket.SOCK_DGRAM) as sock:
    try:
        sock.sendmsg([bytes(max(segments, 1) * size)], gso, 0, (peer, 6000))
        print(json.dumps("sent"))
    except OSError as error:
        print(json.dumps(errno.errorcode[error.errno]))
"""


def gso_send(hosts: Hosts, family: int, segments: int, size: int) -> str:
    """'sent', or the errno name the kernel answers one sendmsg() of `segments` datagrams of
    `size` bytes each (GSO; 0: one plain datagram), from a to b over the veth cable."""
    result = run(hosts, "a", sys.executable, "-c", SEND_PROBE, UNDERLAY["b"][family],
                 str(segments), str(size))
    return str(json.loads(result.stdout))


def kernel_at_least(*version: int) -> bool:
    release = platform.release().split("-")[0].split(".")
    return tuple(int(number) for number in release[:2] if number.isdigit()) >= version


@pytest.mark.parametrize("family", [0, 1], ids=["IPv4", "IPv6"])
def test_gso_makes_the_segments_tinyvpn_asks_for_and_refuses_one_more_than_its_limit(
        hosts: Hosts, family: int) -> None:
    # tinyvpn.py: GSO_MAX_SEGMENTS = 64 works everywhere; the kernel's limit is 128 since
    # Linux 6.9 (and in stable updates of some older series), 64 before.
    assert gso_send(hosts, family, tinyvpn.GSO_MAX_SEGMENTS, 100) == "sent"
    limit = 128 if gso_send(hosts, family, 128, 100) == "sent" else 64
    assert gso_send(hosts, family, limit + 1, 100) == "EINVAL"
    assert limit == 128 or not kernel_at_least(6, 9)


@pytest.mark.parametrize("family, fits", [(0, 1472), (1, 1452)], ids=["IPv4", "IPv6"])
def test_a_batch_too_big_for_the_link_is_refused_with_emsgsize(
        hosts: Hosts, family: int, fits: int) -> None:
    # README, "When the kernel refuses": datagrams that with their headers exceed the MTU.
    # EMSGSIZE since a fix of early 2025 (in every kernel from 6.14 on, and in stable updates
    # of older series); EINVAL before.
    assert gso_send(hosts, family, 2, fits) == "sent"
    refused = gso_send(hosts, family, 2, fits + 1)
    assert refused == "EMSGSIZE" or (refused == "EINVAL" and not kernel_at_least(6, 14))


def fragments_made(hosts: Hosts, side: str, family: int) -> int:
    """How many IP fragments the kernel of `side` has made so far (RFC 4293 counters)."""
    if family == 0:
        lines = run(hosts, side, "cat", "/proc/net/snmp").stdout.splitlines()
        names, values = [line.split() for line in lines if line.startswith("Ip:")][:2]
        return int(values[names.index("FragCreates")])
    counters = dict(line.split() for line in
                    run(hosts, side, "cat", "/proc/net/snmp6").stdout.splitlines())
    return int(counters["Ip6FragCreates"])


def ping_fragments(hosts: Hosts, family: int, size: int) -> int:
    """Ping b's tunnel address with a `size`-byte payload that must not be fragmented inside
    the tunnel (-M do); return how many fragments a's kernel made of what tinyvpn sent."""
    before = fragments_made(hosts, "a", family)
    result = run(hosts, "a", "ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(size),
                 TUNNEL["b"][0], check=False)
    assert "1 received" in result.stdout, result.stdout + result.stderr
    return fragments_made(hosts, "a", family) - before


@pytest.mark.parametrize("family, fits", [(0, 1472), (1, 1452)], ids=["IPv4", "IPv6"])
def test_the_exact_mtu_fits_on_a_1500_byte_link(hosts: Hosts, family: int, fits: int) -> None:
    # README, "MTU": 1500 - 28 = 1472 over an IPv4 underlay, 1500 - 48 = 1452 over IPv6.
    for side in "ab":
        start_tinyvpn(hosts, side, peer=UNDERLAY[OTHER[side]][family])
    bring_up_tunnel(hosts, mtu=fits)
    # The largest ping the TUN takes (MTU - 28 bytes of inner IPv4 and ICMP headers) leaves
    # as one datagram: the outer packet is exactly 1500 bytes, not fragmented.
    assert ping_fragments(hosts, family, fits - 28) == 0
    # One byte more, at a TUN MTU one larger, and the outer packet must be fragmented.
    for side in "ab":
        run(hosts, side, "ip", "link", "set", "dev", hosts.tun, "mtu", str(fits + 1))
    assert ping_fragments(hosts, family, fits + 1 - 28) == 2


def test_a_tun_mtu_is_65535_at_most(hosts: Hosts) -> None:
    # tinyvpn.py: MAX_PACKET = 65535, the longest packet a TUN read gives.
    start_tinyvpn(hosts, "a")
    set_mtu = ("ip", "link", "set", "dev", hosts.tun, "mtu")
    assert run(hosts, "a", *set_mtu, "65535", check=False).returncode == 0
    assert run(hosts, "a", *set_mtu, "65536", check=False).returncode != 0


# Run inside namespace a: asks for a receive buffer as tinyvpn does, prints what it got.
RECEIVE_BUFFER_PROBE = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(sys.argv[1]))
    print(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
"""


def test_the_receive_buffer_is_capped_at_rmem_max_then_doubled(hosts: Hosts) -> None:
    # tinyvpn.py, open_udp_socket; README, "Performance".
    cap = int(run(hosts, "a", "cat", "/proc/sys/net/core/rmem_max").stdout)
    got = run(hosts, "a", sys.executable, "-c", RECEIVE_BUFFER_PROBE,
              str(tinyvpn.RECEIVE_BUFFER)).stdout
    assert int(got) == 2 * min(tinyvpn.RECEIVE_BUFFER, cap)


def test_a_learned_path_mtu_is_kept_10_minutes(hosts: Hosts) -> None:
    # tinyvpn.py, "Too big": the sender's kernel keeps the size 10 minutes (a new namespace has
    # the defaults, 600 s, in both families).
    for family in ("ipv4", "ipv6"):
        kept = run(hosts, "a", "cat", f"/proc/sys/net/{family}/route/mtu_expires").stdout
        assert int(kept) == 10 * 60, family


@pytest.mark.parametrize("family, largest", [(0, 65507), (1, 65527)], ids=["IPv4", "IPv6"])
def test_the_largest_udp_payload(hosts: Hosts, family: int, largest: int) -> None:
    # tinyvpn.py, UDP_PAYLOAD_IPV4 and UDP_PAYLOAD_IPV6: 65,507 bytes over IPv4, 65,527 over IPv6.
    assert gso_send(hosts, family, 0, largest) == "sent"  # the kernel fragments it
    assert gso_send(hosts, family, 0, largest + 1) == "EMSGSIZE"
    peer = tinyvpn.resolve_peer(UNDERLAY["b"][family], 5000, socket.AF_INET6)  # as main() does
    assert tinyvpn.largest_payload(peer) == largest


def test_ping_checks_the_tun_mtu_as_the_readme_says(hosts: Hosts) -> None:
    # README, "MTU": at TUN MTU 1400, -s 1372 crosses and -s 1373 is refused before leaving.
    for side in "ab":
        start_tinyvpn(hosts, side)
    bring_up_tunnel(hosts, mtu=1400)
    ping = ("ping", "-c", "1", "-W", "2", "-M", "do", "-s")
    assert "1 received" in run(hosts, "a", *ping, "1372", TUNNEL["b"][0], check=False).stdout
    refused = run(hosts, "a", *ping, "1373", TUNNEL["b"][0], check=False)
    assert "local error: message too long, mtu=1400" in refused.stdout + refused.stderr


# Run inside namespace a: creates TUN argv[1], leaves it down, writes one IPv4 header to it.
WRITE_WHILE_DOWN = """
import errno, sys
sys.path.insert(0, sys.argv[2])
import tinyvpn
tun = tinyvpn.open_tun(sys.argv[1])
try:
    tinyvpn.os.write(tun, bytes([0x45]) + bytes(19))
    print("written")
except OSError as error:
    print(errno.errorcode[error.errno])
"""


def test_a_tun_that_is_down_refuses_packets_with_eio(hosts: Hosts) -> None:
    # README, "-d" and the demo: a packet written before the interface is up: write EIO.
    result = run(hosts, "a", sys.executable, "-c", WRITE_WHILE_DOWN, hosts.tun,
                 str(Path(tinyvpn.__file__).parent))
    assert result.stdout == "EIO\n"
