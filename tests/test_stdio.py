"""stdio mode: tinyvpn as netcat in UDP mode. stdin goes to the peer; datagrams come out on stdout.

Both ends bind the same PORT, so two instances cannot share one network stack. The tests that
need no root therefore point one instance at itself (PEER = its own loopback address): what it
sends, it receives. The two-instance tests run each end in its own network namespace.
"""

import fcntl
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from netns import TINYVPN, UNDERLAY


def free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::", 0))
        return int(probe.getsockname()[1])


STARTED: list = []  # every tinyvpn these tests start; the fixture below ends them, even on failure


@pytest.fixture(autouse=True)
def stop_what_we_started() -> Iterator[None]:
    yield
    while STARTED:
        netns.stop(STARTED.pop())


def start_looped(port: int, stdin: object, peer: str = "127.0.0.1") -> subprocess.Popen:
    """tinyvpn -d in stdio mode, sending to itself; waits until its port is bound."""
    process = subprocess.Popen([sys.executable, str(TINYVPN), "-d", "stdio", peer, str(port)],
                               stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    STARTED.append(process)
    netns.wait_for(lambda: netns.udp_port_bound(process.pid, port) or process.poll() is not None,
                   "tinyvpn to bind its port")
    return process


def read_exactly(stream: object, size: int, timeout: float = 5) -> bytes:
    """Read `size` bytes from a pipe, or fail after `timeout` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        if not select.select([stream], [], [], max(0, deadline - time.monotonic()))[0]:
            raise TimeoutError(f"got {len(data)} of {size} bytes")
        chunk = os.read(stream.fileno(), size - len(data))  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError(f"got {len(data)} of {size} bytes")
        data += chunk
    return data


def stderr_until(process: subprocess.Popen, text: str, timeout: float = 5) -> str:
    """What tinyvpn wrote to stderr, read until `text` appears. tinyvpn writes a packet out first
    and prints its -d line just after: wait for the line before interrupting."""
    seen = b""
    while text.encode() not in seen:
        assert select.select([process.stderr], [], [], timeout)[0], f"no {text!r} in {seen!r}"
        seen += os.read(process.stderr.fileno(), 4096)  # type: ignore[union-attr]
    return seen.decode()


def interrupt(process: subprocess.Popen, how: int = signal.SIGINT, err_so_far: str = "") -> tuple:
    """Stop tinyvpn as a user would; return (exit status, stdout, all of stderr)."""
    process.send_signal(how)
    out, err = process.communicate(timeout=5)
    return process.returncode, out, err_so_far + err.decode()


@pytest.mark.parametrize("loopback", ["127.0.0.1", "::1"])
def test_stdin_crosses_a_real_socket_and_comes_out_on_stdout(loopback: str) -> None:
    process = start_looped(free_port(), subprocess.PIPE, loopback)
    process.stdin.write(b"hello, tunnel\n")
    process.stdin.flush()
    assert read_exactly(process.stdout, 14) == b"hello, tunnel\n"
    status, _, err = interrupt(process, err_so_far=stderr_until(process, "net->stdout"))
    assert status == 0
    assert "stdin->net     14 B" in err
    assert f"net->stdout     14 B   (from {loopback.replace('::1', '[::1]')}:" in err


def test_a_60000_byte_chunk_is_one_datagram_and_stdout_holds_only_payload(tmp_path: Path) -> None:
    payload = os.urandom(60000)
    (tmp_path / "chunk").write_bytes(payload)  # a file: one read() gets all 60000 bytes at once
    with open(tmp_path / "chunk", "rb") as stdin:
        process = start_looped(free_port(), stdin)
        received = read_exactly(process.stdout, 60000)
    status, rest, err = interrupt(process, err_so_far=stderr_until(process, "net->stdout"))
    assert received + rest == payload  # -d wrote nothing to stdout: only the payload is there
    assert status == 0
    # One datagram each way, whole:
    assert "stdin->net  60000 B" in err and "net->stdout  60000 B" in err
    assert "sent 1 packets (60000 B), received 1 packets (60000 B), dropped: none" in err


def test_after_stdin_ends_it_sends_nothing_uses_no_cpu_and_still_receives_from_anyone() -> None:
    port = free_port()
    process = start_looped(port, subprocess.DEVNULL)  # stdin is at end of file from the start
    time.sleep(0.2)
    busy_before = netns.cpu_seconds(process.pid)
    time.sleep(1.0)
    # Idle, it should use nothing; a busy loop would burn the whole second. The margin allows
    # for CPU time counted in 10 ms ticks on a machine busy with other things.
    assert netns.cpu_seconds(process.pid) - busy_before < 0.2

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:  # any address, any port
        stranger.sendto(b"from a stranger", ("127.0.0.1", port))
        assert read_exactly(process.stdout, 15) == b"from a stranger"
        stranger_port = stranger.getsockname()[1]
    status, _, err = interrupt(process, signal.SIGTERM, stderr_until(process, "net->stdout"))
    assert status == 0
    assert "stdin->net" not in err  # no empty datagram was sent at end of file
    assert f"(from 127.0.0.1:{stranger_port})" in err
    assert "sent 0 packets (0 B), received 1 packets (15 B)" in err


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_exit_0_without_traceback(how: int) -> None:
    process = start_looped(free_port(), subprocess.PIPE)
    status, out, err = interrupt(process, how)
    assert (status, out) == (0, b"")
    assert "Traceback" not in err
    assert err.startswith("tinyvpn: sent 0 packets")


def test_on_a_terminal_it_leaves_the_terminal_blocking() -> None:
    # On a tty, stdin and stdout are one open file: a non-blocking flag set on either would
    # outlive tinyvpn and break the shell that started it.
    controller, terminal = pty.openpty()
    port = free_port()
    process = subprocess.Popen([sys.executable, str(TINYVPN), "stdio", "127.0.0.1", str(port)],
                               stdin=terminal, stdout=terminal, stderr=subprocess.PIPE)
    STARTED.append(process)
    try:
        netns.wait_for(lambda: netns.udp_port_bound(process.pid, port), "tinyvpn to bind its port")
        os.write(controller, b"typed line\n")
        echoed = b""
        # The terminal's echo of what was typed, then tinyvpn's output:
        while b"typed line\r\ntyped line\r\n" not in echoed:
            assert select.select([controller], [], [], 5)[0], f"saw only {echoed!r}"
            echoed += os.read(controller, 100)
        process.send_signal(signal.SIGINT)
        assert process.wait(5) == 0
        assert not fcntl.fcntl(terminal, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        os.close(controller)
        os.close(terminal)


@pytest.mark.parametrize("family", [0, 1], ids=["IPv4 underlay", "IPv6 underlay"])
def test_two_instances_in_two_namespaces_talk_both_ways(hosts: netns.Hosts, family: int) -> None:
    a = netns.start_tinyvpn(hosts, "a", interface="stdio", peer=UNDERLAY["b"][family],
                            stdin=subprocess.PIPE)
    b = netns.start_tinyvpn(hosts, "b", interface="stdio", peer=UNDERLAY["a"][family],
                            stdin=subprocess.PIPE)
    a.stdin.write(b"hello from a\n")
    a.stdin.flush()
    b.stdin.write(b"hello from b\n")
    b.stdin.flush()
    netns.wait_for(lambda: netns.output(hosts, "tinyvpn-b", "out") == "hello from a\n",
                   "a's line at b")
    netns.wait_for(lambda: netns.output(hosts, "tinyvpn-a", "out") == "hello from b\n",
                   "b's line at a")


@pytest.mark.parametrize("closed, name", [("<&-", "stdin"), (">&-", "stdout")])
def test_stdin_or_stdout_closed_at_start_is_one_line_not_a_traceback(closed: str,
                                                                     name: str) -> None:
    result = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", sys.executable,
                             str(TINYVPN), "stdio", "127.0.0.1", str(free_port())],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert result.stderr == f"tinyvpn: stdio mode needs {name}, but it is closed\n"


def test_a_log_whose_reader_left_stops_and_the_tunnel_goes_on() -> None:
    # Like `tinyvpn -d ... 2>&1 | head -n 2`: the reader of stderr goes away, and each -d
    # line after that would raise BrokenPipeError.
    process = start_looped(free_port(), subprocess.PIPE)
    process.stderr.close()  # type: ignore[union-attr]
    for line in (b"first\n", b"second\n", b"third\n"):
        process.stdin.write(line)  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        assert read_exactly(process.stdout, len(line)) == line
    process.send_signal(signal.SIGTERM)
    assert process.wait(5) == 0


def test_sigterm_ends_it_at_once_even_when_nobody_reads_its_log() -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(TINYVPN), "-d", "stdio", "127.0.0.1",
                                str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    STARTED.append(process)
    netns.wait_for(lambda: netns.udp_port_bound(process.pid, port), "tinyvpn to bind its port")
    # Datagrams from a stranger: one -d line each, until the stderr pipe is full and the
    # next line blocks tinyvpn.
    full = fcntl.fcntl(process.stderr, 1032)  # F_GETPIPE_SZ: the pipe's size in bytes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for _ in range(full // 40):  # each line is longer than 40 bytes
            stranger.sendto(b"x", ("127.0.0.1", port))
    netns.wait_for(lambda: pipe_is_full(process.stderr, full), "the stderr pipe to fill")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(5) == 0
    print(f"SIGTERM ended tinyvpn in {time.monotonic() - started:.2f} s")


def waiting_in(pipe: object) -> int:
    """How many bytes wait in `pipe` (FIONREAD)."""
    return int.from_bytes(fcntl.ioctl(pipe, termios.FIONREAD, bytes(4)), sys.byteorder)


def pipe_is_full(pipe: object, size: int) -> bool:
    """Whether the writer of `pipe` is blocked: nearly `size` bytes wait (a line never spans
    two of its 4 KiB pages, so each may keep a line's room free), and no more arrive."""
    before = waiting_in(pipe)
    time.sleep(0.1)
    return before > size - size // 4096 * 100 and waiting_in(pipe) == before
