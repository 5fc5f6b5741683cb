"""Batching ("Going fast" in tinyvpn.py): inside a host the kernel glues datagrams together
(UDP GSO when sending, GRO when receiving), but the wire still carries one datagram per packet,
a batch the kernel refuses is sent one by one, and a tinyvpn that batches talks to one that
does not.

The first tests need no root: they use tinyvpn's own classes on loopback sockets, in this
process. The others run two tinyvpn instances in two namespaces (see netns.py).
"""

import socket
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from netns import TINYVPN, TUNNEL, UNDERLAY, Hosts, bring_up_tunnel, run, start_tinyvpn
from traffic import ping, tcp_transfer, udp_burst

import tinyvpn

# tinyvpn as it runs on a kernel without UDP GSO/GRO (before Linux 5.0): enable_batching() says
# no, so the Network has no Glue: one system call per datagram.
WITHOUT_BATCHING = (sys.executable, "-c", "import sys; "
                    f"sys.path.insert(0, {str(TINYVPN.parent)!r}); import tinyvpn; "
                    "tinyvpn.enable_batching = lambda sock: False; "
                    "sys.exit(tinyvpn.main(sys.argv[1:]))")


def packets_of(*sizes: int) -> list:
    """Packets of these sizes, packet i filled with byte i, so a mix-up would show."""
    return [memoryview(bytes([i]) * size) for i, size in enumerate(sizes)]


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A plain UDP socket on loopback: each recv() returns exactly one datagram."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        yield sock


def batching_sender(to: socket.socket) -> tinyvpn.Network:
    """tinyvpn's network end, on a port of its own, sending to the socket `to`."""
    sock = tinyvpn.open_udp_socket(0)
    assert tinyvpn.enable_batching(sock), "this kernel has no UDP GSO/GRO (Linux 5.0 or later)"
    peer = tinyvpn.resolve_peer("127.0.0.1", to.getsockname()[1], sock.family)
    return tinyvpn.Network(sock, peer, None)


def test_a_run_of_equal_packets_arrives_as_separate_datagrams(receiver: socket.socket) -> None:
    sent = packets_of(*[1000] * 10, 300)  # ten of one size, and a shorter last one
    sender = batching_sender(receiver)
    with sender.sock:
        sender.send(sent)
    got = [receiver.recv(65535) for _ in sent]
    assert got == [bytes(packet) for packet in sent]  # in order, none glued to another


def test_the_kernel_cuts_one_sendmsg_into_datagrams_and_gro_glues_them_back() -> None:
    # The receiving socket asks for GRO: on loopback a GSO train arrives whole, so one recvmsg()
    # returns all of it, with the segment size beside it. That proves it left as one sendmsg().
    with tinyvpn.open_udp_socket(0) as sock:
        assert tinyvpn.enable_batching(sock)  # which turns GRO on
        sender = batching_sender(sock)
        sent = packets_of(*[1200] * 20, 7)
        sender.send(sent)
        length, control, _, _ = sock.recvmsg_into([bytearray(65535)], tinyvpn.GRO_SPACE)
        assert length == 20 * 1200 + 7
        assert control == [(socket.SOL_UDP, tinyvpn.UDP_GRO, (1200).to_bytes(4, sys.byteorder))]
        # The same again, read by tinyvpn's own receive(), which cuts it back into datagrams.
        sender.send(sent)
        got = [(bytes(packet), origin)
               for packet, origin in tinyvpn.Network(sock, (), None).receive()]
    with sender.sock:
        origin = ("::ffff:127.0.0.1", sender.sock.getsockname()[1], 0, 0)
    assert got == [(bytes(packet), origin) for packet in sent]


class Dropped:
    """Stands in for -d's Log: keeps the reason of every datagram dropped."""

    def __init__(self) -> None:
        self.reasons: list = []

    def received(self, packet: memoryview, sender: tuple, dropped: str = "") -> None:
        self.reasons.append(dropped)


def test_a_datagram_longer_than_the_buffer_is_dropped_never_cut(
        receiver: socket.socket) -> None:
    # tinyvpn's buffer holds any UDP payload; a smaller one stands in for a datagram that
    # would not fit (MSG_TRUNC). Half a packet must never reach the TUN.
    with tinyvpn.open_udp_socket(0) as sock:
        log = Dropped()
        network = tinyvpn.Network(sock, (), log)  # type: ignore[arg-type]
        network.buffer = memoryview(bytearray(1000))
        port = sock.getsockname()[1]
        receiver.sendto(b"x" * 1001, ("127.0.0.1", port))
        receiver.sendto(b"y" * 1000, ("127.0.0.1", port))
        time.sleep(0.1)
        got = [bytes(packet) for packet, _ in network.receive()]
    assert got == [b"y" * 1000]  # the one that fits, whole
    assert log.reasons == ["truncated (MSG_TRUNC)"]


def test_one_wake_up_reads_batch_packets_at_most_even_when_each_is_too_big() -> None:
    # A datagram socket pair stands in for the TUN: each read returns one packet. If a packet
    # answered 'too big' were not counted, a flood of them would keep one wake-up reading.
    tun, flood = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with tun, flood:
        tun.setblocking(False)
        for _ in range(tinyvpn.BATCH + 10):
            flood.send(b"\0" * 101)  # not IP (version 0), so no answer is written back
        assert tinyvpn.Local(tun.fileno(), 100, None).read() == []  # over 100 B: all dropped
        left = 0
        with suppress(BlockingIOError):
            while tun.recv(1000):
                left += 1
    assert left == 10  # left for the next wake-up


@pytest.mark.parametrize("sizes, runs", [
    ([100, 100, 100], [[100, 100, 100]]),
    ([100, 100, 60, 100], [[100, 100, 60], [100]]),  # a shorter packet ends a run
    ([100, 200, 200], [[100], [200, 200]]),  # a longer one starts a new run
    ([64] * 65, [[64] * 64, [64]]),  # 64 datagrams at most per sendmsg()
    ([1400] * 47, [[1400] * 46, [1400]]),  # 65507 bytes at most: 46 * 1400 = 64400
])
def test_packets_are_cut_into_runs_that_one_sendmsg_can_carry(sizes: list, runs: list) -> None:
    cut = tinyvpn.equal_size_runs(packets_of(*sizes))
    assert [[len(packet) for packet in run] for run in cut] == runs


# --- Two tinyvpns, batching and not --------------------------------------------------------


def test_a_batch_of_equal_packets_and_a_shorter_one_crosses_the_tunnel_unmerged(
        hosts: Hosts) -> None:
    a = start_tinyvpn(hosts, "a")
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)
    sizes = [1000] * 20 + [200]  # the IP packets are 28 bytes longer: 1028 ... and 228
    got = udp_burst(hosts, sizes, paused=a)  # all queued in a's TUN: one wake-up, one batch
    assert got == [[size, i, True] for i, size in enumerate(sizes)]  # each whole, in order


def test_at_tun_mtu_1500_the_kernel_refuses_batches_and_nothing_is_lost(hosts: Hosts) -> None:
    # 1500-byte packets + 28 bytes of outer headers exceed the 1500-byte link: the kernel refuses
    # to glue them (EINVAL), so tinyvpn sends them one by one, and the kernel fragments each.
    a = start_tinyvpn(hosts, "a")
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts, mtu=1500)
    sizes = [1472] * 10 + [1000] * 5  # inner IP packets of 1500 bytes, then of 1028
    got = udp_burst(hosts, sizes, paused=a)
    assert got == [[size, i, True] for i, size in enumerate(sizes)]
    sent, received, _ = tcp_transfer(hosts, 8 * 1024 * 1024)
    assert received == sent


def test_without_batching_the_plain_path_carries_tcp_intact(hosts: Hosts) -> None:
    for side in "ab":
        start_tinyvpn(hosts, side, program=WITHOUT_BATCHING)
    bring_up_tunnel(hosts)
    sent, received, _ = tcp_transfer(hosts, 8 * 1024 * 1024)
    assert received == sent


def test_a_tinyvpn_that_batches_and_one_that_does_not_understand_each_other(
        hosts: Hosts) -> None:
    start_tinyvpn(hosts, "a")
    start_tinyvpn(hosts, "b", program=WITHOUT_BATCHING)
    bring_up_tunnel(hosts)
    ping(hosts, TUNNEL["b"][0])
    for source, sink in ("ab", "ba"):
        sent, received, _ = tcp_transfer(hosts, 4 * 1024 * 1024, source, sink)
        assert received == sent


def packets_sent_on_the_cable(hosts: Hosts) -> int:
    """How many packets a's end of the veth cable has sent: a batch the kernel took whole
    crosses a veth as one (it is cut into datagrams only where it must be: never, here)."""
    statistics = Path(f"/sys/class/net/{hosts.prefix}v/statistics/tx_packets")
    return int(run(hosts, "a", "cat", str(statistics)).stdout)


def test_batching_comes_back_after_the_path_mtu_does_and_nothing_is_lost(hosts: Hosts) -> None:
    a = start_tinyvpn(hosts, "a")
    start_tinyvpn(hosts, "b")
    bring_up_tunnel(hosts)  # TUN MTU 1400: a full packet and its headers, 1428 bytes, fit
    sizes = [1372] * 20  # IP packets of 1400 bytes, a TUN MTU's worth
    # For a while the path to b carries 1300 bytes at most: the kernel refuses to glue the
    # 1428-byte datagrams, and tinyvpn sends them one by one, each cut into two fragments.
    narrow = ("route", "add", f"{UNDERLAY['b'][0]}/32", "dev", f"{hosts.prefix}v", "mtu", "1300")
    run(hosts, "a", "ip", *narrow)
    before = packets_sent_on_the_cable(hosts)
    assert udp_burst(hosts, sizes, paused=a) == [[size, i, True] for i, size in enumerate(sizes)]
    assert packets_sent_on_the_cable(hosts) - before >= 2 * len(sizes)
    # The path is back. A moment later, the same burst leaves in one sendmsg() again.
    run(hosts, "a", "ip", "route", "delete", f"{UNDERLAY['b'][0]}/32")
    time.sleep(tinyvpn.RETRY_GLUED + 0.5)
    before = packets_sent_on_the_cable(hosts)
    assert udp_burst(hosts, sizes, paused=a) == [[size, i, True] for i, size in enumerate(sizes)]
    sent = packets_sent_on_the_cable(hosts) - before
    print(f"{len(sizes)} datagrams crossed the cable as {sent} packets")
    assert sent < len(sizes) // 2
