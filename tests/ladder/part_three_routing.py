"""The check of part three's rung 13 (tests/ladder/part-three.md): many peers, by
cryptokey routing. Standard library only.

The learner's tinyvpn is a hub, in namespace b, run with --config; two spokes that nobody here
wrote, wireguard-go in namespaces a and c, are configured by `wg setconf` from files in the same
format; mallory, in m, knows the hub's public key and sees the cable. The check judges what can
be seen from outside: pings and their answers, the packets the hub writes to its TUN, the
datagrams on the cables, the hub's -d lines. Before the lab, with no root, tinyvpn --config FILE
stdio reads a good FILE, names the line of each mistake in a bad one, and takes no PEER.

    underlay:  a 192.0.2.1 ---- b 192.0.2.2 (the hub, UDP 5000) ---- c 192.0.2.4
                                  `---- m 192.0.2.3 (mallory)
    tunnel:    hub 198.51.100.1, 2001:db8:2::1
               a   198.51.100.65, 2001:db8:2:a::1     peer A: 198.51.100.64/26, 2001:db8:2:a::/64
               c   198.51.100.129, 198.51.100.100,    peer C: 198.51.100.128/26,
                   2001:db8:2:c::1                            198.51.100.100/32, 2001:db8:2:c::/64
"""

import os
import re
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Optional

import harness
import netns
import part_two_protocol as wireguard
from harness import Failed
from netns import Hosts
from part_two_protocol import INITIATION, Keys, b64, initiate, tai64n
from recorder import Recorder
from reference_crypto import x25519

GUIDE = "tests/ladder/part-three.md"
SECTION = f"{GUIDE}, \"13. many peers\""
UNDERLAY = {"a": "192.0.2.1", "b": "192.0.2.2", "c": "192.0.2.4", "m": "192.0.2.3"}
HUB = UNDERLAY["b"]
INNER = {"b": "198.51.100.1", "a": "198.51.100.65", "c": "198.51.100.129"}
INNER6 = {"b": "2001:db8:2::1", "a": "2001:db8:2:a::1", "c": "2001:db8:2:c::1"}
ALLOWED = {"a": "198.51.100.64/26, 2001:db8:2:a::/64",
           "c": "198.51.100.128/26, 198.51.100.100/32, 2001:db8:2:c::/64"}
LONGEST = "198.51.100.100"  # c's, by C's /32, though inside A's 198.51.100.64/26
NOBODYS, NOBODYS6 = "198.51.100.200", "2001:db8:2:f::1"  # in no peer's AllowedIPs
OF_C, OF_NOBODY = "198.51.100.150", "198.51.100.20"  # sources a may not use
NAMES = {"a": "spoke a", "c": "spoke c", "b": "the hub"}

# Mallory: a UDP socket of her own, port 5000: she sends each datagram given, then prints (in
# hex) each one she gets back within argv[2] seconds.
MALLORY_SENDS = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.bind(("0.0.0.0", 5000))
    sock.settimeout(float(sys.argv[2]))
    for message in sys.argv[3:]:
        sock.sendto(bytes.fromhex(message), (sys.argv[1], 5000))
    try:
        while True:
            print(sock.recv(65535).hex(), flush=True)
    except socket.timeout:
        pass
"""


class HubLab:
    """Four namespaces, the keys and configuration files, and the programs started."""

    def __init__(self, hosts: Hosts, program: Path) -> None:
        self.hosts, self.program = hosts, program
        self.keys = {side: os.urandom(32) for side in "bacm"}
        self.hub: Optional[subprocess.Popen] = None
        self.spokes: dict = {}
        netns.add_mallory(hosts)
        netns.add_host(hosts, "c")
        netns.cable(hosts, "c", "b", "c")
        netns.add_address(hosts, "c", f"{hosts.prefix}c", (UNDERLAY["c"],))
        netns.sh(*netns.in_namespace(hosts, "b"), "ip", "route", "add", f"{UNDERLAY['c']}/32",
                 "dev", f"{hosts.prefix}c")
        self.cables = {side: Recorder(hosts, "b", f"{hosts.prefix}{cable}")
                       for side, cable in (("a", "v"), ("c", "c"), ("m", "m"))}

    def public(self, side: str) -> str:
        return b64(x25519(self.keys[side]))

    def interface(self, side: str) -> str:
        """A name of its own for each end (wg finds a wireguard-go by its name, machine-wide)."""
        return self.hosts.tun if side == "b" else f"{self.hosts.prefix}w{side}"

    def hub_config(self) -> Path:
        """The hub's FILE: peer A with no Endpoint (the hub learns it), C with one; each
        peer's AllowedIPs on two lines, IPv4's, then IPv6's in lower case: they add up."""
        endpoints = {"a": "", "c": f"Endpoint = {UNDERLAY['c']}:{netns.PORT}\n"}
        prefixes = {side: ALLOWED[side].split(", ") for side in "ac"}
        peers = "".join(f"\n[Peer]\n# spoke {side}\nPublicKey = {self.public(side)}\n"
                        f"AllowedIPs = {', '.join(p for p in prefixes[side] if ':' not in p)}\n"
                        f"allowedips = {', '.join(p for p in prefixes[side] if ':' in p)}\n"
                        f"{endpoints[side]}" for side in "ac")
        return self.write("hub", f"[Interface]\nPrivateKey = {b64(self.keys['b'])}\n"
                                 f"ListenPort = {netns.PORT}\n{peers}")

    def write(self, name: str, text: str) -> Path:
        path = self.hosts.logs / f"{name}.conf"
        path.write_text(text)
        path.chmod(0o600)
        return path

    def start_hub(self) -> None:
        """The learner's tinyvpn -d --config FILE INTERFACE in b, its TUN up, forwarding on."""
        command = [*netns.in_namespace(self.hosts, "b"), sys.executable, str(self.program),
                   "-d", "--config", str(self.hub_config()), self.hosts.tun]
        try:
            self.hub = netns.start_bound(self.hosts, command, name="hub")
        except RuntimeError:
            raise self.why_not_started() from None
        tun, b = self.hosts.tun, netns.in_namespace(self.hosts, "b")
        for line in (["link", "set", "dev", tun, "mtu", str(netns.TUNNEL_MTU), "up"],
                     ["address", "add", f"{INNER['b']}/24", "dev", tun],
                     ["address", "add", f"{INNER6['b']}/48", "dev", tun, "nodad"]):
            netns.sh(*b, "ip", *line)
        for setting, value in (("net.ipv4.ip_forward", 1), ("net.ipv6.conf.all.forwarding", 1),
                               ("net.ipv4.conf.all.send_redirects", 0),
                               (f"net.ipv4.conf.{tun}.send_redirects", 0)):
            netns.sysctl(self.hosts, "b", setting, value)  # a hub forwards, and says no more

    def why_not_started(self) -> Failed:
        started = self.hosts.processes[-1]  # start_command listed it last
        return harness.crash("the hub's tinyvpn", started.wait(), self.said(),
                            when="at start, run with -d --config FILE INTERFACE",
                            should="it starts, reads FILE, and binds its ListenPort")

    def said(self) -> str:
        return netns.output(self.hosts, "hub")

    def start_spoke(self, side: str) -> None:
        """wireguard-go in `side`, set up by `wg setconf` with a FILE of the hub's format."""
        interface = self.interface(side)
        process = netns.start(self.hosts, side, "wireguard-go", "-f", interface,
                              name=f"wireguard-go-{side}")
        socket_file = netns.WIREGUARD_SOCKETS / f"{interface}.sock"
        netns.wait_for(lambda: socket_file.exists() or process.poll() is not None,
                       f"wireguard-go to create {interface}")
        port = f"ListenPort = {netns.PORT}\n" if side == "c" else ""  # a's: a random one
        config = self.write(side, f"[Interface]\nPrivateKey = {b64(self.keys[side])}\n{port}\n"
                                  f"[Peer]\nPublicKey = {self.public('b')}\n"
                                  "AllowedIPs = 198.51.100.0/24, 2001:db8:2::/48\n"
                                  f"Endpoint = {HUB}:{netns.PORT}\nPersistentKeepalive = 25\n")
        netns.run(self.hosts, side, "wg", "setconf", interface, str(config))
        addresses = [f"{INNER[side]}/24", f"{INNER6[side]}/48"] + \
            ([f"{LONGEST}/32"] if side == "c" else [f"{OF_C}/32", f"{OF_NOBODY}/32"])
        for address in addresses:
            netns.run(self.hosts, side, "ip", "address", "add", address, "dev", interface,
                      *(["nodad"] if ":" in address else []))
        netns.run(self.hosts, side, "ip", "link", "set", "dev", interface, "mtu",
                  str(netns.TUNNEL_MTU), "up")  # up: wireguard-go sends its keep-alive now
        self.spokes[side] = process

    def stop_spoke(self, side: str) -> None:
        netns.stop_wireguard_go(self.spokes.pop(side), self.interface(side))

    def alive(self, grace: float = 0) -> None:
        """Failed, naming the crash, if the hub has died (or does within `grace` seconds)."""
        if self.hub and harness.ended(self.hub, grace):
            raise harness.crash("the hub's tinyvpn", self.hub.returncode, self.said())

    def ping(self, side: str, target: str, source: str = "", count: int = 1,
             wait: float = 2) -> str:
        """ping's output, from `side` to `target` (from address `source`, if given)."""
        return netns.run(self.hosts, side, "ping", "-c", str(count), "-i", "0.1", "-W",
                         str(wait), *(["-I", source] if source else []), target,
                         check=False, timeout=count * 0.1 + wait + 5).stdout

    def mallory(self, *messages: bytes, listen: float = 0.6) -> list:
        """Mallory sends `messages` to the hub from her own address; what came back to her."""
        said = netns.run(self.hosts, "m", sys.executable, "-c", MALLORY_SENDS, HUB, str(listen),
                         *(message.hex() for message in messages)).stdout
        return [bytes.fromhex(line) for line in said.split()]


@contextmanager
def hub_lab(program: Path) -> Iterator[HubLab]:
    lacking = wireguard.missing()
    if lacking:
        raise Failed(f"this machine cannot check rung 13: {lacking}",
                     "a real WireGuard for spokes: wireguard-go and wg installed")
    with netns.two_hosts() as hosts:
        lab = HubLab(hosts, program)
        try:
            yield lab
        except Exception:
            lab.alive(grace=1)  # a crash is named first, whatever the symptom was
            raise
        finally:
            for side in list(lab.spokes):
                lab.stop_spoke(side)


def replied(output: str, count: int = 1) -> bool:
    return f"{count} received" in output


def dropped_line(lab: HubLab, pattern: str) -> str:
    """The hub's last -d line matching `pattern`, or '(none)'."""
    lines = [line for line in lab.said().splitlines() if re.search(pattern, line)]
    return lines[-1].strip() if lines else "(none)"


def shown_dropped(lab: HubLab, pattern: str, packet: str, why: str) -> None:
    """Failed unless the hub's last -d line matching `pattern` says DROPPED."""
    line = dropped_line(lab, pattern)
    if "DROPPED" not in line:
        raise Failed(f"the hub's -d line for {packet}: {line}", f"-d shows it DROPPED, and "
                     f"why: {why}", SECTION)


# --- Before the lab: FILE read, or refused by the line that shows it (no root) -------------

# The FILE every probe starts from, good as it is: comments, names in any case, AllowedIPs on
# two lines that add up, an Endpoint by host name and one in brackets; {private}, {a} and
# {c}: keys. The hub binds a random port (no ListenPort); from the machine's own namespace it
# sends only to loopback's port 9 (discard), where its endpoints are.
GOOD_FILE = (
    "[Interface]",
    "# the hub: no ListenPort, so a random port",
    "privatekey = {private}",
    "",
    "[Peer]",
    "PublicKey = {a}  # spoke a",
    "AllowedIPs = 198.51.100.64/26",
    "allowedips = 2001:db8:2:a::/64",
    "Endpoint = localhost:9",
    "",
    "[PEER]",
    "publicKey = {c}",
    "AllowedIPs = 198.51.100.128/26, 198.51.100.100/32",
    "PersistentKeepalive = off",
    "endpoint = [::1]:9",
)
# One mistake each: (what it is, the line it replaces, that line's new text, the line to name).
MISTAKES = (
    ("a prefix /33", 7, "AllowedIPs = 198.51.100.64/33", 7),
    ("a PrivateKey of 31 bytes", 3, "PrivateKey = {short}", 3),
    ("wg-quick's Address (no setting of wg's)", 2, "Address = 198.51.100.1/24", 2),
    ("a [Peer] with no PublicKey", 12, "# its PublicKey forgotten", 11),
    ("a ListenPort out of range", 4, "ListenPort = 70000", 4),
)
# FILE says all that these say: with --config, they are a usage error. (PEER on loopback: a
# tinyvpn that takes it may send there, from the machine's own namespace.)
NOT_WITH_CONFIG = (("stdio", "127.0.0.1", "5000"), ("--keepalive", "5", "stdio"))
FILE_TIME = 3.0  # seconds more than tinyvpn --help takes, to read FILE and exit, or start
STARTED_FOR = 1.0  # seconds a good FILE's tinyvpn must still run after its public key
HELP_TIME = 30.0  # the most --help may take, on a machine however busy


class Runs:
    """The tinyvpns files_are_read starts at once, each in the folder of its hub.conf, and
    kills at the end; their deadline: FILE_TIME after --help ends, since all start as slowly
    as the machine is busy."""

    def __init__(self, program: Path, folder: Path, running: ExitStack) -> None:
        self.program, self.folder, self.running = program.resolve(), folder, running
        self.keys = {name: b64(os.urandom(size)) for name, size in
                     (("private", 32), ("a", 32), ("c", 32), ("short", 31))}
        self.started = time.monotonic()
        self.deadline = self.started + HELP_TIME

    def start(self, name: str, lines: tuple, *arguments: str) -> "subprocess.Popen[str]":
        """tinyvpn ARGUMENTS, in folder `name`, where hub.conf holds `lines` (written once:
        the tinyvpns started before may be reading it)."""
        folder = self.folder / name
        if not folder.exists():
            folder.mkdir()
            (folder / "hub.conf").write_text("".join(f"{line}\n" for line in lines)
                                             .format(**self.keys))
        process = subprocess.Popen([sys.executable, str(self.program), *arguments], cwd=folder,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        self.running.callback(process.communicate)
        self.running.callback(process.kill)
        return process

    def finished(self, process: "subprocess.Popen[str]") -> Optional[tuple]:
        """(stdout, stderr) of `process` once it exits; None if it still runs at the deadline."""
        try:
            return process.communicate(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None

    def ran(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"


def files_are_read(program: Path) -> None:
    """tinyvpn --config on a good FILE, on FILEs with one mistake each, and with settings FILE
    gives: all started at once (each needs a second or less), then judged in order."""
    with tempfile.TemporaryDirectory(prefix="tinyvpn-rung13-") as folder, \
            ExitStack() as running:
        runs = Runs(program, Path(folder), running)
        helped = runs.start("good", GOOD_FILE, "--help")
        good = runs.start("good", GOOD_FILE, "-d", "--config", "hub.conf", "stdio")
        usage = [runs.start("good", GOOD_FILE, "--config", "hub.conf", *words)
                 for words in NOT_WITH_CONFIG]
        bad = [runs.start(str(line), GOOD_FILE[:line - 1] + (text,) + GOOD_FILE[line:],
                          "--config", "hub.conf", "stdio") for _, line, text, _ in MISTAKES]
        knows_config(runs, helped)
        runs.deadline = time.monotonic() + FILE_TIME
        good_file_starts(runs, good)
        for (what, line, text, named), process in zip(MISTAKES, bad):
            bad_file_named(runs, process, f"a hub.conf with {what} on line {line} "
                           f"('{text.format(**runs.keys)}')", named)
        for words, process in zip(NOT_WITH_CONFIG, usage):
            usage_error(runs, process, f"tinyvpn --config hub.conf {' '.join(words)}")


def printed(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    if len(lines) < 2:
        return f"on stderr: {lines[0] if lines else '(nothing)'}"
    return f"{len(lines)} lines on stderr:\n" + "\n".join(f"        {line}" for line in lines[:4])


def knows_config(runs: Runs, helped: "subprocess.Popen[str]") -> None:
    said = runs.finished(helped)
    if said and helped.returncode == 0 and "--config" not in said[0]:
        raise Failed("tinyvpn has no --config option yet: --help does not list it",
                     "it understands --config FILE INTERFACE, as the rung describes")


def good_file_starts(runs: Runs, good: "subprocess.Popen[str]") -> None:
    """Started, once it printed its public key (FILE read: its private key is in it) and still
    runs STARTED_FOR later (its peers set up too: their endpoints looked up)."""
    said, ended, stderr = "", False, good.stderr.fileno()  # type: ignore[union-attr]
    while "public key: " not in said and not ended and \
            select.select([stderr], [], [], max(0.0, runs.deadline - time.monotonic()))[0]:
        chunk = os.read(stderr, 65536).decode(errors="replace")
        said, ended = said + chunk, not chunk  # nothing more: it exited
    if "public key: " in said:
        with suppress(subprocess.TimeoutExpired):
            good.wait(STARTED_FOR)
        if good.poll() is None:
            return
        ended = True
    who, which = "tinyvpn -d --config hub.conf stdio", ("a good hub.conf (# comments, names in "
                                                         "any case, AllowedIPs on two lines, "
                                                         "Endpoints by name and in brackets)")
    if not ended:
        raise Failed(f"{who}, on {which}, printed no 'public key: ...' line in {runs.ran()}; "
                     f"{printed(said)}", "with -d, it reads FILE and prints its public key "
                     "first, as `wg show` says it", SECTION)
    said += good.communicate()[1]
    said = "".join(line for line in said.splitlines(True) if not line.startswith("public key: "))
    if "Traceback (most recent call last):" in said:
        raise harness.crash(who, good.returncode, said, when=f"reading {which}",
                            should="it reads FILE, prints its public key, and runs")
    raise Failed(f"{who} refused {which}: {harness.status(good.returncode)}, {printed(said)}",
                 "FILE is read as wg setconf reads it: names of sections and settings in any "
                 "case, # starts a comment, AllowedIPs may come more than once, an Endpoint "
                 "is HOST:PORT (a host name, an address, an IPv6 address in brackets)",
                 SECTION)


def bad_file_named(runs: Runs, process: "subprocess.Popen[str]", which: str,
                   named: int) -> None:
    """Failed unless tinyvpn exits 1 and says, in one line, which line is wrong."""
    said = runs.finished(process)
    should = (f"it exits with status 1 and prints one line, 'tinyvpn: ' and words that name "
              f"line {named}, such as 'tinyvpn: hub.conf, line {named}: ...'")
    if said is None:
        raise Failed(f"tinyvpn --config hub.conf stdio, on {which}, still ran after "
                     f"{runs.ran()}", should, SECTION)
    if "Traceback (most recent call last):" in said[1]:
        raise harness.crash("tinyvpn --config hub.conf stdio", process.returncode, said[1],
                            when=f"reading {which}", should=should)
    lines = said[1].splitlines()
    if process.returncode != 1 or len(lines) != 1 or not lines[0].startswith("tinyvpn: ") \
            or not re.search(rf"\bline {named}\b", lines[0]):
        raise Failed(f"tinyvpn --config hub.conf stdio, on {which}, ended with "
                     f"{harness.status(process.returncode)}; {printed(said[1])}", should,
                     SECTION)


def usage_error(runs: Runs, process: "subprocess.Popen[str]", who: str) -> None:
    said = runs.finished(process)
    should = ("a usage error, exit status 2: --config takes -d and INTERFACE alone; PEER, "
              "PORT, --key, --private-key, --peer-key and --keepalive are FILE's to say")
    if said is None:
        raise Failed(f"{who} (a good hub.conf) still ran after {runs.ran()}", should, SECTION)
    if "Traceback (most recent call last):" in said[1]:
        raise harness.crash(who, process.returncode, said[1], when="at start", should=should)
    if process.returncode != 2:
        raise Failed(f"{who} (a good hub.conf) ended with {harness.status(process.returncode)}"
                     f"; {printed(said[1])}", should, SECTION)


# --- Rung 13: many peers, by cryptokey routing --------------------------------------------


def check_routing(program: Path) -> None:
    files_are_read(program)
    with hub_lab(program) as lab:
        lab.start_hub()
        for side in "ac":
            lab.start_spoke(side)
        hub_tun = Recorder(lab.hosts, "b", lab.hosts.tun)
        a_tun = Recorder(lab.hosts, "a", lab.interface("a"))
        spokes_reach_the_hub(lab)
        spoke_to_spoke(lab, a_tun)
        no_peer_is_unreachable(lab)
        sources_are_checked(lab, hub_tun)
        a_restart_leaves_c_alone(lab)
        mallory_is_nobody(lab)


def spokes_reach_the_hub(lab: HubLab) -> None:
    for side in "ac":
        if not replied(lab.ping(side, INNER["b"], wait=3)):
            lab.alive()
            raise Failed(f"{NAMES[side]}'s ping to the hub ({INNER['b']}) got no reply; the "
                         "hub's last -d line for a datagram from it: "
                         f"{dropped_line(lab, f'from {UNDERLAY[side]}:')}",
                         "each spoke's initiation is answered by the [Peer] whose PublicKey it "
                         "decrypts to, its transport messages are opened by that peer's "
                         "session, found by their receiver index, and a packet from its own "
                         f"address ({INNER[side]}, in {ALLOWED[side].split(',')[0]}) is let "
                         "in: the longest prefix that holds it is its peer's (FILE gives each "
                         "peer's AllowedIPs on two lines: they add up)", SECTION)
    for side, other in ("ac", "ca"):
        since = time.time()
        if not replied(lab.ping("b", INNER[side])):
            lab.alive()
            astray = lab.cables[other].datagrams(HUB, UNDERLAY[other], since=since)
            raise Failed(f"the hub's ping to {NAMES[side]} ({INNER[side]}) got no reply; " +
                         (f"it sent it to {NAMES[other]}" if astray else
                          f"its -d said: {dropped_line(lab, INNER[side])}"),
                         "a packet for an address in a peer's AllowedIPs goes to that peer, "
                         "sealed with its session, to its endpoint", SECTION)


def spoke_to_spoke(lab: HubLab, a_tun: Recorder) -> None:
    for source, target, what in (("a", INNER["c"], "spoke c"), ("c", INNER["a"], "spoke a"),
                                 ("a", INNER6["c"], "spoke c, over IPv6")):
        if not replied(lab.ping(source, target)):
            lab.alive()
            raise Failed(f"{NAMES[source]}'s ping to {what} ({target}), through the hub, got no "
                         f"reply; the hub's -d said: {dropped_line(lab, re.escape(target))}",
                         "the hub's kernel forwards it back into the TUN, and tinyvpn sends it "
                         "to the peer whose AllowedIPs hold its destination", SECTION)
    since = time.time()
    if not replied(lab.ping("a", LONGEST)):
        lab.alive()
        back = [p for p in a_tun.written(since) if p[16:20] == bytes(map(int, LONGEST.split(".")))]
        raise Failed(f"spoke a's ping to {LONGEST} (C's by its /32, inside A's "
                     "198.51.100.64/26) got no reply" + ("; the hub sent it back to spoke a"
                                                         if back else ""),
                     "the longest prefix wins: a /32 over a /26, whatever their order in FILE "
                     "(wireguard-go device/allowedips.go)", SECTION)


def no_peer_is_unreachable(lab: HubLab) -> None:
    for side, target, words in (("a", NOBODYS, "Destination Host Unreachable"),
                                ("b", NOBODYS6, "Address unreachable")):
        said = lab.ping(side, target, wait=1)
        lab.alive()
        if words not in said:
            told = [line.strip() for line in said.splitlines() if line.startswith("From ")]
            got = "a reply" if replied(said) else f"'{told[0]}'" if told else "no answer at all"
            raise Failed(f"{NAMES[side]}'s ping to {target}, an address in no peer's "
                         f"AllowedIPs, got {got}, not '{words}'",
                         "a packet no peer's AllowedIPs hold is dropped, and its sender told, "
                         "as the kernel's WireGuard tells it: ICMP host unreachable (type 3 "
                         "code 1), ICMPv6 address unreachable (type 1 code 3)", SECTION)
        shown_dropped(lab, rf"-> {re.escape(target)}\b", f"the packet to {target}",
                      "no peer's AllowedIPs hold it")


def sources_are_checked(lab: HubLab, hub_tun: Recorder) -> None:
    """Spoke a pings the hub from addresses it may not use: nothing of it reaches the TUN."""
    for source, whose in ((OF_C, "in C's AllowedIPs, not A's"),
                          (OF_NOBODY, "in no peer's AllowedIPs")):
        since = time.time()
        lab.ping("a", INNER["b"], source=source, wait=0.5)
        time.sleep(0.2)
        lab.alive()
        taken = [p for p in hub_tun.written(since)
                 if p[:1] == b"\x45" and p[12:16] == bytes(map(int, source.split(".")))]
        if taken:
            raise Failed(f"spoke a sent a ping from {source}, an address {whose}; the hub "
                         "wrote it to its TUN", "after decryption, the inner source must be in "
                         "the AllowedIPs of the peer whose session opened it, else dropped "
                         "(wireguard-go device/receive.go)", SECTION)
        shown_dropped(lab, rf"{re.escape(source)}\b", f"spoke a's ping from {source}",
                      "its source is not its peer's")


def mallory_is_nobody(lab: HubLab) -> None:
    """Mallory initiates with her own key, then replays spoke a's latest initiation from her
    address: the hub answers neither, and still sends a's packets to a."""
    keys = Keys(lab.keys["b"], lab.keys["m"], Path(), Path())  # a: the responder, the hub
    own = initiate(keys, tai64n(time.time_ns())).message
    initiations = [m for m in lab.cables["a"].datagrams(UNDERLAY["a"], HUB) if m[:4] == INITIATION]
    for messages, what in (([own], "an initiation from her own key, in no [Peer]"),
                           (initiations[-1:], "spoke a's latest initiation again, from her "
                            "address (replayed)")):
        answers = lab.mallory(*messages)
        lab.alive()
        if answers:
            raise Failed(f"mallory sent the hub {what}; it answered her with "
                         f"{wireguard.describe(answers[0])}", "an initiation is answered only "
                         "if it decrypts to the PublicKey of a [Peer], and its timestamp is "
                         "newer than that peer's last", SECTION)
    since = time.time()
    if not replied(lab.ping("b", INNER["a"])) or lab.cables["m"].datagrams(HUB, since=since):
        raise Failed("after mallory's initiations, the hub's ping to spoke a went "
                     + ("to mallory" if lab.cables["m"].datagrams(HUB, since=since) else
                        "unanswered"), "a peer's endpoint moves only for an authentic, new "
                     "message from that peer (rung 4)", SECTION)


def a_restart_leaves_c_alone(lab: HubLab) -> None:
    """Spoke a restarts (from a new port) while c pings the hub: c loses nothing; then a and c
    reach each other again."""
    pinging = netns.start(lab.hosts, "c", "ping", "-c", "25", "-i", "0.1", "-W", "1",
                          INNER["b"], name="ping-c")
    time.sleep(0.3)
    lab.stop_spoke("a")
    lab.start_spoke("a")
    pinging.wait(10)
    lab.alive()
    answered = {int(n) for n in re.findall(r"icmp_seq=(\d+)",
                                           netns.output(lab.hosts, "ping-c", "out"))}
    lost = sorted(set(range(1, 26)) - answered)
    if lost:
        raise Failed(f"while spoke a restarted, spoke c's pings to the hub {lost[:6]} were lost",
                     "each peer has its own handshakes, sessions and timers: one peer's new "
                     "handshake never disturbs another's session", SECTION)
    for source, target in (("a", INNER["c"]), ("c", INNER["a"])):
        if not replied(lab.ping(source, target, wait=3)):
            lab.alive()
            raise Failed(f"spoke a restarted, from a new port; then {NAMES[source]}'s ping to "
                         f"{target} got no reply; the hub's -d said: "
                         f"{dropped_line(lab, re.escape(target))}",
                         "a's new initiation makes a new session with peer A, and moves A's "
                         "endpoint, and only A's, to a's new port", SECTION)

