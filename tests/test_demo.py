"""The README's first command: the one-machine demo must work, show what it promises (every
packet, one datagram on the wire byte by byte, a packet injected by a stranger), and leave
nothing behind: no namespace, no process."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INSIDE, tshark_read

DEMO = Path(__file__).resolve().parent / "lab" / "demo.py"


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def processes_in(prefix: str) -> list:
    """Command lines of running processes that mention `prefix` (the demo's namespaces)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if prefix.encode() in cmdline.read_bytes():
                found.append(cmdline.read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # the process has just ended
            pass
    return found


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the demo writes its capture: a file of this run's (--pcap), not the default one."""
    return tmp_path_factory.mktemp("demo") / "cable.pcap"


@pytest.fixture(scope="module")
def demo(pcap: Path) -> subprocess.CompletedProcess:
    """One run of the demo, which the tests below read. (Without root it stops at once, and
    the `root` fixture skips the tests.)"""
    return subprocess.run([sys.executable, str(DEMO), "--pcap", str(pcap)], capture_output=True,
                          text=True, timeout=90)


def test_the_demo_pings_through_the_tunnel_and_cleans_up(
        root: None, demo: subprocess.CompletedProcess) -> None:
    out = demo.stdout
    assert demo.returncode == 0, out + demo.stderr
    assert "3 packets transmitted, 3 received" in out
    assert re.search(r"\[b\] net->tun +84 B  IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request",
                     out)
    assert re.search(r"\[a\] net->tun +84 B  IPv4 198.51.100.2 -> 198.51.100.1  ICMP echo-reply",
                     out)
    # The printed commands are the ones that ran, IPv6 address and nodad included.
    assert re.search(r"ip netns exec tv\w+-b ip address add 2001:db8:2::2/64 dev tv\w+t nodad",
                     out)
    prefix = re.search(r"namespaces (tv\w+)-a", out).group(1)
    assert prefix not in namespaces()
    assert processes_in(prefix) == []


def test_the_demo_shows_a_datagram_on_the_wire_byte_by_byte(
        root: None, demo: subprocess.CompletedProcess) -> None:
    out = demo.stdout
    # 192.0.2.1 -> 192.0.2.2 is c0 00 02 01 c0 00 02 02; 5000 is 0x1388; 84 + 8 = 92 is 0x5c.
    assert "protocol 17 (UDP), 192.0.2.1 -> 192.0.2.2" in out
    assert re.search(r"^ +45 00 00 70 (\w\w ){8}c0 00 02 01 c0 00 02 02$", out, re.M)
    assert re.search(r"^ +13 88 13 88 00 5c \w\w \w\w$", out, re.M)
    assert "port 5000 -> 5000, length 92 (8 + 84)" in out
    # The inner header: 198.51.100.1 -> 198.51.100.2 is c6 33 64 01 c6 33 64 02.
    assert re.search(r"^ +45 00 00 54 (\w\w ){8}c6 33 64 01 c6 33 64 02$", out, re.M)
    assert "-d decoded those inner bytes as: IPv4 198.51.100.1 -> 198.51.100.2  " \
           "ICMP echo-request" in out


def test_the_demo_shows_mallory_inject_a_packet(root: None,
                                               demo: subprocess.CompletedProcess) -> None:
    out = demo.stdout
    # b's tinyvpn accepts it from 192.0.2.3, and b's answer reaches a through the tunnel.
    assert re.search(r"\[b\] net->tun +56 B  IPv4 198.51.100.1 -> 198.51.100.2  "
                     r"ICMP echo-request id=28013 seq=1   \(from 192.0.2.3:\d+\)", out)
    assert re.search(r"\[a\] net->tun +56 B  IPv4 198.51.100.2 -> 198.51.100.1  "
                     r"ICMP echo-reply id=28013 seq=1   \(from 192.0.2.2:5000\)", out)
    assert "cryptokey routing" in out


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_the_kept_demo_stops_on_ctrl_c_or_sigterm_and_cleans_up(root: None, how: int) -> None:
    demo = subprocess.Popen([sys.executable, str(DEMO), "--keep"], stdout=subprocess.PIPE,
                            text=True)
    try:
        seen = ""
        while "stays up until Ctrl-C" not in seen:
            line = demo.stdout.readline()
            assert line, f"the demo ended early: {seen}"
            seen += line
        prefix = re.search(r"namespaces (tv\w+)-a", seen).group(1)
        assert prefix in namespaces()
        demo.send_signal(how)
        seen += demo.communicate(timeout=30)[0]
    finally:
        if demo.poll() is None:  # an assertion failed: SIGTERM lets the demo clean up
            demo.terminate()
            demo.wait(30)
    assert demo.returncode == 0
    assert "nothing is left behind" in seen
    assert prefix not in namespaces()
    assert processes_in(prefix) == []


def test_the_demo_behind_a_nat_pings_through_it_and_cleans_up(root: None) -> None:
    demo = subprocess.run([sys.executable, str(DEMO), "--nat"], capture_output=True, text=True,
                          timeout=90)
    out = demo.stdout
    assert demo.returncode == 0, out + demo.stderr
    prefix = re.search(r"namespaces (tv\w+)-a", out).group(1)
    assert f"a sits behind a NAT: namespace {prefix}-n" in out
    assert "3 packets transmitted, 3 received" in out
    # On the cable, a's datagrams come from the NAT's outer address, from port 5000 still.
    assert "protocol 17 (UDP), 192.0.2.1 -> 192.0.2.2" in out
    assert "port 5000 -> 5000, length 92 (8 + 84)" in out
    assert prefix not in namespaces()
    assert processes_in(prefix) == []


def test_the_demos_capture_opens_in_tshark(root: None, tshark: None, pcap: Path,
                                           demo: subprocess.CompletedProcess) -> None:
    """The capture it names at the end holds the pings as they crossed: UDP carrying IP."""
    assert f"is in {pcap} (pcap). Open it with\n   wireshark -d udp.port==5000,ip {pcap}" \
        in demo.stdout
    assert f"tcpdump -nr {pcap}" in demo.stdout
    echoes = [line for line in tshark_read(pcap, *INSIDE) if line.endswith(("\t8", "\t0"))]
    assert echoes[:2] == ["192.0.2.1,198.51.100.1\t192.0.2.2,198.51.100.2\t5000\t8",
                          "192.0.2.2,198.51.100.2\t192.0.2.1,198.51.100.1\t5000\t0"]
    assert len(echoes) == 7  # three pings, each answered, and b's answer to mallory's forgery
