"""The real thing: two tinyvpn instances, each in its own network namespace, joined by a veth
cable, with real traffic (ping, TCP, UDP) crossing the tunnel. They need root, and skip
without it (see conftest.py).

    namespace a                                      namespace b
    ping 198.51.100.2 -> TUN -> tinyvpn -> veth -> tinyvpn -> TUN -> kernel answers
"""

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import skip_or_fail
from netns import (
    OTHER,
    PORT,
    TINYVPN,
    TUNNEL,
    UNDERLAY,
    Hosts,
    bring_up_tunnel,
    has_interface,
    output,
    run,
    sh,
    start,
    start_tinyvpn,
    stop,
    tinyvpn_command,
    tunnel_commands,
    udp_port_bound,
    wait_for,
)
from traffic import ping, tcp_transfer, udp_burst

B_IPV4, B_IPV6 = TUNNEL["b"]


def start_tunnel(hosts: Hosts, peer_of_a: str = UNDERLAY["b"][0],
                 peer_of_b: str = UNDERLAY["a"][0]) -> None:
    start_tinyvpn(hosts, "a", "-d", peer=peer_of_a)
    start_tinyvpn(hosts, "b", "-d", peer=peer_of_b)
    bring_up_tunnel(hosts)


def test_ping_crosses_and_each_side_shows_it_decoded(hosts: Hosts) -> None:
    start_tunnel(hosts)
    ping(hosts, B_IPV4)
    a, b = output(hosts, "tinyvpn-a"), output(hosts, "tinyvpn-b")
    # A's kernel sends the request into A's TUN; B's tinyvpn writes it into B's TUN; the reply
    # comes back the same way.
    assert "tun->net     84 B  IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request" in a
    assert "net->tun     84 B  IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request" in b
    assert "seq=3   (from 192.0.2.1:5000)" in b
    assert "tun->net     84 B  IPv4 198.51.100.2 -> 198.51.100.1  ICMP echo-reply" in b
    assert "net->tun     84 B  IPv4 198.51.100.2 -> 198.51.100.1  ICMP echo-reply" in a


def test_ipv6_inside_the_tunnel(hosts: Hosts) -> None:
    start_tunnel(hosts)
    ping(hosts, B_IPV6)
    assert "IPv6 2001:db8:2::1 -> 2001:db8:2::2  ICMPv6 echo-request" in output(hosts, "tinyvpn-b")


def test_ipv6_as_the_outer_transport(hosts: Hosts) -> None:
    start_tunnel(hosts, peer_of_a=UNDERLAY["b"][1], peer_of_b=UNDERLAY["a"][1])
    ping(hosts, B_IPV4)
    assert "(from [2001:db8:1::1]:5000)" in output(hosts, "tinyvpn-b")


def test_ipv4_one_way_and_ipv6_the_other(hosts: Hosts) -> None:
    start_tunnel(hosts, peer_of_a=UNDERLAY["b"][0], peer_of_b=UNDERLAY["a"][1])
    ping(hosts, B_IPV4)
    assert "(from 192.0.2.1:5000)" in output(hosts, "tinyvpn-b")  # a sent over IPv4
    assert "(from [2001:db8:1::2]:5000)" in output(hosts, "tinyvpn-a")  # b answered over IPv6


def test_a_tcp_transfer_arrives_intact(hosts: Hosts) -> None:
    start_tinyvpn(hosts, "a")  # without -d: as fast as it goes
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)
    sent, received, _ = tcp_transfer(hosts, 8 * 1024 * 1024)
    assert received == sent  # same size, same SHA-256


def test_a_burst_of_datagrams_arrives_as_separate_packets(hosts: Hosts) -> None:
    # If tinyvpn read the TUN in big chunks, queued packets would be glued into one datagram
    # and the receiving kernel would keep only the first: most of this burst would vanish.
    start_tinyvpn(hosts, "a")
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)
    sizes = [100 + 31 * i for i in range(40)]
    got = udp_burst(hosts, sizes)
    assert sorted(got) == [[size, i, True] for i, size in enumerate(sizes)]


def test_a_datagram_that_is_not_ip_is_dropped_and_the_tunnel_goes_on(hosts: Hosts) -> None:
    start_tunnel(hosts)
    # The kernel judges a TUN write by its first 4 bits, the IP version: 'T' is 0x54, version 5.
    junk = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)" \
           ".sendto(b'This is not IP!!', ('192.0.2.2', 5000))"
    run(hosts, "a", sys.executable, "-c", junk)
    ping(hosts, B_IPV4)  # still works
    assert stop(hosts.processes[1]) == 0  # b: SIGTERM, then its summary
    b = output(hosts, "tinyvpn-b")
    assert "net->tun     16 B  not an IP packet   (from 192.0.2.1:" in b
    assert "DROPPED: write EINVAL (Invalid argument)" in b
    assert "dropped: write EINVAL (Invalid argument) 1" in b


def test_a_packet_that_cannot_be_sent_is_shown_dropped_and_counted(hosts: Hosts) -> None:
    # 203.0.113.9 (a documentation address) has no route in a: every sendto() fails at once.
    a = start_tinyvpn(hosts, "a", "-d", peer="203.0.113.9")
    for command in tunnel_commands(hosts, "a"):
        sh(*command)
    run(hosts, "a", "ping", "-c", "1", "-W", "1", B_IPV4, check=False)
    assert stop(a) == 0
    lines = output(hosts, "tinyvpn-a").splitlines()
    request = "tun->net     84 B  IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request"
    read = lines.index(next(line for line in lines if line.startswith(request)))
    # The line for the packet read, then one for the send that failed.
    assert lines[read + 1].startswith(request)
    assert lines[read + 1].endswith("DROPPED: send ENETUNREACH (Network is unreachable)")
    assert "dropped: send ENETUNREACH (Network is unreachable) " in lines[-1]
    assert lines[-1].startswith("tinyvpn: sent 0 packets (0 B), ")  # none was really sent


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_under_load_exits_0_and_removes_the_interface(hosts: Hosts, how: int) -> None:
    a = start_tinyvpn(hosts, "a", "-d")
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)
    flood = start(hosts, "a", "ping", "-f", "-w", "5", B_IPV4, name="flood")  # echoes, flat out
    wait_for(lambda: output(hosts, "tinyvpn-a").count("echo-reply") > 100,
             "the flood to be under way")
    a.send_signal(how)
    assert a.wait(5) == 0
    assert "Traceback" not in output(hosts, "tinyvpn-a")
    assert "tinyvpn: sent " in output(hosts, "tinyvpn-a").splitlines()[-1]  # the summary, last
    assert not has_interface(hosts, "a", hosts.tun)
    stop(flood)


def test_a_log_whose_reader_left_does_not_take_the_tunnel_down(hosts: Hosts) -> None:
    # tinyvpn -d ... 2>&1 | head -n 2: after two lines nobody reads stderr any more.
    a = subprocess.Popen(tinyvpn_command(hosts, "a", "-d"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hosts.processes.append(a)  # ended by two_hosts(), whatever happens
    wait_for(lambda: udp_port_bound(a.pid, PORT), "tinyvpn to bind its port")
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)
    ping(hosts, B_IPV4, count=1)
    a.stderr.readline()  # type: ignore[union-attr]
    a.stderr.readline()  # type: ignore[union-attr]
    a.stderr.close()  # type: ignore[union-attr]
    ping(hosts, B_IPV4)  # each packet would print a line, into a pipe nobody reads
    assert a.poll() is None and has_interface(hosts, "a", hosts.tun)
    assert stop(a) == 0


def test_a_second_instance_on_the_same_interface_is_told_it_is_busy(hosts: Hosts) -> None:
    start_tinyvpn(hosts, "a")
    second = run(hosts, "a", sys.executable, str(TINYVPN), hosts.tun, "192.0.2.2", "5001",
                 check=False)
    assert second.returncode == 1
    assert second.stderr.startswith(f"tinyvpn: interface {hosts.tun} is busy: ")


def test_an_interface_of_another_type_with_the_name_is_explained(hosts: Hosts) -> None:
    run(hosts, "a", "ip", "link", "add", hosts.tun, "type", "veth", "peer", "name",
        f"{hosts.prefix}p")
    result = run(hosts, "a", sys.executable, str(TINYVPN), hosts.tun, "192.0.2.2", "5000",
                 check=False)
    assert result.returncode == 1
    assert result.stderr == (f"tinyvpn: cannot create TUN interface {hosts.tun}: an interface "
                             "of another type (veth, TAP, ...) has that name; choose another "
                             "INTERFACE name\n")


def test_deleting_the_interface_under_it_ends_it_with_a_message(hosts: Hosts) -> None:
    a = start_tinyvpn(hosts, "a", "-d")
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)
    ping(hosts, B_IPV4, count=1)
    run(hosts, "a", "ip", "link", "delete", hosts.tun)
    assert a.wait(5) == 1
    assert output(hosts, "tinyvpn-a").splitlines()[-1] == (
        f"tinyvpn: interface {hosts.tun} was deleted (ip link delete?), so the tunnel ends")
    assert "Traceback" not in output(hosts, "tinyvpn-a")


def test_an_unresolvable_peer_is_reported(hosts: Hosts) -> None:
    # Inside the namespace the DNS query has no route: it fails at once, never leaving the machine.
    result = run(hosts, "a", sys.executable, str(TINYVPN), "stdio", "no-such-host.invalid", "5000",
                 check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("tinyvpn: cannot resolve peer 'no-such-host.invalid': ")
    assert "Traceback" not in result.stderr


def test_a_missing_dev_net_tun_is_explained(hosts: Hosts) -> None:
    # A private mount namespace hides /dev/net/tun from this one command only.
    hide = "mount -t tmpfs tmpfs /dev/net && exec \"$@\""
    result = run(hosts, "a", "unshare", "--mount", "sh", "-c", hide, "sh",
                 sys.executable, str(TINYVPN), hosts.tun, "192.0.2.2", "5000", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "tinyvpn: /dev/net/tun is missing: run 'modprobe tun'; in a container")


# --- Running without root ------------------------------------------------------------------

NOBODY = "65534"


@pytest.fixture
def unprivileged(tmp_path: Path) -> list:
    """A command prefix that runs what follows as user nobody, with a world-usable /dev/net/tun.

    The usual /dev/net/tun is mode 0666; on hosts where it is 0600, a private mount namespace
    gives this one command its own 0666 node, so the host's own device is never changed.
    """
    as_nobody = ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]
    runs = [p for p in (sys.executable, "/usr/bin/python3")
            if subprocess.run([*as_nobody, p, "-c", ""], capture_output=True).returncode == 0]
    python = runs[0] if runs else None
    if python is None:
        skip_or_fail("no Python that user nobody may run (install python3 outside /root)")
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o755)
    shutil.copy(TINYVPN, folder / "tinyvpn.py")  # nobody may not be able to read the checkout
    device = "mount -t tmpfs tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200 && exec \"$@\""
    yield ["unshare", "--mount", "sh", "-c", device, "sh",
           *as_nobody, python, str(folder / "tinyvpn.py")]
    shutil.rmtree(folder)


def test_without_root_creating_a_tun_is_refused_with_advice(hosts: Hosts,
                                                            unprivileged: list) -> None:
    result = run(hosts, "a", *unprivileged, hosts.tun, "192.0.2.2", "5000", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "tinyvpn: not allowed to create a TUN interface: run as root (or with CAP_NET_ADMIN), or "
        "first create one owned by your user: "
        f"ip tuntap add dev {hosts.tun} mode tun user $USER\n")


def test_without_root_on_a_persistent_tun_owned_by_the_user(hosts: Hosts,
                                                            unprivileged: list) -> None:
    device_before = os.stat("/dev/net/tun")
    # Root prepares once; then the user runs tinyvpn with no privilege at all.
    run(hosts, "a", "ip", "tuntap", "add", "dev", hosts.tun, "mode", "tun", "user", NOBODY)
    a = start_tinyvpn(hosts, "a", program=unprivileged)
    assert "Uid:\t65534\t" in Path(f"/proc/{a.pid}/status").read_text()  # really not root
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)
    ping(hosts, B_IPV4)
    device_after = os.stat("/dev/net/tun")
    assert stat.filemode(device_after.st_mode) == stat.filemode(device_before.st_mode)


# --- Path MTU discovery: a packet too big for one datagram ---------------------------------


@pytest.mark.parametrize("family, largest", [(0, 65507), (1, 65527)],
                         ids=["IPv4 underlay", "IPv6 underlay"])
def test_at_tun_mtu_65535_a_packet_too_big_for_a_datagram_is_answered_and_tcp_goes_on(
        hosts: Hosts, family: int, largest: int) -> None:
    for side in "ab":
        start_tinyvpn(hosts, side, peer=UNDERLAY[OTHER[side]][family])
    bring_up_tunnel(hosts, mtu=65535)
    # One byte more than a datagram carries: 20 + 8 + (largest - 27) bytes, DF set.
    result = run(hosts, "a", "ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(largest - 27),
                 B_IPV4, check=False)
    assert f"From {B_IPV4} icmp_seq=1 Frag needed and DF set (mtu = {largest})" in result.stdout
    result = run(hosts, "a", "ping", "-c", "1", "-W", "2", "-s", str(largest - 47), B_IPV6,
                 check=False)
    assert f"From {B_IPV6} icmp_seq=1 Packet too big: mtu={largest}" in result.stdout
    # a's kernel remembers the size for each destination, for 10 minutes.
    for address in (B_IPV4, B_IPV6):
        route = run(hosts, "a", "ip", "route", "get", address).stdout
        remembered = re.search(rf"expires (\d+)sec mtu {largest}\b", route)
        assert remembered and 590 <= int(remembered[1]) <= 600, route
    # TCP's segments, 65535 bytes at first, shrink to fit: the transfer goes on at full speed.
    sent, received, _ = tcp_transfer(hosts, 32 * 1024 * 1024)
    assert received == sent
