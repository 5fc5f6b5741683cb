"""Part one's checks (tests/ladder/part-one.md): rungs 1 to 5, which turn tinyvpn into a
tunnel mallory cannot use. The runner, tests/ladder/check.py, calls them through the ladder's
table (tests/ladder/rungs.py):

    1. keep-alive    check_keepalive      --keepalive SECONDS, behind a NAT that forgets
    2. authenticate  check_authenticate   --key FILE: an HMAC tag on every datagram
    3. replay        check_replay         a number in every datagram, a window of 64
    4. roam          check_roam           the peer follows authentic, new datagrams
    5. encrypt       check_encrypt        a keystream of its own for every datagram

Each check runs the program for real, as the demo does: two hosts (network namespaces) joined
by a cable, in rungs 1 and 4 with a NAT in front of a (nftables), real ping and TCP through the
tunnel, mallory forging and replaying datagrams from a third host, and the cable and the TUN
interfaces watched by packet sockets (tests/ladder/recorder.py). It judges only what can be
seen from outside (datagrams on the cable, packets on a TUN, the exit status, the words of
-d): any names and any layout of the code pass. A tinyvpn that dies is named first, with its
error; a datagram wrongly dropped is judged by the checker itself, which has the key, and the
failure names the rule that was broken. Standard library only; runs ip, ping, nft.
"""

import hmac
import io
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Callable, Optional

import harness
import netns
import wire
from harness import Failed, crash, died
from netns import MALLORY, TUNNEL, UNDERLAY, Hosts
from recorder import Recorder
from traffic import tcp_transfer
from wire import echo

GUIDE = "tests/ladder/part-one.md"
A, B = UNDERLAY["a"][0], UNDERLAY["b"][0]
TAG = 16
FORGET = 3  # seconds after which a's NAT, in the checks that have one, forgets a's mapping


# --- Running the program under test ------------------------------------------------------

# The same clock, stopped, on both hosts: counters that start from it start equal.
STOPPED_AT = 1_700_000_000_000_000_000
STOPPED_CLOCK = (f"import runpy, sys, time; time.time_ns = lambda: {STOPPED_AT}; "
                 "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


class Lab:
    """Two hosts with the program under test on each, and what the check needs to watch."""

    def __init__(self, hosts: Hosts, program: Path, stopped_clock: bool = False,
                 nat: Optional[str] = None) -> None:
        self.hosts = hosts
        if nat:  # a behind a home router: "kept" its port for the tunnel, "random" a new one
            netns.add_nat(hosts, FORGET, random_ports=nat == "random")
        self.command: tuple = (sys.executable, str(program))
        if stopped_clock:
            self.command = (sys.executable, "-c", STOPPED_CLOCK, str(program))
        # A key as `echo` makes one, a newline at its end: the key is the file's bytes, all.
        self.key = (secrets.token_hex(16) + "\n").encode()
        self.key_file = hosts.logs / "tinyvpn.key"
        self.key_file.write_bytes(self.key)
        self.cable = Recorder(hosts, "b", f"{hosts.prefix}v")  # b's end sees both ways
        self.processes: dict = {}
        self.keepalives: list = []  # a's, caught while its TUN was down: see keyed()

    def start(self, side: str, *options: str) -> subprocess.Popen:
        """tinyvpn -d with `options` on `side`; Failed if it does not start."""
        options = tuple(str(self.key_file) if o == "KEY" else o for o in options)
        try:
            process = netns.start_tinyvpn(self.hosts, side, "-d", *options,
                                          program=self.command)
        except RuntimeError:  # it exited: start_command had listed it last
            raise self.why_not_started(side, options, self.hosts.processes[-1]) from None
        self.processes[side] = process
        return process

    def why_not_started(self, side: str, options: tuple, process: subprocess.Popen) -> Failed:
        """A program that cannot even show its --help is broken; one whose --help lacks an
        option has not got it yet; any other that exits at start died."""
        helped = netns.run(self.hosts, side, *self.command, "--help", check=False, timeout=10)
        if helped.returncode != 0:
            return crash("tinyvpn.py --help", helped.returncode, helped.stderr, when="at once",
                         should="--help shows the usage: fix this error first")
        unknown = [option for option in options if option.startswith("--")
                   and not re.search(re.escape(option) + r"\b(?!-)", helped.stdout)]
        if unknown:
            return Failed(f"tinyvpn has no {unknown[0]} option yet: --help does not list it",
                          f"it understands {unknown[0]}, as the rung describes")
        return crash(f"{side}'s tinyvpn", process.returncode, self.said(side),
                     when=f"at start, run with -d {shlex.join(options)}")

    def crashed(self, grace: float = 0) -> Optional[Failed]:
        """The first tinyvpn under test that died (and was not stopped by the check), named
        with its error; waits up to `grace` seconds for one that may be dying."""
        deadline = time.monotonic() + grace
        while True:
            for side, process in self.processes.items():
                failure = died(f"{side}'s tinyvpn", process, self.said(side))
                if failure:
                    return failure
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def keyed(self, *options_of_a: str) -> Recorder:
        """Both tinyvpns with --key (a with `options_of_a` too), the tunnel up, and a ping
        across; returns a recorder on b's TUN."""
        self.start("b", "--key", "KEY")  # first: bound, it hears every datagram a sends
        self.start("a", "--key", "KEY", *options_of_a)
        b_tun = Recorder(self.hosts, "b", self.hosts.tun)
        if "--keepalive" in options_of_a:  # the TUNs are down: all a sends is keep-alives
            netns.wait_for(lambda: len(self.cable.datagrams(A, B)) >= 2, "a's keep-alives", 3)
            self.keepalives = self.cable.datagrams(A, B)
        netns.bring_up_tunnel(self.hosts)
        if not self.ping("a"):
            raise self.wrongly_dropped() or Failed(
                "with the same --key on both hosts, a's pings got no answer",
                "an authentic datagram is written to the TUN as before")
        return b_tun

    def wrongly_dropped(self, side: str = "b") -> Optional[Failed]:
        """The rule `side` applied wrongly, if it dropped a datagram of the other side's that
        the cable shows was sent once and carried the right tag."""
        other = netns.OTHER[side]
        sent = self.cable.datagrams(UNDERLAY[other][0], UNDERLAY[side][0])
        check_tags(self.key, sent, other)
        dropped = [line.strip() for line in self.lines_from(side, UNDERLAY[other][0])
                   if "DROPPED" in line and "write E" not in line]
        if not dropped:
            return None
        if "replay" not in dropped[0]:
            return Failed(f"{other}'s datagrams all carried the right tag, and {side} dropped "
                          f"one: {dropped[0]}", "a datagram whose tag is HMAC-SHA256(key, all "
                          "the bytes before it) is authentic: the key is the file's bytes, all "
                          "of them", section="2. authenticate")
        numbers = [datagram[:8] for datagram in sent]
        if len(set(numbers)) < len(numbers):
            return Failed(f"{other} sent two datagrams with the same number, and {side} rightly "
                          f"dropped the second: {dropped[0]}", "each datagram gets a number "
                          "of its own: one more than the last", section="3. replay")
        return Failed(f"{other}'s datagrams each carried the right tag and a number of their "
                      f"own, and {side} dropped one as a replay: {dropped[0]}",
                      "a replay is a number seen before, or 64 or more below the highest; and "
                      "only a datagram whose tag verifies may move the window: the tag is "
                      "checked first", section="3. replay")

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
        netns.sh(*netns.in_namespace(self.hosts, "m"), sys.executable, wire.SCRIPT, "send", B,
                 *(payload.hex() for payload in payloads))


@contextmanager
def lab(program: Path, stopped_clock: bool = False, nat: Optional[str] = None) -> Iterator[Lab]:
    """A Lab for one check. A tinyvpn that died during it is named first, whatever the check
    saw next: a missing answer is only the symptom."""
    with netns.two_hosts() as hosts:
        tunnel = Lab(hosts, program, stopped_clock, nat)
        try:
            yield tunnel
        except Exception as symptom:
            harness.keep_cable(tunnel.cable.packets)
            crashed = tunnel.crashed(grace=0.3)
            if crashed:
                raise crashed from symptom
            raise
        crashed = tunnel.crashed()
        if crashed:
            harness.keep_cable(tunnel.cable.packets)
            raise crashed


def dropped_in_summary(summary: str) -> int:
    """The packets a summary line ('... dropped: no valid tag 2, write EIO (...) 1') counts."""
    _, _, counts = summary.partition("dropped:")
    return sum(int(n) for n in re.findall(r"(\d+)(?=,|$)", counts.strip()))


def tag_of(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")[:TAG]


def check_tags(key: bytes, datagrams: list, sender: str) -> None:
    """Every datagram `sender` sent ends with the tag of all the bytes before it."""
    for datagram in datagrams:
        if len(datagram) >= TAG and tag_of(key, datagram[:-TAG]) == datagram[-TAG:]:
            continue
        if len(datagram) >= TAG and tag_of(key.strip(), datagram[:-TAG]) == datagram[-TAG:]:
            raise Failed(f"{sender}'s tags were made with the key file's bytes less the "
                         "newline at their end", "the key is the file's bytes, exactly as they "
                         "are, newline and all (echo puts one there)", section="2. authenticate")
        raise Failed(f"{sender} sent a datagram of {len(datagram)} bytes whose last 16 bytes "
                     "are not the tag", "every datagram ends with its tag: the first 16 bytes "
                     "of HMAC-SHA256(key, all the bytes before the tag)",
                     section="2. authenticate")


def settle(seconds: float = 0.4) -> None:
    """Give datagrams in flight time to arrive and be handled."""
    time.sleep(seconds)


# --- Rung 1: keep-alive ------------------------------------------------------------------

KEEPALIVE = "keep-alive"  # the word -d prints for one, as the guide writes it


def check_keepalive(program: Path) -> None:
    with lab(program, nat="kept") as tunnel:
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
        wrong = [line for line in lines if "DROP" in line.upper() or KEEPALIVE not in line]
        if not lines or wrong:
            raise Failed("b's -d line for a keep-alive: " + (wrong[0] if wrong else "(none)"),
                         "an empty datagram is a keep-alive: it is not written to the TUN, it "
                         "is no error, and -d says 'keep-alive' (with the hyphen)")
        netns.bring_up_tunnel(tunnel.hosts)
        tunnel.ping("a", 8)
        sent = tunnel.cable.timed(A)
        early = [later - sooner for (sooner, _), (later, payload) in zip(sent, sent[1:])
                 if not payload and later - sooner < 0.4]
        if early:
            raise Failed(f"a sent a keep-alive {early[0]:.2f} s after its last datagram (while "
                         "it was sending a ping every 0.2 s)", "sending resets the timer: a "
                         "keep-alive goes out only after 0.5 s of sending nothing")
        idle = wait_until_idle(tunnel, FORGET + 0.5)
        if not tunnel.ping("b", 2):
            raise Failed(f"the tunnel carried no packet for {idle:.1f} s; then b's pings to a "
                         f"got no answer: a's NAT, which forgets a mapping after {FORGET} s of "
                         "silence, had forgotten the tunnel's", "a's keep-alives, sent from "
                         "the tunnel's own socket, keep the mapping alive: b can reach a")


def wait_until_idle(tunnel: Lab, seconds: float) -> float:
    """Wait until the tunnel has carried no packet for `seconds` (a's empty keep-alives do not
    count); return how long it has been idle."""
    def idle() -> float:
        carried = [s.time for s in tunnel.cable.seen()
                   if s.udp and A in s.udp[:2] and B in s.udp[:2] and s.udp[2]]
        return time.time() - max(carried, default=0)
    netns.wait_for(lambda: idle() >= seconds, "the tunnel to be idle", timeout=seconds + 5)
    return idle()


def context_switches(pid: int) -> int:
    """How often the process has gone to sleep and woken up: /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))  # type: ignore


# --- Rung 2: authenticate ----------------------------------------------------------------


def check_authenticate(program: Path) -> None:
    with lab(program) as tunnel:
        b_tun = tunnel.keyed("--keepalive", "0.5")
        transfer_intact(tunnel.hosts, "with --key")
        check_tags(tunnel.key, tunnel.cable.datagrams(A, B), "a")
        netns.wait_for(lambda: any(KEEPALIVE in line for line in tunnel.lines_from("b", A)),
                       "b to show a keep-alive from a", timeout=3)
        forged_count = forge_from_mallory(tunnel, b_tun) + change_a_tag_byte(tunnel, b_tun)
        lines = tunnel.lines_from("b", MALLORY)
        if len(lines) < forged_count or not all("DROPPED" in line for line in lines):
            raise Failed(f"b's -d lines for mallory's {forged_count} datagrams (forged, empty, "
                         "15 bytes, tags changed):\n"
                         + "\n".join(f"        {line}" for line in lines or ["(none)"]),
                         "each one is shown as DROPPED, with the reason: a datagram too short "
                         "to hold a tag has none")
        wrong = tunnel.wrongly_dropped()
        if wrong:
            raise wrong
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
    netns.sh(*netns.in_namespace(tunnel.hosts, "m"), sys.executable, wire.SCRIPT, "forge", B,
             TUNNEL["a"][0], TUNNEL["b"][0])
    tunnel.from_mallory(b"", bytes.fromhex("450000") + bytes(12))
    settle()
    if any((echo(packet) or (0, 0))[1] == 0x6D6D for packet in b_tun.written(since)):
        answered = any((echo(packet) or (8, 0)) == (0, 0x6D6D, 1) for packet in b_tun.read())
        raise Failed("mallory's forged echo request reached b's TUN"
                     + (": b's kernel answered it" if answered else ""),
                     "a datagram whose tag does not verify is dropped before anything else")
    return 3


def change_a_tag_byte(tunnel: Lab, b_tun: Recorder) -> int:
    """Three of a's TCP segments, each sent again by mallory with one byte of its tag changed:
    the first, one in the middle, the last. None may be written to b's TUN. Returns 3."""
    longest = sorted(tunnel.cable.datagrams(A, B), key=len)[-3:]  # TCP data, a to b
    changed = {where: datagram[:at] + bytes([datagram[at] ^ 0x01]) + datagram[at + 1:]
               for (where, place), datagram in zip((("first", 0), ("9th", 8), ("last", 15)),
                                                   longest)
               for at in [len(datagram) - TAG + place]}
    since = time.time()
    tunnel.from_mallory(*changed.values())
    settle()
    if not [packet for packet in b_tun.written(since) if len(packet) > 1000]:
        return len(changed)
    for where, datagram in changed.items():  # which one? (a learner will want to know)
        since = time.time()
        tunnel.from_mallory(datagram)
        settle()
        if [packet for packet in b_tun.written(since) if len(packet) > 1000]:
            raise Failed(f"mallory sent b one of a's datagrams with the {where} byte of its tag "
                         "changed, and b wrote the packet inside into its TUN",
                         "a tag is right only when all 16 of its bytes are")
    raise Failed("mallory sent b three of a's datagrams, each with one byte of its tag "
                 "changed, and b wrote a packet inside one into its TUN",
                 "a tag is right only when all 16 of its bytes are")


def check_bad_keys(tunnel: Lab) -> None:
    short, enough = tunnel.hosts.logs / "short.key", tunnel.hosts.logs / "enough.key"
    short.write_bytes(b"0123456789abcde")
    enough.write_bytes(b"0123456789abcdef")
    try:  # in mallory's host, where port 5000 is free
        netns.stop(netns.start_tinyvpn(tunnel.hosts, "m", "--key", str(enough), peer=B,
                                       interface="stdio", program=tunnel.command))
    except RuntimeError:
        said = netns.output(tunnel.hosts, "tinyvpn-m").strip()
        raise Failed(f"given a key file of 16 bytes, tinyvpn exited and said: {said[-300:]}",
                     "16 bytes are enough: a key file of 16 bytes or more is a key") from None
    for path, what, words in ((short, "a key file of 15 bytes", "16"),
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
        b_tun = tunnel.keyed("--keepalive", "0.5")
        caught = tunnel.cable.datagrams(A, B)
        check_counters(tunnel, caught)
        replayed(tunnel, b_tun, caught, "mallory sent b again the datagrams a had sent, "
                 f"{len(tunnel.keepalives)} keep-alives among them,")
        check_replays_shown(tunnel, caught)
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


def check_replays_shown(tunnel: Lab, caught: list) -> None:
    """b's -d line for each datagram mallory replayed says DROPPED: replay, keep-alives' too."""
    lines = tunnel.lines_from("b", MALLORY)
    taken = [index for index, line in enumerate(lines) if "DROPPED: replay" not in line]
    if taken == [0]:
        raise Failed(f"mallory sent b again the first datagram a had sent, and b took it: "
                     f"{lines[0]}", "the first datagram sets the highest number, and it has "
                     "been seen: sent again, it is dropped like any other, DROPPED: replay")
    if taken and all(KEEPALIVE in lines[index] for index in taken):
        raise Failed(f"mallory sent b again the keep-alives a had sent, and b took them: "
                     f"{lines[taken[0]]}", "a keep-alive is numbered and tagged like any "
                     "datagram, and a replayed one is dropped like any other: DROPPED: replay")
    if taken:
        raise Failed(f"b's -d line for a datagram a had sent, which mallory sent again: "
                     f"{lines[taken[0]]}", "each is shown as DROPPED: replay")
    if len(lines) < len(caught):
        raise Failed(f"mallory sent b again {len(caught)} datagrams a had sent, and b's -d "
                     f"showed {len(lines)} of them", "each is shown as DROPPED: replay")


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


# Datagrams a sent that b never saw, sent to b by mallory in this order: (how far each is
# past the first of them, whether b must accept it, what it is). The window's edges.
WINDOW_PROBES = (
    (69, True, "the newest"),
    (5, False, "64 behind the newest, never seen: just outside the window"),
    (6, True, "63 behind the newest, never seen: the window's last place"),
    (6, False, "63 behind the newest, a second time"),
    (39, True, "30 behind the newest, never seen"),
    (69, False, "the newest, a second time"),
    (133, True, "64 above the highest: the window moves up by exactly 64"),
    (69, False, "the one that was the highest, now 64 behind"),
    (70, True, "63 behind the new highest, never seen (after a move of 64)"),
    (133, False, "the new highest, a second time (after a move of 64)"),
    (198, True, "65 above the highest: the window moves up by more than 64"),
    (133, False, "the one that was the highest, now 65 behind"),
    (135, True, "63 behind the new highest, never seen (after a move of 65)"),
    (198, False, "the new highest, a second time (after a move of 65)"),
)
HELD_BACK = 230  # pings: room for the 199 numbers the probes need, and a few keep-alives


def check_window(tunnel: Lab, b_tun: Recorder) -> None:
    """Datagrams that arrive out of order, at the window's edges and after it moves: a's,
    caught on their way to a black hole, and sent to b by mallory."""
    held = hold_back(tunnel)
    base = next((first for first in sorted(held) if all(
        (echo(held.get(first + ahead, (b"", b""))[1]) or (0,))[0] == 8
        for ahead, _, _ in WINDOW_PROBES)), None)
    if base is None:
        raise Failed(f"a's {len(held)} datagrams for {HELD_BACK} pings had no 199 numbers in a "
                     "row", "the number rises by one per datagram")
    since = time.time()
    tunnel.from_mallory(*(held[base + ahead][0] for ahead, _, _ in WINDOW_PROBES))
    expected = {ahead for ahead, accepted, _ in WINDOW_PROBES if accepted}
    written = lambda: [echo(packet) for packet in b_tun.written(since)]  # noqa: E731
    arrives(lambda: len(written()) >= len(expected))
    settle(0.3)
    times = {ahead: written().count(echo(held[base + ahead][1])) for ahead, _, _ in WINDOW_PROBES}
    for ahead, accepted, why in WINDOW_PROBES:
        if accepted and times[ahead] == 0:
            raise Failed(f"of {HELD_BACK} datagrams a sent, b did not accept one {why}",
                         "a datagram within 64 of the highest number seen (highest - 63 ... "
                         "highest), never seen before, is new: reordered, not replayed")
        if not accepted and times[ahead] > (ahead in expected):
            raise Failed(f"of {HELD_BACK} datagrams a sent, b accepted one {why}",
                         "only the 64 numbers ending at the highest seen are remembered; "
                         "anything older, or seen before, is dropped")


def hold_back(tunnel: Lab) -> dict:
    """a pings b HELD_BACK times, and its datagrams go to a MAC address nobody has: b's kernel
    ignores them, and the recorder at b's end of the cable still sees them. Returns, for each
    number, (the datagram, the packet inside it), the packet as a read it from its TUN."""
    hosts, cable = tunnel.hosts, f"{tunnel.hosts.prefix}v"
    a_tun = Recorder(hosts, "a", hosts.tun)
    netns.sh(*netns.in_namespace(hosts, "a"), "ip", "neigh", "replace", B, "lladdr",
             "02:00:00:00:00:09", "dev", cable, "nud", "permanent")
    since = time.time()
    netns.run(hosts, "a", "ping", "-c", str(HELD_BACK), "-i", "0.005", "-W", "0.01",
              TUNNEL["b"][0], check=False)
    settle(0.2)
    until = time.time()
    keepalive = {len(datagram) for datagram in tunnel.keepalives}
    sent = [datagram for datagram in tunnel.cable.datagrams(A, B, since, until)
            if len(datagram) not in keepalive]
    pairs = pair_up(sent, a_tun.read(since, until), "a, its datagrams held back,")
    return {int.from_bytes(datagram[:8], "big"): (datagram, packet)
            for datagram, packet in pairs}


def arrives(condition: Callable[[], bool], timeout: float = 2) -> bool:
    """Whether `condition` becomes true within `timeout` seconds."""
    try:
        netns.wait_for(condition, "", timeout)
    except TimeoutError:
        return False
    return True


# --- Rung 4: roam ------------------------------------------------------------------------


def check_roam(program: Path) -> None:
    # a is behind a NAT that sends each new mapping out from a port of its own.
    with lab(program, nat="random") as tunnel:
        tunnel.start("b", "--key", "KEY")  # first: b must have bound when a's first keep-alive
        a = tunnel.start("a", "--key", "KEY", "--keepalive", "0.5")  # comes (its replay below)
        netns.wait_for(lambda: tunnel.cable.datagrams(A, B), "a's first keep-alive", 3)
        keepalive = tunnel.cable.datagrams(A, B)[0]
        netns.bring_up_tunnel(tunnel.hosts)
        answers_follow(tunnel, "a", "a is behind a NAT, which sends a's datagrams on")
        caught = tunnel.cable.datagrams(A, B)
        netns.add_mallory(tunnel.hosts)
        mallory_cable = Recorder(tunnel.hosts, "b", f"{tunnel.hosts.prefix}m")
        for payloads, what in (([bytes(60), b"", bytes(15)], "datagrams with wrong tags"),
                               (caught[-2:], "datagrams of a's, caught and replayed"),
                               ([keepalive], "a keep-alive of a's, caught and replayed")):
            mallory_moves(tunnel, a, payloads, mallory_cable, what)
        before = tunnel.cable.ports(A, B)[-1][0]
        a.send_signal(signal.SIGSTOP)  # a's laptop sleeps, and its NAT forgets it
        time.sleep(FORGET + 1)
        woke = time.time()
        a.send_signal(signal.SIGCONT)  # a's keep-alive is due: it goes out at once, and the
        netns.wait_for(lambda: tunnel.cable.datagrams(A, B, since=woke),  # NAT picks a port
                       "a's keep-alive after it woke", timeout=3)
        answers_follow(tunnel, "b", f"a slept {FORGET + 1} s, and its NAT forgot it: a's next "
                       f"datagrams left the NAT from a new port, not {before}")
        check_no_roaming_without_a_key(tunnel, mallory_cable)


def mallory_moves(tunnel: Lab, a: subprocess.Popen, payloads: list, mallory_cable: Recorder,
                  what: str) -> None:
    """Mallory sends b `payloads`, then b pings a. a is stopped meanwhile: its keep-alives would
    move a peer that wrongly followed mallory back to a before b's pings go out."""
    a.send_signal(signal.SIGSTOP)
    try:
        tunnel.from_mallory(*payloads)
        settle(0.2)
        tunnel.ping("b", 2)  # no answer: a is stopped
    finally:
        a.send_signal(signal.SIGCONT)
    if mallory_cable.datagrams(B):
        raise Failed(f"after mallory (192.0.2.3) sent b {what}, b sent its packets for a to "
                     "mallory", "only an authentic, new datagram moves the peer")
    answers_follow(tunnel, "a", f"after mallory (192.0.2.3) sent b {what}, a's datagrams "
                   "still came")


def check_no_roaming_without_a_key(tunnel: Lab, mallory_cable: Recorder) -> None:
    """b restarts without --key; mallory's forged echo request must not move its peer."""
    tunnel.stop("b")
    tunnel.start("b")
    for command in netns.tunnel_commands(tunnel.hosts, "b"):
        netns.sh(*command)
    since = time.time()
    netns.sh(*netns.in_namespace(tunnel.hosts, "m"), sys.executable, wire.SCRIPT, "forge", B,
             TUNNEL["a"][0], TUNNEL["b"][0])
    settle()
    if mallory_cable.datagrams(B, since=since):
        raise Failed("b, started without --key, sent its packets for a to mallory after one "
                     "datagram of hers", "without --key nothing moves the peer: anyone could "
                     "move it")


def answers_follow(tunnel: Lab, side: str, how: str) -> None:
    """`side` pings the other; Failed if b's packets for a do not go where a's came from."""
    if tunnel.ping(side, 3) or tunnel.ping(side, 3):  # twice: a busy machine may lose one
        return
    wrong = tunnel.wrongly_dropped()
    if wrong:
        raise wrong
    came_from, went_to = tunnel.cable.ports(A, B)[-1][0], tunnel.cable.ports(B, A)[-1][1]
    raise Failed(f"{how} from {A}:{came_from}; b sent its packets for a to {A}:{went_to}",
                 "b takes the address and port of an authentic, new datagram as the peer's: "
                 "its packets follow a")


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
        before = tunnel.cable.datagrams(A, B, until=restarted)
        lines_before = len(tunnel.lines_from("b", A))
        tunnel.start("a", "--key", "KEY")
        tuns["a"] = Recorder(tunnel.hosts, "a", tunnel.hosts.tun)
        for command in netns.tunnel_commands(tunnel.hosts, "a"):
            netns.sh(*command)
        # Its counter starts again from the same clock: enough pings to pass the old numbers.
        used = max(int.from_bytes(datagram[:8], "big") for datagram in before) - STOPPED_AT
        crossed = " 0 received" not in netns.run(
            tunnel.hosts, "a", "ping", "-c", str(min(used, 100) + 4), "-i", "0.05", "-W", "1",
            "-p", PATTERN.hex(), TUNNEL["b"][0], check=False).stdout
        settle()
        check_restart_on_a_stopped_clock(tunnel, before, lines_before, restarted, crossed)
        until = time.time() - 0.2
        pairs = [*pair_up(on_cable["a"], plain["a"], "a"),
                 *pair_up(on_cable["b"], plain["b"], "b"),
                 *pair_up(tunnel.cable.datagrams(A, since=restarted, until=until + 0.1),
                          tuns["a"].read(until=until), "a after its restart")]
        check_keystreams(pairs)


def check_restart_on_a_stopped_clock(tunnel: Lab, before: list, lines_before: int,
                                     restarted: float, crossed: bool) -> None:
    """a restarted on a clock that stands still: b drops a's datagrams numbered as ones it saw
    before, as replays, and takes them again once a's numbers pass the highest it saw."""
    highest = max(int.from_bytes(datagram[:8], "big") for datagram in before)
    after = tunnel.cable.datagrams(A, B, since=restarted)
    for datagram, line in zip(after, tunnel.lines_from("b", A)[lines_before:]):
        number = int.from_bytes(datagram[:8], "big")
        if number <= highest and "DROPPED: replay" not in line:
            raise Failed(f"a restarted on the clock that stands still; b took a's datagram "
                         f"numbered {number}, a number it had seen before the restart: "
                         f"{line.strip()}", "b drops it as a replay (it cannot tell a restarted "
                         "a from mallory replaying), until a's numbers pass the highest it saw: "
                         "a limit of a key that never changes")
    if not crossed:
        raise Failed(f"a restarted on the clock that stands still and sent b {len(after)} "
                     f"datagrams ({len(before)} before its restart); its pings never got an "
                     "answer", "once a's numbers pass the highest b saw, they are new: the "
                     "tunnel carries packets again")


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


