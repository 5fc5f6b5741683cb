"""Captures open in the tools networking labs use: the pcap files tests/lab/wire.py, the demo
and the checker write are read by tshark (Wireshark's reader, which nobody here wrote), which
finds part one's datagrams (UDP carrying IP) and, with a key log, decrypts a WireGuard session
between the reference solution and wireguard-go down to the inner ping.

The tests that run tshark skip without it, except in CI (CI, or TINYVPN_REQUIRE_ROOT_TESTS=1),
where a missing tshark fails them; those that build namespaces need root (conftest.py).
"""

import json
import socket
import struct
import subprocess
import sys
from pathlib import Path

import harness
import netns
import part_two_protocol as checker
import wire
from conftest import INSIDE, Solved, skip_or_fail, tshark_read
from netns import PORT, TUNNEL, UNDERLAY
from recorder import Seen

CHECK = Path(__file__).resolve().parent / "ladder" / "check.py"


def datagram(inner: bytes) -> bytes:
    """An IPv4 UDP datagram from a to b, port PORT to PORT, carrying `inner`."""
    udp = struct.pack("!HHHH", PORT, PORT, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, wire.UDP, 0,
                     socket.inet_aton(UNDERLAY["a"][0]), socket.inet_aton(UNDERLAY["b"][0]))
    return wire.datagram(ip, udp, inner)


def test_a_pcap_file_holds_each_packet_as_it_was(tmp_path: Path) -> None:
    packet = datagram(wire.echo_request(TUNNEL["a"][0], TUNNEL["b"][0], 7, 1, b"x" * 20))
    wire.write_pcap(str(tmp_path / "one.pcap"), [(1700000000.25, packet)])
    data = (tmp_path / "one.pcap").read_bytes()
    magic, major, minor, _, _, snaplen, link = struct.unpack("=IHHiIII", data[:24])
    assert (magic, major, minor, link) == (0xA1B2C3D4, 2, 4, 101)  # LINKTYPE_RAW
    assert struct.unpack("=IIII", data[24:40]) == (1700000000, 250000, len(packet), len(packet))
    assert data[40:] == packet and len(packet) <= snaplen


def test_a_gso_train_is_cut_into_datagrams_whose_lengths_are_right() -> None:
    train = datagram(b"a" * 100 + b"b" * 100 + b"c" * 30)
    parts = wire.cut(train, 100)
    assert [part[28:] for part in parts] == [b"a" * 100, b"b" * 100, b"c" * 30]
    for part in parts:
        assert struct.unpack("!H", part[2:4])[0] == len(part)  # IP total length
        assert struct.unpack("!H", part[24:26])[0] == len(part) - 20  # UDP length
        assert wire.checksum(part[:20]) == 0  # the IP header checksum holds


def test_tshark_reads_part_ones_datagram_as_udp_carrying_ip(tshark: None,
                                                            tmp_path: Path) -> None:
    packet = datagram(wire.echo_request(TUNNEL["a"][0], TUNNEL["b"][0], 7, 1, b"x" * 20))
    wire.write_pcap(str(tmp_path / "one.pcap"), [(1700000000.25, packet)])
    assert tshark_read(tmp_path / "one.pcap", *INSIDE) == [
        f"{UNDERLAY['a'][0]},{TUNNEL['a'][0]}\t{UNDERLAY['b'][0]},{TUNNEL['b'][0]}\t{PORT}\t8"]


def test_the_checker_keeps_the_cable_of_a_failed_check(root: None, tshark: None,
                                                      tmp_path: Path) -> None:
    """The shipped file fails rung 1 at once (no --keepalive): its cable is kept all the same,
    and named, with the command that opens it."""
    run = subprocess.run([sys.executable, str(CHECK), "1", "--keep-cable",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    pcap = tmp_path / "rung-1-keep-alive.pcap"
    assert run.returncode == 1 and f"the cable:     {pcap}\n" in run.stdout, run.stdout
    assert f"(wireshark -d udp.port=={PORT},ip {pcap}; tcpdump -nr {pcap})" in run.stdout
    assert not list(tmp_path.glob("*.keylog"))  # part one has no keys to give
    tshark_read(pcap)  # tshark reads it, or raises


def test_the_checker_keeps_the_cable_of_a_failed_check_with_its_key_log(
        tshark: None, solved: Solved, tmp_path: Path) -> None:
    """Solution 9 has no transport yet: rung 10 fails at the check's first echo request,
    which the check sealed itself (its ephemeral key is in the key log): Wireshark shows it."""
    if checker.missing():
        skip_or_fail(f"needs {checker.missing()}")
    if not netns.is_root():
        skip_or_fail("needs root: it creates network namespaces and TUN interfaces")
    run = subprocess.run([sys.executable, str(CHECK), "10", "--only",
                          "--program", str(solved(9)), "--keep-cable", str(tmp_path / "cables")],
                         capture_output=True, text=True, timeout=60)
    kept = tmp_path / "cables" / "rung-10-transport"  # the folder made, as it did not exist
    pcap, keylog = Path(f"{kept}.pcap"), Path(f"{kept}.keylog")
    assert run.returncode == 1 and f"the cable:     {pcap}\n" in run.stdout, run.stdout
    assert f"wireshark -d udp.port=={PORT},wg -o wg.keylog_file:{keylog} {pcap}" in run.stdout
    shown = tshark_read(pcap, "-d", f"udp.port=={PORT},wg", "-o", f"wg.keylog_file:{keylog}",
                 "-Y", "icmp.type == 8", "-T", "fields", "-e", "wg.type", "-e", "ip.dst",
                 "-e", "icmp.ident")
    assert shown == [f"4\t{UNDERLAY['a'][0]},{TUNNEL['a'][0]}\t{checker.ECHO_ID}"]


def test_a_cable_is_kept_only_when_the_learner_asked(tmp_path: Path) -> None:
    harness.KEEP[:] = [tmp_path / "asked"]  # what --keep-cable does, for each check
    try:
        harness.keep_cable(list, lambda: "LOCAL_STATIC_PRIVATE_KEY = ...\n")  # a failed check
    finally:
        harness.KEEP.clear()
    harness.keep_cable(list, lambda: "LOCAL_STATIC_PRIVATE_KEY = ...\n")  # nobody asked: none
    assert sorted(path.name for path in tmp_path.iterdir()) == ["asked.keylog", "asked.pcap"]
    assert (tmp_path / "asked.pcap").read_bytes() == wire.pcap_header()


# ping -s: the ping's transport messages, 16 + 240 (IP 20, ICMP 8, data 200, padded to 16s)
# + 16 = 272 bytes, outsize the IPv6 chatter of an interface coming up (MLD reports, router
# solicitations: 160 bytes at most here), which the tunnel carries too.
PING_DATA = 200


def pings_recorded(hosts: netns.Hosts) -> list:
    """The WireGuard transport messages (type 4) as long as a ping's that "record" has printed
    so far."""
    lines = netns.output(hosts, "record", "out").splitlines()[1:]
    seen = [Seen(0, False, bytes.fromhex(json.loads(line)["hex"])) for line in lines
            if line.endswith("}")]  # not a line still being written
    return [s for s in seen if s.udp and s.udp[2][:1] == b"\x04"
            and len(s.udp[2]) >= 16 + 20 + 8 + PING_DATA + 16]


def test_tshark_decrypts_the_reference_solution_talking_to_wireguard_go(
        tshark: None, solved: Solved, hosts: netns.Hosts) -> None:
    """All twelve solutions applied, TINYVPN_KEYLOG set: a's tinyvpn initiates (wireguard-go
    knows no endpoint), and its key log alone lets Wireshark read the pings inside."""
    if checker.missing():
        skip_or_fail(f"needs {checker.missing()}")
    keys = checker.make_keys(hosts.logs)
    pcap, keylog = hosts.logs / "cable.pcap", hosts.logs / "tinyvpn.keylog"
    recorder = netns.start(hosts, "b", sys.executable, wire.SCRIPT, "record",
                           f"{hosts.prefix}v", str(pcap), name="record")
    netns.wait_for(lambda: "listening" in netns.output(hosts, "record", "out"), "the recorder")
    netns.start_wireguard_go(hosts, "b", keys.b_file, checker.b64(keys.a_public))
    netns.start_tinyvpn(hosts, "a", "--private-key", str(keys.a_file), "--peer-key",
                        checker.b64(keys.b_public),
                        program=("env", f"TINYVPN_KEYLOG={keylog}", sys.executable,
                                 str(solved(12))))
    for command in netns.tunnel_commands(hosts, "a"):
        netns.sh(*command)
    netns.wait_for(lambda: netns.run(hosts, "b", "wg", "show", hosts.tun, "latest-handshakes")
                   .stdout.split()[1:] != ["0"], "the handshake", 5)
    ping = netns.run(hosts, "a", "ping", "-c", "1", "-W", "3", "-s", str(PING_DATA),
                     TUNNEL["b"][0], check=False)
    assert "1 received" in ping.stdout, ping.stdout
    # A busy machine's recorder may lag; what it has not read when stopped is lost. So wait
    # for the ping's two transport messages (by their size: PING_DATA).
    netns.wait_for(lambda: len(pings_recorded(hosts)) >= 2, "the recorder to see the ping")
    netns.stop(recorder)
    assert oct(keylog.stat().st_mode & 0o777) == "0o600"  # every secret of the session
    shown = tshark_read(pcap, "-d", f"udp.port=={PORT},wg", "-o", f"wg.keylog_file:{keylog}", "-Y",
                 "icmp")
    print("\n".join(shown))  # for the record: what a learner sees
    assert len(shown) == 2, shown
    assert f"{TUNNEL['a'][0]} → {TUNNEL['b'][0]} ICMP" in shown[0] and "Echo (ping) request" \
        in shown[0]
    assert f"{TUNNEL['b'][0]} → {TUNNEL['a'][0]} ICMP" in shown[1] and "Echo (ping) reply" \
        in shown[1]
    types = tshark_read(pcap, "-d", f"udp.port=={PORT},wg", "-T", "fields", "-e", "wg.type",
                 "-Y", "wg")
    assert types[:2] == ["1", "2"]  # a's initiation, wireguard-go's response
