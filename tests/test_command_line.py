"""The command line, and the kernel numbers tinyvpn computes. None of these needs root.

Every bad input must end with one line on stderr naming the problem, a non-zero exit status,
and never a Python traceback.
"""

import errno
import re
import socket
import subprocess
import sys

import pytest
from netns import TINYVPN

import tinyvpn


def tinyvpn_exits(*arguments: str) -> subprocess.CompletedProcess:
    """Run tinyvpn (it must stop by itself) and return what it did."""
    return subprocess.run([sys.executable, str(TINYVPN), *arguments], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=10)


@pytest.mark.parametrize("arguments, message", [
    ([], "the following arguments are required"),
    (["stdio", "127.0.0.1"], "the following arguments are required: PORT"),
    (["stdio", "127.0.0.1", "5000", "extra"], "unrecognized arguments: extra"),
    (["-x", "stdio", "127.0.0.1", "5000"], "unrecognized arguments: -x"),
    (["stdio", "127.0.0.1", "0"], "'0' is not a port number from 1 to 65535"),
    (["stdio", "127.0.0.1", "65536"], "'65536' is not a port number from 1 to 65535"),
    (["stdio", "127.0.0.1", "http"], "'http' is not a port number"),
    (["a-name-of-16-chr", "127.0.0.1", "5000"], "must be 1 to 15 bytes long"),
    (["tun/0", "127.0.0.1", "5000"], "may not be '.' or '..', or contain '/'"),
    (["tun 0", "127.0.0.1", "5000"], "contain '/', ':' or spaces"),
])
def test_usage_errors_exit_2_with_a_message(arguments: list, message: str) -> None:
    result = tinyvpn_exits(*arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_port_in_use_is_reported_not_raised() -> None:
    taken = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    taken.bind(("::", 0))
    port = taken.getsockname()[1]
    with taken:
        result = tinyvpn_exits("stdio", "127.0.0.1", str(port))
    assert result.returncode == 1
    assert result.stderr == f"tinyvpn: UDP port {port} is already in use: " \
                            "stop the program using it or choose another PORT\n"


def test_help_shows_an_example_and_the_warning() -> None:
    result = tinyvpn_exits("--help")
    assert result.returncode == 0
    # A solved rung of the ladder (tests/ladder/) adds options, and argparse may wrap the line.
    usage = " ".join(result.stdout.split())
    # Part two adds two options that exclude each other: [--key FILE | --private-key FILE].
    option = r"--[a-z-]+ [A-Z]+"
    assert re.search(rf"usage: tinyvpn \[-h\] \[-d\] (\[{option}( \| {option})*\] )*"
                     r"\[--version\] INTERFACE PEER PORT", usage), result.stdout
    assert "tinyvpn -d testvpn hostB 5000" in result.stdout
    assert "no encryption and no authentication" in result.stdout


def test_version() -> None:
    result = tinyvpn_exits("--version")
    assert (result.returncode, result.stdout) == (0, f"tinyvpn {tinyvpn.__version__}\n")


def test_tunsetiff_is_the_kernels_number() -> None:
    # _IOW('T', 202, int): write flag 0x40000000 | sizeof(int)=4 << 16 | 'T'=0x54 << 8 | 202=0xca.
    assert tinyvpn.ioctl_write_request("T", 202, 4) == 0x400454CA
    assert tinyvpn.TUNSETIFF == 0x400454CA  # on x86 and ARM, where these tests run


def test_ifreq_is_name_then_flags_in_40_bytes() -> None:
    ifreq = tinyvpn.make_ifreq("tun0")
    assert len(ifreq) == 40
    assert ifreq[:16] == b"tun0" + bytes(12)  # the name, NUL-padded to IFNAMSIZ
    # IFF_TUN | IFF_NO_PI, in the machine's own byte order
    assert ifreq[16:18] == (0x0001 | 0x1000).to_bytes(2, sys.byteorder)
    assert ifreq[18:] == bytes(22)


@pytest.mark.parametrize("peer, family, expected", [
    # An IPv4 peer on the dual-stack socket:
    ("192.0.2.7", socket.AF_INET6, ("::ffff:192.0.2.7", 5000, 0, 0)),
    ("192.0.2.7", socket.AF_INET, ("192.0.2.7", 5000)),  # IPv4 peer on an IPv4-only host
    ("2001:db8::7", socket.AF_INET6, ("2001:db8::7", 5000, 0, 0)),
    ("localhost", socket.AF_INET, ("127.0.0.1", 5000)),  # a name (from /etc/hosts: no DNS query)
])
def test_peer_resolution(peer: str, family: int, expected: tuple) -> None:
    assert tinyvpn.resolve_peer(peer, 5000, family) == expected



def test_without_ipv6_in_the_kernel_it_falls_back_to_an_ipv4_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_socket = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *rest: object) -> socket.socket:
        if family == socket.AF_INET6:  # what a kernel booted with ipv6.disable=1 answers
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *rest)

    monkeypatch.setattr(socket, "socket", no_ipv6)
    with tinyvpn.open_udp_socket(0) as sock:
        assert (sock.family, sock.getsockname()[0]) == (socket.AF_INET, "0.0.0.0")
        assert tinyvpn.resolve_peer("192.0.2.7", 5000, sock.family) == ("192.0.2.7", 5000)
