"""Two test hosts on one machine: network namespaces "a" and "b" joined by a veth cable.

Used by the tests, the demo and the benchmark. Everything it makes carries a prefix unique to
this run, uses only documentation addresses (RFC 5737, RFC 3849), and is removed on exit, also
when the code inside the `with` fails:

    with two_hosts() as hosts:
        start_tinyvpn(hosts, "a")                # tinyvpn inside namespace a, peer = b
        start_tinyvpn(hosts, "b")
        bring_up_tunnel(hosts)
        run(hosts, "a", "ping", "-c1", TUNNEL["b"][0])

    underlay (veth):  a 192.0.2.1     2001:db8:1::1  <---->  b 192.0.2.2     2001:db8:1::2
    tunnel (TUN):     a 198.51.100.1  2001:db8:2::1  <---->  b 198.51.100.2  2001:db8:2::2
"""

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

TINYVPN = Path(__file__).resolve().parent.parent / "tinyvpn.py"
UNDERLAY = {"a": ("192.0.2.1", "2001:db8:1::1"), "b": ("192.0.2.2", "2001:db8:1::2")}
TUNNEL = {"a": ("198.51.100.1", "2001:db8:2::1"), "b": ("198.51.100.2", "2001:db8:2::2")}
OTHER = {"a": "b", "b": "a"}
PORT = 5000
TUNNEL_MTU = 1400  # leaves room for the 28 (IPv4) or 48 (IPv6) bytes of outer headers on a 1500-byte link


@dataclass
class Hosts:
    prefix: str  # unique to this run, e.g. "tv3f9c2a"
    logs: Path  # a folder for the output of the processes started inside the namespaces
    processes: list = field(default_factory=list)

    def namespace(self, side: str) -> str:
        return f"{self.prefix}-{side}"

    @property
    def tun(self) -> str:  # the TUN interface's name, the same on both sides
        return f"{self.prefix}t"


def missing_tools(*tools: str) -> list:
    """The commands among `tools` that are not installed."""
    return [tool for tool in tools if shutil.which(tool) is None]


def sh(*command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command in the root namespace (only `ip` is run there), failing loudly."""
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)


def run(hosts: Hosts, side: str, *command: str, check: bool = True, timeout: float = 60,
        input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a command inside namespace `side` and wait for it."""
    return subprocess.run(["ip", "netns", "exec", hosts.namespace(side), *command], check=check,
                          capture_output=True, text=True, timeout=timeout, input=input)


def start(hosts: Hosts, side: str, *command: str, name: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start a command inside namespace `side`; its stdout and stderr go to files in hosts.logs.

    `ip netns exec` execs the command itself, so the process we get is the command: signals
    reach it directly. It is ended, by its PID, when the `with two_hosts()` block ends.
    """
    with open(hosts.logs / f"{name}.out", "wb") as stdout, open(hosts.logs / f"{name}.err", "wb") as stderr:
        process = subprocess.Popen(["ip", "netns", "exec", hosts.namespace(side), *command],
                                   stdin=stdin, stdout=stdout, stderr=stderr)
    hosts.processes.append(process)
    return process


def output(hosts: Hosts, name: str, stream: str = "err") -> str:
    """What the process started as `name` has written so far to its stdout ("out") or stderr ("err")."""
    return (hosts.logs / f"{name}.{stream}").read_text(errors="replace")


def start_tinyvpn(hosts: Hosts, side: str, *options: str, peer: Optional[str] = None,
                  interface: Optional[str] = None, program: Sequence[str] = (sys.executable, str(TINYVPN)),
                  stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start tinyvpn in namespace `side` and wait until it is ready, which is when its port is bound.

    By default PEER is the other side's IPv4 underlay address and INTERFACE is hosts.tun;
    `program` is the command that runs tinyvpn.py.
    """
    peer = peer or UNDERLAY[OTHER[side]][0]
    process = start(hosts, side, *program, *options, interface or hosts.tun, peer, str(PORT),
                    name=f"tinyvpn-{side}", stdin=stdin)
    # Binding the port is tinyvpn's last step before its loop (after creating the TUN).
    wait_for(lambda: process.poll() is not None or port_is_bound(hosts, side), f"tinyvpn in {side} to start")
    if process.poll() is not None:
        raise RuntimeError(f"tinyvpn in {side} exited: {output(hosts, f'tinyvpn-{side}')}")
    return process


def port_is_bound(hosts: Hosts, side: str, port: int = PORT) -> bool:
    """Whether a UDP socket in namespace `side` is bound to `port` (connected or not)."""
    return bool(run(hosts, side, "ss", "-Huan", f"sport = :{port}").stdout)


def is_listening(hosts: Hosts, side: str, port: int) -> bool:
    """Whether a TCP server in namespace `side` listens on `port`."""
    return bool(run(hosts, side, "ss", "-Htln", f"sport = :{port}").stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "(command name)"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def has_interface(hosts: Hosts, side: str, interface: str) -> bool:
    return run(hosts, side, "ip", "link", "show", "dev", interface, check=False).returncode == 0


def bring_up_tunnel(hosts: Hosts, mtu: int = TUNNEL_MTU) -> None:
    """What the README tells users to do on each host: set the TUN up and give it addresses."""
    for side in "ab":
        ipv4, ipv6 = TUNNEL[side]
        run(hosts, side, "ip", "link", "set", "dev", hosts.tun, "mtu", str(mtu), "up")
        run(hosts, side, "ip", "address", "add", f"{ipv4}/30", "dev", hosts.tun)
        run(hosts, side, "ip", "address", "add", f"{ipv6}/64", "dev", hosts.tun, "nodad")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll `condition` every 20 ms until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def stop(process: subprocess.Popen, timeout: float = 5) -> Optional[int]:
    """End one process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def two_hosts() -> Iterator[Hosts]:
    """Namespaces <prefix>-a and <prefix>-b, joined by a veth pair, with underlay addresses; removed on exit."""
    hosts = Hosts(prefix=f"tv{secrets.token_hex(3)}", logs=Path(tempfile.mkdtemp(prefix="tinyvpn-")))
    try:
        for side in "ab":
            sh("ip", "netns", "add", hosts.namespace(side))
            run(hosts, side, "ip", "link", "set", "dev", "lo", "up")
        # Both ends are created directly inside their namespaces: the root namespace never holds them.
        sh("ip", "link", "add", f"{hosts.prefix}v", "netns", hosts.namespace("a"), "type", "veth",
           "peer", "name", f"{hosts.prefix}v", "netns", hosts.namespace("b"))
        for side in "ab":
            ipv4, ipv6 = UNDERLAY[side]
            run(hosts, side, "ip", "link", "set", "dev", f"{hosts.prefix}v", "up")
            run(hosts, side, "ip", "address", "add", f"{ipv4}/24", "dev", f"{hosts.prefix}v")
            run(hosts, side, "ip", "address", "add", f"{ipv6}/64", "dev", f"{hosts.prefix}v", "nodad")
        yield hosts
    finally:
        for process in hosts.processes:
            stop(process)
        for side in "ab":
            subprocess.run(["ip", "netns", "delete", hosts.namespace(side)], capture_output=True)
        shutil.rmtree(hosts.logs, ignore_errors=True)


def is_root() -> bool:
    return os.geteuid() == 0
