#!/usr/bin/env python3
"""Checks the exercises of tests/exercises/README.md: five rungs that turn tinyvpn into a tunnel
mallory cannot use. As root, from the top of the checkout:

    python3 tests/exercises.py                  check rungs 1 to 5 of ./tinyvpn.py, in order,
                                                stopping at the first one not solved
    python3 tests/exercises.py 3                check rungs 1 to 3
    python3 tests/exercises.py --program FILE   check another file (a classmate's)

Each check runs the program for real, as the demo does: two hosts (network namespaces) joined
by a cable, real ping and TCP through the tunnel, mallory forging and replaying datagrams from
a third host, and the cable and the TUN interfaces watched by packet sockets (tests/wire.py).
It judges only what can be seen from outside (datagrams on the cable, packets on a TUN, the
exit status, the words of -d): any names and any layout of the code pass.
Exit status 0 only when every rung asked for passes. Standard library only.
"""

import argparse
import hmac
import io
import json
import os
import re
import secrets
import shlex
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import exercises_wireguard
import netns
from ladder import Failed
from netns import MALLORY, TINYVPN, TUNNEL, UNDERLAY, Hosts
from traffic import tcp_transfer

WIRE = str(Path(__file__).resolve().parent / "wire.py")
GUIDE = "tests/exercises/README.md"
A, B = UNDERLAY["a"][0], UNDERLAY["b"][0]
TAG = 16


# --- Watching: the cable and the TUN interfaces ------------------------------------------


@dataclass
class Seen:
    """One IP packet a recorder saw: when, whether its host was sending it, and its bytes."""
    time: float
    out: bool
    packet: bytes

    @property
    def udp(self) -> Optional[tuple]:
        """(source address, destination address, UDP payload) of an IPv4 UDP datagram."""
        header = (self.packet[0] & 0x0F) * 4
        if self.packet[0] >> 4 != 4 or self.packet[9] != 17:
            return None
        return (socket.inet_ntoa(self.packet[12:16]), socket.inet_ntoa(self.packet[16:20]),
                self.packet[header + 8:])


class Recorder:
    """tests/wire.py record, in a host's namespace: every packet an interface carries."""

    def __init__(self, hosts: Hosts, side: str, interface: str) -> None:
        self.hosts, self.name = hosts, f"record-{side}-{interface}"
        self.process = netns.start(hosts, side, sys.executable, WIRE, "record", interface,
                                   name=self.name)
        netns.wait_for(lambda: "listening" in netns.output(hosts, self.name, "out")
                       or self.process.poll() is not None, f"the recorder on {interface}")

    def seen(self, since: float = 0, until: float = float("inf")) -> list:
        """What it has seen so far, from time `since` to `until`."""
        if self.process.poll() is not None:  # the check would see nothing, and pass
            raise RuntimeError(f"{self.name} failed: {netns.output(self.hosts, self.name)}")
        seen = []
        for line in netns.output(self.hosts, self.name, "out").splitlines()[1:]:
            if line.endswith("}"):  # not a line still being written
                d = json.loads(line)
                seen.append(Seen(d["time"], d["out"], bytes.fromhex(d["hex"])))
        return [s for s in seen if since <= s.time < until]

    def datagrams(self, source: str, destination: str = "", since: float = 0,
                  until: float = float("inf")) -> list:
        """The UDP payloads sent from `source` (to `destination`), oldest first."""
        return [payload for _, payload in self.timed(source, destination, since, until)]

    def timed(self, source: str, destination: str = "", since: float = 0,
              until: float = float("inf")) -> list:
        """The same, each as (the time it was seen, the payload)."""
        return [(s.time, s.udp[2]) for s in self.seen(since, until)
                if s.udp and s.udp[0] == source and destination in ("", s.udp[1])]

    def written(self, since: float = 0) -> list:
        """On a TUN: the packets tinyvpn wrote into it (its kernel received them)."""
        return [s.packet for s in self.seen(since) if not s.out]

    def read(self, since: float = 0, until: float = float("inf")) -> list:
        """On a TUN: the packets its kernel sent into it, for tinyvpn to read."""
        return [s.packet for s in self.seen(since, until) if s.out]


def echo(packet: bytes) -> Optional[tuple]:
    """(type, id, seq) of an IPv4 ICMP echo request (8) or reply (0)."""
    header = (packet[0] & 0x0F) * 4
    if packet[0] >> 4 != 4 or packet[9] != 1 or len(packet) < header + 8:
        return None
    kind, _, _, identifier, sequence = struct.unpack("!BBHHH", packet[header:header + 8])
    return (kind, identifier, sequence) if kind in (0, 8) else None


# --- Running the program under test ------------------------------------------------------

# The same clock, stopped, on both hosts: counters that start from it start equal.
STOPPED_CLOCK = ("import runpy, sys, time; time.time_ns = lambda: 1_700_000_000_000_000_000; "
                 "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


class Lab:
    """Two hosts with the program under test on each, and what the check needs to watch."""

    def __init__(self, hosts: Hosts, program: Path, stopped_clock: bool = False) -> None:
        self.hosts = hosts
        self.command: tuple = (sys.executable, str(program))
        if stopped_clock:
            self.command = (sys.executable, "-c", STOPPED_CLOCK, str(program))
        self.key = secrets.token_bytes(32)
        self.key_file = hosts.logs / "tinyvpn.key"
        self.key_file.write_bytes(self.key)
        self.cable = Recorder(hosts, "b", f"{hosts.prefix}v")  # b's end sees both ways
        self.processes: dict = {}

    def start(self, side: str, *options: str) -> subprocess.Popen:
        """tinyvpn -d with `options` on `side`; Failed if it does not start."""
        options = tuple(str(self.key_file) if o == "KEY" else o for o in options)
        try:
            process = netns.start_tinyvpn(self.hosts, side, "-d", *options,
                                          program=self.command)
        except RuntimeError:
            usage = netns.run(self.hosts, side, *self.command, "--help", check=False).stdout
            unknown = [option for option in options if option.startswith("--")
                       and not re.search(re.escape(option) + r"\b(?!-)", usage)]
            if unknown:
                raise Failed(f"tinyvpn has no {unknown[0]} option yet: --help does not list it",
                             f"it understands {unknown[0]}, as the rung describes") from None
            said = self.said(side).strip().splitlines()
            raise Failed(f"{side}'s tinyvpn did not start with {shlex.join(options)}; it said: "
                         f"{said[-1] if said else '(nothing)'}",
                         "it accepts the new option and runs") from None
        self.processes[side] = process
        return process

    def keyed(self, *options_of_a: str) -> Recorder:
        """Both tinyvpns with --key (a with `options_of_a` too), the tunnel up, and a ping
        across; returns a recorder on b's TUN."""
        self.start("a", "--key", "KEY", *options_of_a)
        self.start("b", "--key", "KEY")
        b_tun = Recorder(self.hosts, "b", self.hosts.tun)
        netns.bring_up_tunnel(self.hosts)
        if not self.ping("a"):
            raise Failed("with the same --key on both hosts, a's pings got no answer",
                         "an authentic datagram is written to the TUN as before")
        return b_tun

    def said(self, side: str) -> str:
        """What tinyvpn on `side` has printed on stderr: the -d lines."""
        return netns.output(self.hosts, f"tinyvpn-{side}")

    def lines_from(self, side: str, sender: str) -> list:
        """The -d lines of `side` about datagrams from address `sender`."""
        return [line for line in self.said(side).splitlines() if f"(from {sender}:" in line]

    def stop(self, side: str) -> str:
        """SIGTERM; return the last line tinyvpn printed (its summary)."""
        netns.stop(self.processes.pop(side))
        lines = self.said(side).strip().splitlines()
        return lines[-1] if lines else ""

    def ping(self, side: str, count: int = 3, *options: str) -> bool:
        """Ping the other side's tunnel address; True if every echo came back."""
        result = netns.run(self.hosts, side, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                           *options, TUNNEL[netns.OTHER[side]][0], check=False)
        return f"{count} received" in result.stdout

    def from_mallory(self, *payloads: bytes) -> None:
        """Mallory sends b's port one datagram per payload."""
        if "m" not in self.hosts.sides:
            netns.add_mallory(self.hosts)
        netns.sh(*netns.in_namespace(self.hosts, "m"), sys.executable, WIRE, "send", B,
                 *(payload.hex() for payload in payloads))


@contextmanager
def lab(program: Path, stopped_clock: bool = False) -> Iterator[Lab]:
    with netns.two_hosts() as hosts:
        yield Lab(hosts, program, stopped_clock)


def dropped_in_summary(summary: str) -> int:
    """The packets a summary line ('... dropped: no valid tag 2, write EIO (...) 1') counts."""
    _, _, counts = summary.partition("dropped:")
    return sum(int(n) for n in re.findall(r"(\d+)(?=,|$)", counts.strip()))


def tag_of(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")[:TAG]


def settle(seconds: float = 0.4) -> None:
    """Give datagrams in flight time to arrive and be handled."""
    time.sleep(seconds)


# --- Rung 1: keep-alive ------------------------------------------------------------------

KEEPALIVE = re.compile(r"keep-?alive", re.IGNORECASE)


def check_keepalive(program: Path) -> None:
    with lab(program) as tunnel:
        a = tunnel.start("a", "--keepalive", "0.5")
        tunnel.start("b")
        # The TUNs are still down: no packet to carry, so all a sends is keep-alives.
        before, started = context_switches(a.pid), time.time()
        time.sleep(2.2)
        wakeups = context_switches(a.pid) - before
        sent = tunnel.cable.datagrams(A, since=started)
        if any(sent):
            raise Failed(f"while a had no packet to send, it sent a datagram of "
                         f"{len(max(sent, key=len))} bytes",
                         "a keep-alive is a datagram with nothing in it")
        if not 3 <= len(sent) <= 5:
            raise Failed(f"in 2.2 s with no packet to send, a (--keepalive 0.5) sent "
                         f"{len(sent)} keep-alives", "one every 0.5 s: 4 of them")
        if tunnel.cable.datagrams(B, since=started):
            raise Failed("b, started without --keepalive, sent datagrams with no packet to send",
                         "without --keepalive tinyvpn behaves as before: idle, it sends nothing")
        if wakeups > 20:
            raise Failed(f"a woke up {wakeups} times in 2.2 s of idling (a polling loop)",
                         "it sleeps in select() with a timeout: the time until the next "
                         "keep-alive is due; about 5 wake-ups")
        lines = tunnel.lines_from("b", f"{A}")
        wrong = [line for line in lines if "DROP" in line.upper() or not KEEPALIVE.search(line)]
        if not lines or wrong:
            raise Failed("b's -d line for a keep-alive: " + (wrong[0] if wrong else "(none)"),
                         "an empty datagram is a keep-alive: it is not written to the TUN, it "
                         "is no error, and -d says 'keep-alive'")
        netns.bring_up_tunnel(tunnel.hosts)
        tunnel.ping("a", 8)
        sent = tunnel.cable.timed(A)
        early = [later - sooner for (sooner, _), (later, payload) in zip(sent, sent[1:])
                 if not payload and later - sooner < 0.4]
        if early:
            raise Failed(f"a sent a keep-alive {early[0]:.2f} s after its last datagram (while "
                         "it was sending a ping every 0.2 s)", "sending resets the timer: a "
                         "keep-alive goes out only after 0.5 s of sending nothing")


def context_switches(pid: int) -> int:
    """How often the process has gone to sleep and woken up: /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))  # type: ignore


# --- Rung 2: authenticate ----------------------------------------------------------------


def check_authenticate(program: Path) -> None:
    with lab(program) as tunnel:
        b_tun = tunnel.keyed("--keepalive", "0.5")
        transfer_intact(tunnel.hosts, "with --key")
        for datagram in tunnel.cable.datagrams(A, B):
            if len(datagram) < TAG or tag_of(tunnel.key, datagram[:-TAG]) != datagram[-TAG:]:
                raise Failed(f"a sent a datagram of {len(datagram)} bytes whose last 16 bytes "
                             "are not the tag", "every datagram ends with its tag: the first "
                             "16 bytes of HMAC-SHA256(key, all the bytes before the tag)")
        netns.wait_for(lambda: any(KEEPALIVE.search(line) for line in tunnel.lines_from("b", A)),
                       "b to show a keep-alive from a", timeout=3)
        forged_count = forge_from_mallory(tunnel, b_tun)
        untagged = [line for line in tunnel.lines_from("b", A)
                    if "DROP" in line.upper() and "write E" not in line]
        if untagged:
            raise Failed(f"b dropped a datagram from a: {untagged[0]}",
                         "with --key, everything a sends carries its tag, keep-alives too")
        summary = tunnel.stop("b")
        if dropped_in_summary(summary) < forged_count:
            raise Failed(f"after mallory's {forged_count} datagrams, b's summary at exit was: "
                         f"{summary}", f"it counts them among the dropped: 'dropped: ... "
                         f"{forged_count}'")
        check_bad_keys(tunnel)


def forge_from_mallory(tunnel: Lab, b_tun: Recorder) -> int:
    """Mallory's forged echo request (the demo's), an empty datagram and a 15-byte one: each
    must be dropped, and -d must say so. Returns how many were sent."""
    since = time.time()
    netns.add_mallory(tunnel.hosts)
    netns.sh(*netns.in_namespace(tunnel.hosts, "m"), sys.executable, WIRE, "forge", B,
             TUNNEL["a"][0], TUNNEL["b"][0])
    tunnel.from_mallory(b"", bytes.fromhex("450000") + bytes(12))
    settle()
    if any((echo(packet) or (0, 0))[1] == 0x6D6D for packet in b_tun.written(since)):
        answered = any((echo(packet) or (8, 0)) == (0, 0x6D6D, 1) for packet in b_tun.read())
        raise Failed("mallory's forged echo request reached b's TUN"
                     + (": b's kernel answered it" if answered else ""),
                     "a datagram whose tag does not verify is dropped before anything else")
    lines = tunnel.lines_from("b", MALLORY)
    if len(lines) < 3 or not all("DROP" in line.upper() for line in lines):
        raise Failed("b's -d lines for mallory's forged, empty and 15-byte datagrams:\n"
                     + "\n".join(f"      {line}" for line in lines or ["(none)"]),
                     "each one is shown as DROPPED, with the reason: a datagram too short to "
                     "hold a tag has none")
    return 3


def check_bad_keys(tunnel: Lab) -> None:
    short = tunnel.hosts.logs / "short.key"
    short.write_bytes(b"0123456789")
    for path, what, words in ((short, "a key file of 10 bytes", "16"),
                              (tunnel.hosts.logs / "missing.key", "a key file that does not "
                               "exist", "missing.key")):
        try:
            result = netns.run(tunnel.hosts, "a", *tunnel.command, "--key", str(path), "stdio",
                               B, str(netns.PORT + 1), check=False, timeout=5, input="")
        except subprocess.TimeoutExpired:
            raise Failed(f"given {what}, tinyvpn started and ran",
                         "it stops at once, with a one-line error that says what is wrong, "
                         "and a non-zero exit status") from None
        if result.returncode == 0 or "Traceback" in result.stderr or words not in result.stderr:
            raise Failed(f"given {what}, tinyvpn exited with status {result.returncode} and "
                         f"said: {result.stderr.strip()[-300:] or '(nothing)'}",
                         f"a one-line error that says what is wrong (mentioning {words!r}), "
                         "and a non-zero exit status")


def transfer_intact(hosts: Hosts, how: str) -> None:
    with redirect_stdout(io.StringIO()):  # its speed: nothing the learner needs to read
        sent, received, _ = tcp_transfer(hosts, 512 * 1024)
    if received != sent:
        raise Failed(f"{how}, 512 KiB sent over TCP arrived as {received}",
                     "the same bytes arrive: same size, same SHA-256")


# --- Rung 3: replay ----------------------------------------------------------------------


def check_replay(program: Path) -> None:
    with lab(program) as tunnel:
        b_tun = tunnel.keyed()
        caught = tunnel.cable.datagrams(A, B)
        check_counters(tunnel, caught)
        replayed(tunnel, b_tun, caught, "mallory sent b again the datagrams a had sent")
        if not all("replay" in line.lower() for line in tunnel.lines_from("b", MALLORY)):
            raise Failed("b's -d lines for the replayed datagrams: "
                         + tunnel.lines_from("b", MALLORY)[0],
                         "each is shown as DROPPED: replay")
        renumbered = [(int.from_bytes(d[:8], "big") + 1000).to_bytes(8, "big") + d[8:]
                      for d in caught]
        replayed(tunnel, b_tun, renumbered, "mallory sent them again, each with 1000 added to "
                 "its number, so that it looked new,", "the tag covers the number too")
        tunnel.from_mallory(b"\xff" * 8 + bytes(40 + TAG))
        if not tunnel.ping("a", 2):
            raise Failed("after mallory sent one datagram numbered 2^64 - 1 with a wrong tag, "
                         "a's pings got no answer: b took them for old",
                         "the tag is checked first: only an authentic datagram moves the window")
        check_window(tunnel, b_tun)


def check_counters(tunnel: Lab, caught: list) -> None:
    numbers = [int.from_bytes(datagram[:8], "big") for datagram in caught]
    if not numbers or any(n - m != 1 for m, n in zip(numbers, numbers[1:])):
        raise Failed(f"a's datagrams began with the numbers {numbers[:5]}...",
                     "the first 8 bytes are a number (big-endian) that rises by one per datagram")
    if abs(numbers[0] - time.time_ns()) > 600 * 10**9:
        raise Failed(f"a's first number was {numbers[0]}, and the time in nanoseconds is "
                     f"{time.time_ns()}", "it starts at time.time_ns(), so that it goes on "
                     "rising when tinyvpn restarts")
    if any(tag_of(tunnel.key, d[:-TAG]) != d[-TAG:] for d in caught):
        raise Failed("a's datagram ends with 16 bytes that are not HMAC-SHA256(key, the number "
                     "and the packet)", "the tag covers everything before it, the number too")


def replayed(tunnel: Lab, b_tun: Recorder, datagrams: list, how: str,
             should: str = "a datagram whose number b has seen is dropped") -> None:
    """Mallory sends `datagrams`; no echo request may reach b's TUN a second time."""
    tunnel.from_mallory(*datagrams)
    settle()
    echoes = [echo(packet) for packet in b_tun.written()]
    requests = [e for e in echoes if e and e[0] == 8]
    if len(set(requests)) < len(requests):
        raise Failed(f"{how}: b accepted them, and wrote the same echo requests into its TUN "
                     "twice", should)


def check_window(tunnel: Lab, b_tun: Recorder) -> None:
    """Datagrams that arrive out of order: new ones within 64 of the highest are taken, and
    older or repeated ones dropped. They are a's, caught on their way to a black hole."""
    hosts, cable = tunnel.hosts, f"{tunnel.hosts.prefix}v"
    # a's kernel now sends b's datagrams to a MAC address nobody has: b's kernel ignores them,
    # and the recorder at b's end of the cable still sees them.
    netns.sh(*netns.in_namespace(hosts, "a"), "ip", "neigh", "replace", B, "lladdr",
             "02:00:00:00:00:09", "dev", cable, "nud", "permanent")
    since = time.time()
    netns.run(hosts, "a", "ping", "-c", "70", "-i", "0.01", "-W", "0.01", TUNNEL["b"][0],
              check=False)
    settle(0.2)
    unseen = tunnel.cable.datagrams(A, B, since)
    if len(unseen) < 70:
        raise Failed(f"a sent {len(unseen)} datagrams for 70 pings", "one datagram per packet")
    for index, accepted, why in ((69, True, "the newest"),
                                 (0, False, "69 behind the newest: too old to tell"),
                                 (9, True, "60 behind the newest, never seen"),
                                 (39, True, "30 behind the newest, never seen"),
                                 (38, True, "31 behind, after the one 30 behind"),
                                 (69, False, "the newest again")):
        before = len(b_tun.written())
        tunnel.from_mallory(unseen[index])
        grew = lambda before=before: len(b_tun.written()) > before  # noqa: E731
        if accepted and not arrives(grew):
            raise Failed(f"of 70 datagrams a sent, b did not accept one {why}",
                         "a datagram within 64 of the highest number seen, never seen "
                         "before, is new: reordered on the way, not replayed")
        if not accepted and arrives(grew, 0.4):
            raise Failed(f"of 70 datagrams a sent, b accepted one {why}",
                         "only the 64 numbers ending at the highest seen are remembered; "
                         "anything older, or seen before, is dropped")


def arrives(condition: Callable[[], bool], timeout: float = 2) -> bool:
    """Whether `condition` becomes true within `timeout` seconds."""
    try:
        netns.wait_for(condition, "", timeout)
    except TimeoutError:
        return False
    return True


# --- Rung 4: roam ------------------------------------------------------------------------


def check_roam(program: Path) -> None:
    with lab(program) as tunnel:
        tunnel.keyed()
        caught = tunnel.cable.datagrams(A, B)
        netns.add_mallory(tunnel.hosts)
        mallory_cable = Recorder(tunnel.hosts, "b", f"{tunnel.hosts.prefix}m")
        for payloads, what in (([bytes(60), b"", bytes(15)], "datagrams with wrong tags"),
                               (caught[-2:], "datagrams of a's, caught and replayed")):
            tunnel.from_mallory(*payloads)
            if not tunnel.ping("b", 2) or mallory_cable.datagrams(B):
                raise Failed(f"after mallory (192.0.2.3) sent b {what}, b sent its "
                             "packets for a to mallory", "only an authentic, new datagram "
                             "moves the peer")
        moved = "192.0.2.4"
        for change in (["del", f"{A}/24"], ["add", f"{moved}/24"]):
            netns.sh(*netns.in_namespace(tunnel.hosts, "a"), "ip", "address", *change, "dev",
                     f"{tunnel.hosts.prefix}v")
        if not tunnel.ping("a", 3):
            raise Failed(f"a moved from {A} to {moved}; its pings reached b, but b's answers "
                         f"went to {A}", "b takes the address of an authentic, new datagram as "
                         "the peer's: its answers follow a")


# --- Rung 5: encrypt ---------------------------------------------------------------------

PATTERN = b"tinyvpn, secret!"  # 16 bytes, ping -p repeats them in every echo


def check_encrypt(program: Path) -> None:
    # Both hosts run with the same clock, stopped: anything derived from the time starts equal.
    with lab(program, stopped_clock=True) as tunnel:
        tunnel.start("a", "--key", "KEY")
        tunnel.start("b", "--key", "KEY")
        tuns = {side: Recorder(tunnel.hosts, side, tunnel.hosts.tun) for side in "ab"}
        netns.bring_up_tunnel(tunnel.hosts)
        for side in "ab":
            if not tunnel.ping(side, 3, "-p", PATTERN.hex()):
                raise Failed(f"{side}'s pings got no answer (both hosts' clocks read the same, "
                             "and stand still)", "pings cross both ways")
        settle()
        until = time.time() - 0.2  # what was read before then was sent before then + 0.1
        plain = {side: tuns[side].read(until=until) for side in "ab"}
        on_cable = {side: tunnel.cable.datagrams(UNDERLAY[side][0], until=until + 0.1)
                    for side in "ab"}
        check_nothing_in_the_clear(on_cable["a"] + on_cable["b"])
        tunnel.stop("a")  # a restarts, and sends again
        restarted = time.time()
        tunnel.start("a", "--key", "KEY")
        tuns["a"] = Recorder(tunnel.hosts, "a", tunnel.hosts.tun)
        for command in netns.tunnel_commands(tunnel.hosts, "a"):
            netns.sh(*command)
        tunnel.ping("a", 3, "-p", PATTERN.hex())
        settle()
        until = time.time() - 0.2
        pairs = [*pair_up(on_cable["a"], plain["a"], "a"),
                 *pair_up(on_cable["b"], plain["b"], "b"),
                 *pair_up(tunnel.cable.datagrams(A, since=restarted, until=until + 0.1),
                          tuns["a"].read(until=until), "a after its restart")]
        check_keystreams(pairs)


def check_nothing_in_the_clear(datagrams: list) -> None:
    inner = socket.inet_aton(TUNNEL["a"][0]) + socket.inet_aton(TUNNEL["b"][0])
    for needle, what in ((inner, "the inner packet's addresses, 198.51.100.1 -> 198.51.100.2"),
                         (inner[4:] + inner[:4], "the inner packet's addresses, 198.51.100.2 "
                          "-> 198.51.100.1"),
                         (PATTERN, f"ping's data {PATTERN.decode()!r}")):
        if any(needle in datagram for datagram in datagrams):
            raise Failed(f"the cable carried {what}, in the clear",
                         "no byte of the inner packet can be read on the cable")


def pair_up(datagrams: list, packets: list, sender: str) -> list:
    """(datagram, the packet inside it), for what `sender` read from its TUN and sent."""
    if len(datagrams) != len(packets):
        raise Failed(f"{sender} read {len(packets)} packets from its TUN and sent "
                     f"{len(datagrams)} datagrams", "one datagram for every packet")
    return list(zip(datagrams, packets))


def check_keystreams(pairs: list) -> None:
    """Two datagrams enciphered with the same keystream: their XOR, at the place where the
    packets lie, is the XOR of the two packets. Look for that at every place."""
    for i, (one, packet) in enumerate(pairs):
        for other, other_packet in pairs[i + 1:]:
            length = min(len(packet), len(other_packet), 40)
            if length < 20:
                continue
            clear = xor(packet[:length], other_packet[:length])
            for place in range(0, min(len(one), len(other)) - length + 1):
                if xor(one[place:place + length], other[place:place + length]) == clear:
                    raise Failed("two datagrams were enciphered with the same keystream: XOR "
                                 "them and the keystream cancels out, leaving the XOR of the "
                                 "two packets (both hosts' clocks read the same, and a "
                                 "restarted)", "each datagram gets a keystream of its own: "
                                 "not in both directions, not after a restart")


def xor(one: bytes, other: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(one, other))


# --- The ladder --------------------------------------------------------------------------

RUNGS: Sequence[tuple] = (
    ("keep-alive", check_keepalive, "1. keep-alive"),
    ("authenticate", check_authenticate, "2. authenticate"),
    ("replay", check_replay, "3. replay"),
    ("roam", check_roam, "4. roam"),
    ("encrypt", check_encrypt, "5. encrypt"),
)


# Part two (tests/exercises/part-two.md): rungs 9 to 12 are checked by exercises_wireguard.py,
# against a real WireGuard. Rung 12 takes minutes: it runs only when asked for by number.
PART_TWO = {9: ("handshake", "9. the handshake"), 10: ("transport", "10. transport"),
            11: ("responder", "11. responder"), 12: ("timers", "12. timers")}
PART_TWO_GUIDE = "tests/exercises/part-two.md"


def check(rung: int, program: Path) -> Optional[Failed]:
    """Check one rung (1 to 5, 9 to 12); None if it passes."""
    if rung in PART_TWO:
        return exercises_wireguard.check(rung, program)
    try:
        RUNGS[rung - 1][1](program)
    except Failed as failure:
        return failure
    except (TimeoutError, subprocess.TimeoutExpired) as error:
        return Failed(f"the check timed out: {error}", "tinyvpn keeps answering")
    return None


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="Check the exercises of " + GUIDE)
    parser.add_argument("rungs", nargs="?", type=int, default=len(RUNGS),
                        choices=[*range(1, len(RUNGS) + 1), *PART_TWO],
                        metavar="N", help="check rungs 1 to N (default: all 5)")
    parser.add_argument("--program", type=Path, default=TINYVPN,
                        help="the tinyvpn.py to check (default: the checkout's)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("exercises: run as root: the checks create network namespaces and TUNs")
    missing = netns.missing_tools("ip", "ping")
    if missing:
        sys.exit(f"exercises: {' and '.join(missing)} missing: apt-get install iproute2 "
                 "iputils-ping")
    print(f"Checking {args.program} against rungs 1 to {args.rungs} ({GUIDE})", flush=True)
    for rung in [n for n in [*range(1, len(RUNGS) + 1), *PART_TWO] if n <= args.rungs]:
        name, section = PART_TWO[rung] if rung in PART_TWO else RUNGS[rung - 1][::2]
        guide = PART_TWO_GUIDE if rung in PART_TWO else GUIDE
        started = time.monotonic()
        failure = check(rung, args.program)
        took = f"{time.monotonic() - started:4.1f} s"
        if failure is None:
            print(f"  rung {rung}  {name:<13} passed   {took}", flush=True)
            continue
        print(f"  rung {rung}  {name:<13} FAILED   {took}\n"
              f"      what happened: {failure.happened}\n"
              f"      what should:   {failure.should}\n"
              f"      reread:        {guide}, \"{failure.section or section}\"", flush=True)
        print(f"Stopped at rung {rung}: {rung - 1} of {args.rungs} passed.")
        return 1
    print(f"All {args.rungs} rungs passed." if args.rungs > 1 else "Rung 1 passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
