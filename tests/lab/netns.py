"""Test hosts on one machine: network namespaces "a" and "b" joined by a veth cable.

Used by the tests, the demo, the ladder's checks and the benchmarks. Everything it makes
carries a prefix unique to this run, uses only documentation addresses (RFC 5737, RFC 3849),
and is removed on exit, also when the code inside the `with` fails:

    with two_hosts() as hosts:
        start_tinyvpn(hosts, "a")                # tinyvpn inside namespace a, peer = b
        start_tinyvpn(hosts, "b")
        bring_up_tunnel(hosts)
        run(hosts, "a", "ping", "-c1", TUNNEL["b"][0])

    underlay (veth):  a 192.0.2.1     2001:db8:1::1  <---->  b 192.0.2.2     2001:db8:1::2
    tunnel (TUN):     a 198.51.100.1  2001:db8:2::1  <---->  b 198.51.100.2  2001:db8:2::2
    the demo's third host, add_mallory():             m 192.0.2.3 ----> b
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
from typing import Any, Callable, Optional

# The tinyvpn.py under test: the checkout's, or another (a solved exercise) named by
# TINYVPN_PROGRAM, to run the tunnel tests on it.
TINYVPN = Path(os.environ.get("TINYVPN_PROGRAM")
               or Path(__file__).resolve().parents[2] / "tinyvpn.py").resolve()
UNDERLAY = {"a": ("192.0.2.1", "2001:db8:1::1"), "b": ("192.0.2.2", "2001:db8:1::2")}
TUNNEL = {"a": ("198.51.100.1", "2001:db8:2::1"), "b": ("198.51.100.2", "2001:db8:2::2")}
OTHER = {"a": "b", "b": "a"}
MALLORY = "192.0.2.3"  # the demo's third host, on b's side of the underlay: no tunnel end
PORT = 5000
# Leaves room for the 28 (IPv4) or 48 (IPv6) bytes of outer headers on a 1500-byte link.
TUNNEL_MTU = 1400
# How every name two_hosts() makes begins. The grader (tests/ladder/classroom.py) gives each
# learner's checks a start of their own, to find and remove what they leave if it must kill them.
PREFIX = os.environ.get("TINYVPN_NETNS_PREFIX", "tv")


@dataclass
class Hosts:
    prefix: str  # unique to this run, e.g. "tv3f9c2a"
    logs: Path  # a folder for the output of the processes started inside the namespaces
    processes: list = field(default_factory=list)
    sides: list = field(default_factory=list)  # the namespaces made so far: "a", "b", maybe "m"

    def namespace(self, side: str) -> str:
        return f"{self.prefix}-{side}"

    @property
    def tun(self) -> str:  # the TUN interface's name, the same on both sides
        return f"{self.prefix}t"


def missing_tools(*tools: str) -> list:
    """The commands among `tools` that are not installed."""
    return [tool for tool in tools if shutil.which(tool) is None]


def sh(*command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command and wait for it, failing loudly. In the root namespace only `ip` is run."""
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)


def run(hosts: Hosts, side: str, *command: str, check: bool = True, timeout: float = 60,
        input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a command inside namespace `side` and wait for it."""
    return subprocess.run([*in_namespace(hosts, side), *command], check=check,
                          capture_output=True, text=True, timeout=timeout, input=input)


def in_namespace(hosts: Hosts, side: str) -> list:
    """The prefix that runs a command inside namespace `side`."""
    return ["ip", "netns", "exec", hosts.namespace(side)]


def start(hosts: Hosts, side: str, *command: str, name: str,
          stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start a command inside namespace `side`; see start_command."""
    return start_command(hosts, [*in_namespace(hosts, side), *command], name=name, stdin=stdin)


def start_command(hosts: Hosts, command: Sequence[str], name: str,
                  stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start `command`; its stdout and stderr go to files in hosts.logs, named after `name`.

    `ip netns exec` execs the command itself, so the process we get is the command: signals
    reach it directly. It is ended, by its PID, when the `with two_hosts()` block ends.
    """
    with open(hosts.logs / f"{name}.out", "wb") as stdout, \
            open(hosts.logs / f"{name}.err", "wb") as stderr:
        process = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr)
    hosts.processes.append(process)
    return process


def output(hosts: Hosts, name: str, stream: str = "err") -> str:
    """What the process started as `name` has written so far to stdout ("out") or stderr."""
    return (hosts.logs / f"{name}.{stream}").read_text(errors="replace")


def tinyvpn_command(hosts: Hosts, side: str, *options: str, peer: Optional[str] = None,
                    interface: Optional[str] = None,
                    program: Sequence[str] = (sys.executable, str(TINYVPN))) -> list:
    """The command line that runs tinyvpn in namespace `side`, exactly as start_tinyvpn runs it.

    By default PEER is the other side's IPv4 underlay address and INTERFACE is hosts.tun;
    `program` is the command that runs tinyvpn.py.
    """
    peer = peer or UNDERLAY[OTHER[side]][0]
    return [*in_namespace(hosts, side), *program, *options, interface or hosts.tun, peer,
            str(PORT)]


def start_tinyvpn(hosts: Hosts, side: str, *options: str, stdin: int = subprocess.DEVNULL,
                  **where: Any) -> subprocess.Popen:
    """Start tinyvpn_command(...) and wait until it is ready, which is when its port is bound."""
    command = tinyvpn_command(hosts, side, *options, **where)
    return start_bound(hosts, command, name=f"tinyvpn-{side}", stdin=stdin)


def start_bound(hosts: Hosts, command: Sequence[str], name: str,
                stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
    """Start a command that binds UDP port PORT, and wait until it has (or has exited)."""
    process = start_command(hosts, command, name=name, stdin=stdin)
    # Binding the port is tinyvpn's last step before its loop (after creating the TUN).
    wait_for(lambda: process.poll() is not None or udp_port_bound(process.pid, PORT),
             f"{name} to bind UDP port {PORT}")
    if process.poll() is not None:
        raise RuntimeError(f"{name} exited: {output(hosts, name)}")
    return process


def start_socat(hosts: Hosts, side: str) -> subprocess.Popen:
    """socat's TUN-over-UDP in namespace `side`: a tunnel end nobody here wrote, on our wire.

    Its UDP socket is connected to the peer: an ICMP "port unreachable" (a datagram sent before
    the peer was bound) makes socat exit. Its TUN is created down and without addresses, so it
    sends nothing until bring_up_tunnel(), after the other side is bound.
    """
    me, peer = UNDERLAY[side][0], UNDERLAY[OTHER[side]][0]
    return start_bound(hosts, [*in_namespace(hosts, side), "socat",
                               f"UDP:{peer}:{PORT},bind={me}:{PORT}",
                               f"TUN,tun-name={hosts.tun},tun-type=tun,iff-no-pi"],
                       name=f"socat-{side}")


def udp_port_bound(pid: int, port: int) -> bool:
    """Whether process `pid` holds a UDP socket bound to `port`. Read from /proc, without
    binding a probe socket (a probe could hold the port at the instant tinyvpn binds it)."""
    try:
        sockets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        # /proc/PID/net/ shows the network namespace the process is in.
        tables = [Path(f"/proc/{pid}/net/{name}").read_text() for name in ("udp", "udp6")]
    except (FileNotFoundError, ProcessLookupError):  # it has just exited
        return False
    except PermissionError:  # as root of a user namespace, for a moment after it starts
        return False
    for table in tables:
        for line in table.splitlines()[1:]:  # "sl local_address:port rem_address ... inode"
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and \
                    f"socket:[{fields[9]}]" in sockets:
                return True
    return False


def is_listening(hosts: Hosts, side: str, port: int) -> bool:
    """Whether a TCP server in namespace `side` listens on `port`."""
    return bool(run(hosts, side, "ss", "-Htln", f"sport = :{port}").stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far: /proc/PID/stat fields 14 and 15."""
    # The fields after "(command name)", which may itself hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_datagrams(pid: int) -> tuple:
    """(datagrams read, datagrams sent) over UDP, IPv4 and IPv6, in the network namespace of
    process `pid` (/proc/PID/net/snmp and snmp6: the kernel's counters, read without delay)."""
    header, values = [line.split()[1:] for line in Path(f"/proc/{pid}/net/snmp").read_text()
                      .splitlines() if line.startswith("Udp:")]
    ipv4 = dict(zip(header, map(int, values)))
    ipv6 = dict(line.split() for line in Path(f"/proc/{pid}/net/snmp6").read_text().splitlines()
                if line.startswith("Udp6"))
    return (ipv4["InDatagrams"] + int(ipv6["Udp6InDatagrams"]),
            ipv4["OutDatagrams"] + int(ipv6["Udp6OutDatagrams"]))


def has_interface(hosts: Hosts, side: str, interface: str) -> bool:
    return run(hosts, side, "ip", "link", "show", "dev", interface,
                check=False).returncode == 0


def tunnel_commands(hosts: Hosts, side: str, mtu: int = TUNNEL_MTU) -> list:
    """What the README tells users to do on each host: set the TUN up, give it addresses."""
    ipv4, ipv6 = TUNNEL[side]
    return [[*in_namespace(hosts, side), *command] for command in (
        ["ip", "link", "set", "dev", hosts.tun, "mtu", str(mtu), "up"],
        ["ip", "address", "add", f"{ipv4}/30", "dev", hosts.tun],
        # nodad: use the address at once, without first checking that nobody else has it
        ["ip", "address", "add", f"{ipv6}/64", "dev", hosts.tun, "nodad"])]


def bring_up_tunnel(hosts: Hosts, mtu: int = TUNNEL_MTU) -> None:
    """Run tunnel_commands() on both sides."""
    for side in "ab":
        for command in tunnel_commands(hosts, side, mtu):
            sh(*command)


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
    """Namespaces <prefix>-a and <prefix>-b joined by a veth cable; all removed on exit."""
    hosts = Hosts(prefix=f"{PREFIX}{secrets.token_hex(3)}",
                  logs=Path(tempfile.mkdtemp(prefix="tinyvpn-")))
    try:
        add_host(hosts, "a")
        add_host(hosts, "b")
        cable(hosts, "a", "b", "v")
        for side in "ab":
            add_address(hosts, side, f"{hosts.prefix}v", UNDERLAY[side])
        yield hosts
    finally:
        for process in hosts.processes:
            stop(process)
        for side in hosts.sides:
            subprocess.run(["ip", "netns", "delete", hosts.namespace(side)], capture_output=True)
        shutil.rmtree(hosts.logs, ignore_errors=True)


def add_mallory(hosts: Hosts) -> None:
    """A third host, "m", at MALLORY: a second cable into b, as if on the same switch.

    Mallory is no tunnel end; it knows b's underlay address and port, nothing more.
    """
    add_host(hosts, "m")
    cable(hosts, "m", "b", "m")
    add_address(hosts, "m", f"{hosts.prefix}m", (MALLORY,))
    # b answers on that cable for its own address (Linux answers ARP on any interface).
    sh(*in_namespace(hosts, "b"), "ip", "route", "add", f"{MALLORY}/32", "dev", f"{hosts.prefix}m")


def add_host(hosts: Hosts, side: str) -> None:
    sh("ip", "netns", "add", hosts.namespace(side))
    hosts.sides.append(side)  # removed at the end of two_hosts(), whatever happens
    sh(*in_namespace(hosts, side), "ip", "link", "set", "dev", "lo", "up")


def cable(hosts: Hosts, one: str, other: str, suffix: str) -> None:
    """A veth pair named <prefix><suffix> at both ends, each end created in its namespace
    directly (the root namespace never holds them), and both up."""
    name = f"{hosts.prefix}{suffix}"
    sh("ip", "link", "add", name, "netns", hosts.namespace(one), "type", "veth",
       "peer", "name", name, "netns", hosts.namespace(other))
    for side in (one, other):
        sh(*in_namespace(hosts, side), "ip", "link", "set", "dev", name, "up")


def add_address(hosts: Hosts, side: str, interface: str, addresses: Sequence[str]) -> None:
    for address in addresses:
        length = "64" if ":" in address else "24"
        sh(*in_namespace(hosts, side), "ip", "address", "add", f"{address}/{length}",
           "dev", interface, *(["nodad"] if ":" in address else []))


def is_root() -> bool:
    return os.geteuid() == 0


# --- Without root: a user namespace of our own --------------------------------------------
# An ordinary user may make a user namespace and be root inside it, with network and mount
# namespaces it owns: there it can create TUNs, veth pairs and named network namespaces, none
# of which the machine's own network ever sees. Its own tmpfs on /run gives `ip netns add`
# a /run/netns to write and wireguard-go a /var/run/wireguard (-> /run), and hides the
# machine's. Everything inside goes away with the last process, even after a crash.
USER_NAMESPACE = ["unshare", "--user", "--map-root-user", "--net", "--mount"]
OWN_RUN = "mount -t tmpfs -o mode=0755 tinyvpn /run && exec \"$@\""
# (kernel setting, the value that forbids it, why, what to do), checked when unshare fails.
REFUSALS = [
    ("kernel.apparmor_restrict_unprivileged_userns", "1",
     "AppArmor forbids user namespaces to ordinary users (Ubuntu 23.10 and later)",
     "sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0"),
    ("user.max_user_namespaces", "0", "this kernel allows no user namespaces",
     "sudo sysctl user.max_user_namespaces=10000"),
    ("kernel.unprivileged_userns_clone", "0",
     "this kernel forbids user namespaces to ordinary users",
     "sudo sysctl kernel.unprivileged_userns_clone=1"),
]


def in_user_namespace() -> bool:
    """Whether this process runs in a user namespace of its own (the machine's maps all ids)."""
    return Path("/proc/self/uid_map").read_text().split() != ["0", "0", "4294967295"]


def become_root(who: str) -> None:
    """Return as root. As an ordinary user, re-run this script as root of a user namespace of
    its own (see USER_NAMESPACE): the same command line, the same process (exec). Where the
    kernel allows no such namespace, exit with one line saying what to do instead."""
    if is_root():
        return
    refusal = why_no_user_namespace()
    if refusal:
        sys.exit(f"{who}: not root, and {refusal}")
    os.execvp("unshare", [*USER_NAMESPACE, "sh", "-c", OWN_RUN, "sh", sys.executable,
                          *sys.argv])


def why_no_user_namespace() -> Optional[str]:
    """None if this user can run as root of a user namespace of its own; else why not and what
    to do instead, in words."""
    instead = "run it with sudo"
    if missing_tools("unshare"):
        return f"unshare is missing: apt-get install util-linux, or {instead}"
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return (f"/dev/net/tun is not open to every user (ls -l /dev/net/tun; it needs mode "
                f"0666): {instead}")
    probe = subprocess.run([*USER_NAMESPACE, "sh", "-c", OWN_RUN, "sh", "true"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        return None
    for setting, forbidden, why, allow in REFUSALS:
        path = Path("/proc/sys", *setting.split("."))
        if path.exists() and path.read_text().strip() == forbidden:
            return f"{why} ({setting} = {forbidden}): {instead}, or allow them: {allow}"
    said = probe.stderr.strip().splitlines()[-1:] or ["nothing"]
    return f"cannot make a user namespace of its own ({said[0]}): {instead}"


def from_another_terminal() -> list:
    """The prefix that runs a command, from another terminal, where our namespaces are: as an
    ordinary user, inside this process's user and mount namespaces."""
    if not in_user_namespace():
        return []
    return ["nsenter", "--target", str(os.getpid()), "--user", "--mount",
            "--preserve-credentials"]


# a's home network, behind its NAT (add_nat): the router's inside address, and a's.
NAT_INSIDE = {"n": "203.0.113.254", "a": "203.0.113.1"}


def add_nat(hosts: Hosts, forget_after: int = 3, random_ports: bool = False) -> None:
    """Put a behind a NAT, host "n": a home router between a and the cable.

    a's end of the cable moves into n, which keeps a's underlay address there: the peer still
    sees datagrams from UNDERLAY["a"], now the router's. a gets NAT_INSIDE["a"] on a cable of
    its own to n. n masquerades what a sends out (nftables), and forgets a UDP mapping after
    `forget_after` seconds without a datagram either way: then the peer cannot reach a until
    a sends again. With `random_ports`, each new mapping leaves from a port of its own.
    """
    add_host(hosts, "n")
    outside, inside = f"{hosts.prefix}v", f"{hosts.prefix}i"
    sh(*in_namespace(hosts, "a"), "ip", "link", "set", "dev", outside, "netns",
       hosts.namespace("n"))
    sh(*in_namespace(hosts, "n"), "ip", "link", "set", "dev", outside, "up")
    add_address(hosts, "n", outside, UNDERLAY["a"][:1])
    cable(hosts, "a", "n", "i")
    for side in "an":
        add_address(hosts, side, inside, (NAT_INSIDE[side],))
    sh(*in_namespace(hosts, "a"), "ip", "route", "add", "default", "via", NAT_INSIDE["n"])
    sh(*in_namespace(hosts, "n"), "nft", "add table ip nat; "
       "add chain ip nat postrouting { type nat hook postrouting priority srcnat; }; "
       f"add rule ip nat postrouting oifname {outside} masquerade"
       + (" random" if random_ports else ""))
    # After the masquerade rule: it loads conntrack, whose settings then exist in n.
    sysctl(hosts, "n", "net.ipv4.ip_forward", 1)
    # A mapping that has carried datagrams both ways (a "stream") keeps its own timeout.
    for setting in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
        sysctl(hosts, "n", f"net.netfilter.{setting}", forget_after)
    for side in "ab":  # no router solicitations every 4 s: they would keep the mapping alive
        sysctl(hosts, side, "net.ipv6.conf.default.router_solicitations", 0)


def sysctl(hosts: Hosts, side: str, setting: str, value: int) -> None:
    """Set a kernel setting of namespace `side` (those under net. are per namespace)."""
    path = "/proc/sys/" + setting.replace(".", "/")
    run(hosts, side, sys.executable, "-c", f"open({path!r}, 'w').write('{value}')")


# --- A real WireGuard peer (part two of the ladder, the benchmark) ----------------------

WIREGUARD_SOCKETS = Path("/var/run/wireguard")  # where wg finds a wireguard-go by its name


def start_wireguard_go(hosts: Hosts, side: str, private_key: Path, peer_key: str,
                       endpoint: Optional[str] = None, interface: Optional[str] = None,
                       keepalive: Optional[int] = None) -> subprocess.Popen:
    """wireguard-go (the WireGuard nobody here wrote) in namespace `side`, its interface
    (hosts.tun by default) configured by `wg` as that side's tunnel end: PORT, the peer's
    public key, the whole tunnel subnet through it, the side's TUNNEL addresses, and up."""
    interface = interface or hosts.tun
    process = start(hosts, side, "wireguard-go", "-f", interface, name=f"wireguard-go-{side}")
    socket_file = WIREGUARD_SOCKETS / f"{interface}.sock"
    wait_for(lambda: socket_file.exists() or process.poll() is not None,
             f"wireguard-go to create {interface}")
    if process.poll() is not None:
        raise RuntimeError(f"wireguard-go exited: {output(hosts, f'wireguard-go-{side}')}")
    peer = ["peer", peer_key, "allowed-ips", "198.51.100.0/30,2001:db8:2::/64"]
    peer += ["endpoint", f"{endpoint}:{PORT}"] if endpoint else []
    peer += ["persistent-keepalive", str(keepalive)] if keepalive else []
    run(hosts, side, "wg", "set", interface, "private-key", str(private_key), "listen-port",
        str(PORT), *peer)
    ipv4, ipv6 = TUNNEL[side]
    for command in (["link", "set", "dev", interface, "mtu", str(TUNNEL_MTU), "up"],
                    ["address", "add", f"{ipv4}/30", "dev", interface],
                    ["address", "add", f"{ipv6}/64", "dev", interface, "nodad"]):
        run(hosts, side, "ip", *command)
    return process


def stop_wireguard_go(process: subprocess.Popen, interface: str) -> None:
    """End a wireguard-go we started, and remove its control socket if it left it behind."""
    stop(process)
    (WIREGUARD_SOCKETS / f"{interface}.sock").unlink(missing_ok=True)
