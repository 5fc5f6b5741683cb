"""Part one of the ladder (tests/ladder/part-one.md, checked by tests/ladder/part_one.py,
rungs 1 to 5) keeps its promise to a learner:

- its reference solutions are small;
- the shipped tinyvpn.py fails every rung, each because the option it needs is not there yet;
- a learner's run of the checker, on the shipped file and on the solved one, reads as the
  guide shows it;
- plausible wrong solutions (a reference solution with one mistake a learner might make) are
  caught, each with words that name the mistake;
- the demo with a key shows mallory dropped; the checks' NATs do what the checks rely on.

What holds for every rung (the table, the climb from solution to solution, a solved file still
passing the tunnel tests) is in test_ladder.py. These need root (see conftest.py). The ones
marked `ladder` take about five minutes; .ci/run runs them once, on the Python of the README's
command.
"""

import os
import subprocess
import sys
from pathlib import Path

import netns
import part_one
import pytest
import rungs
from conftest import SOLUTIONS, Solved
from netns import TINYVPN
from rungs import changed_lines

TESTS = Path(__file__).resolve().parent



def test_part_one_has_five_small_reference_solutions() -> None:
    assert [patch.name for patch in SOLUTIONS[:5]] == [
        "01-keepalive.patch", "02-authenticate.patch", "03-replay.patch", "04-roam.patch",
        "05-encrypt.patch"]
    sizes = {patch.name: changed_lines(patch) for patch in SOLUTIONS[:5]}
    assert all(size <= 50 for size in sizes.values()), sizes  # a bigger one: fix the design


@pytest.mark.parametrize("rung, option", [(1, "--keepalive"), (2, "--key"), (3, "--key"),
                                          (4, "--key"), (5, "--key")])
def test_the_shipped_file_fails_every_rung_for_want_of_its_option(
        root: None, rung: int, option: str) -> None:
    failure = rungs.check(rung, TINYVPN)
    assert failure is not None
    assert failure.happened.startswith(f"tinyvpn has no {option} option yet")


def test_a_learner_runs_the_checker_on_the_shipped_file(root: None) -> None:
    run = subprocess.run([sys.executable, str(TESTS / "ladder" / "check.py")], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1
    assert "rung 1  keep-alive    FAILED" in run.stdout
    assert "reread:        tests/ladder/part-one.md, \"1. keep-alive\"" in run.stdout
    assert run.stdout.endswith("Stopped at rung 1: 0 of 5 passed.\n")


def test_a_learner_runs_the_checker_on_the_solved_file(root: None, solved: Solved) -> None:
    program = solved(5)
    run = subprocess.run([sys.executable, str(TESTS / "ladder" / "check.py"), "--program",
                          str(program)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for rung, name in enumerate(["keep-alive", "authenticate", "replay", "roam", "encrypt"], 1):
        assert f"rung {rung}  {name:<13} passed" in run.stdout
    assert run.stdout.endswith("All 5 rungs passed.\n")


KEEPALIVE_LIKE_ANY = """\
            return "no valid tag"  # checked first: only the peer may move the window
"""
KEEPALIVE_NOT_NUMBERED = KEEPALIVE_LIKE_ANY + """\
        if len(datagram) == COUNTER + TAG:
            return ""  # a keep-alive: nothing in it to replay
"""
WINDOW_OF_ANY_RUN = """\
        return "" if self.is_new(int.from_bytes(data[:COUNTER], "big")) else "replay"
"""
SHIFT = "self.seen = (self.seen << min(number - self.highest, window) | 1) % 2**window"
CHECK_TAG_THEN_WINDOW = """\
        if len(datagram) < COUNTER + TAG or not hmac.compare_digest(tag, self.tag(data)):
            return "no valid tag"  # checked first: only the peer may move the window
        return "" if self.is_new(int.from_bytes(data[:COUNTER], "big")) else "replay"
"""
CHECK_WINDOW_THEN_TAG = """\
        if not self.is_new(int.from_bytes(data[:COUNTER], "big")):
            return "replay"
        if len(datagram) < COUNTER + TAG or not hmac.compare_digest(tag, self.tag(data)):
            return "no valid tag"
        return ""
"""

# A reference solution with one plausible mistake: (rung, mistake, the text it replaces, what
# replaces it, words the checker's "what happened" must hold: one string, or several).
WRONG = [
    # A program that dies is named first, with its error, before any symptom.
    (1, "a syntax error, with --keepalive done", "\n\n\ndef seconds(", "\n\n\ndef seconds(:",
     ("tinyvpn.py --help died at once (exit status 1)", "SyntaxError")),
    (1, "a misspelt method on the keep-alive path", "network.send([memoryview(b\"\")])",
     "network.sned([memoryview(b\"\")])",
     ("a's tinyvpn died during the check (exit status 1)", "AttributeError", "sned")),
    (2, "the datagram unpacked before its length is checked",
     "            packet, tag = datagram[:-TAG], datagram[-TAG:]\n",
     "            packet, tag = datagram[:-TAG], datagram[-TAG:]\n"
     "            struct.unpack(\"!BB\", datagram[:2])  # the IP version, to show it\n",
     ("b's tinyvpn died during the check (exit status 1)",
      "struct.error: unpack requires a buffer of 2 bytes")),
    # The rest, by rung.
    (1, "keep-alives written to the TUN",
     "if packet:  # an empty datagram is a keep-alive, for nobody\n"
     "                os.write(self.write_fd, packet)",
     "os.write(self.write_fd, packet)", "b's -d line for a keep-alive"),
    (1, "a timer that sending does not reset",
     "network.send(local.read())  # the packets waiting -> a datagram each, to the peer\n"
     "            last_sent = time.monotonic()\n",
     "network.send(local.read())\n", "while it was sending a ping every 0.2 s"),
    (1, "a polling loop", "select.select([local, network, wakeup], [], [], timeout)",
     "select.select([local, network, wakeup], [], [], 0.01 if keepalive else None)",
     "a polling loop"),
    (1, "-d says keepalive", "return \"keep-alive\"", "return \"keepalive\"",
     "b's -d line for a keep-alive"),
    (1, "keep-alives sent from a socket of their own", "network.send([memoryview(b\"\")])",
     "socket.socket(network.sock.family, socket.SOCK_DGRAM).sendto(b\"\", network.peer)",
     "b's pings to a got no answer: a's NAT"),
    (2, "a bad tag is reported, and the packet written anyway",
     "            if len(datagram) >= TAG and hmac.compare_digest(tag, self.tag(packet)):\n"
     "                yield packet, sender\n"
     "            elif self.network.log:\n"
     "                self.network.log.received(datagram, sender, \"no valid tag\")\n",
     "            if not (len(datagram) >= TAG and hmac.compare_digest(tag, self.tag(packet))):\n"
     "                if self.network.log:\n"
     "                    self.network.log.received(datagram, sender, \"no valid tag\")\n"
     "            yield packet, sender\n",
     "mallory's forged echo request reached b's TUN"),
    (2, "a datagram shorter than a tag is let through",
     "if len(datagram) >= TAG and hmac.compare_digest(tag, self.tag(packet)):",
     "if len(datagram) < TAG or hmac.compare_digest(tag, self.tag(packet)):",
     "b's -d lines for mallory's 6 datagrams"),
    (2, "keep-alives sent without a tag", "network.send([memoryview(b\"\")])",
     "getattr(network, \"network\", network).send([memoryview(b\"\")])",
     "a sent a datagram of 0 bytes whose last 16 bytes are not the tag"),
    (2, "a key of 15 bytes accepted", "    if len(key) < 16:\n", "    if len(key) < 1:\n",
     "given a key file of 15 bytes"),
    (2, "a key of 16 bytes refused", "    if len(key) < 16:\n", "    if len(key) <= 16:\n",
     "given a key file of 16 bytes"),
    (2, "the key file's newline stripped", "key = file.read()", "key = file.read().strip()",
     "less the newline at their end"),
    (2, "a tag compared in its first 15 bytes", "hmac.compare_digest(tag, self.tag(packet))",
     "hmac.compare_digest(tag[:15], self.tag(packet)[:15])", "the last byte of its tag changed"),
    (2, "a tag compared from its second byte", "hmac.compare_digest(tag, self.tag(packet))",
     "hmac.compare_digest(tag[1:], self.tag(packet)[1:])", "the first byte of its tag changed"),
    (3, "a window that drops reordered datagrams",
     "if age >= window or self.seen >> age & 1:", "if age >= 0:",
     "b did not accept one 63 behind the newest"),
    (3, "a window with no lower edge", "if age >= window or self.seen >> age & 1:",
     "if self.seen >> age & 1:", "b accepted one 64 behind the newest"),
    (3, "a window one too wide", "if age >= window or", "if age > window or",
     "b accepted one 64 behind the newest"),
    (3, "a window one too narrow", "if age >= window or", "if age >= window - 1 or",
     "b did not accept one 63 behind the newest"),
    (3, "a move by 64 that shifts by nothing", "min(number - self.highest, window)",
     "(number - self.highest) % window",
     "b did not accept one 63 behind the new highest, never seen (after a move of 64)"),
    (3, "a move by 64 or more that forgets the new highest", SHIFT,
     "self.seen = (self.seen << (number - self.highest) | 1) % 2**window "
     "if number - self.highest < window else 0",
     "mallory sent b again the first datagram a had sent, and b took it"),
    (3, "replayed keep-alives taken", KEEPALIVE_LIKE_ANY, KEEPALIVE_NOT_NUMBERED,
     "mallory sent b again the keep-alives a had sent, and b took them"),
    (3, "the window checked before the tag, seen at rung 2", CHECK_TAG_THEN_WINDOW,
     CHECK_WINDOW_THEN_TAG, "a's datagrams each carried the right tag and a number of their "
     "own, and b dropped one as a replay"),
    (3, "the window moved before the tag is checked", CHECK_TAG_THEN_WINDOW,
     CHECK_WINDOW_THEN_TAG,
     "after mallory sent one datagram numbered 2^64 - 1 with a wrong tag"),
    (3, "a counter that starts at 0", "self.counter = time.time_ns()", "self.counter = 0",
     "a's first number was"),
    (4, "the peer follows unauthenticated datagrams",
     "            dropped = self.check(datagram)\n",
     "            dropped = self.check(datagram)\n            self.network.peer = sender\n",
     "after mallory (192.0.2.3) sent b datagrams with wrong tags"),
    (4, "the peer follows replays",
     "            dropped = self.check(datagram)\n",
     "            dropped = self.check(datagram)\n"
     "            if dropped == \"replay\":\n                self.network.peer = sender\n",
     "datagrams of a's, caught and replayed"),
    (4, "the peer follows datagrams without --key too",
     "                local.write(packet, sender)\n",
     "                getattr(network, \"network\", network).peer = sender\n"
     "                local.write(packet, sender)\n",
     "b, started without --key, sent its packets for a to mallory"),
    (4, "replayed keep-alives move the peer", KEEPALIVE_LIKE_ANY, KEEPALIVE_NOT_NUMBERED,
     "a keep-alive of a's, caught and replayed"),
    (5, "the counter alone as the nonce", "self.run = os.urandom(RUN)",
     "self.run = bytes(RUN)", "two datagrams were enciphered with the same keystream"),
    (5, "a nonce for each direction, not for each run", "self.run = os.urandom(RUN)",
     "self.run = network.peer[0].encode()[-RUN:]",
     "two datagrams were enciphered with the same keystream"),
    (5, "a new window for each run of the peer", WINDOW_OF_ANY_RUN,
     "        if data[COUNTER:COUNTER + RUN] != getattr(self, \"peer_run\", b\"\"):\n"
     "            self.highest = self.seen = 0  # a new run of the peer: a new window\n"
     "            self.peer_run = bytes(data[COUNTER:COUNTER + RUN])\n" + WINDOW_OF_ANY_RUN,
     "a number it had seen before the restart"),
    (5, "the IP header left in the clear",
     "nonce + xor(packet, self.keystream(nonce, len(packet)))",
     "nonce + bytes(packet[:20]) + xor(packet[20:], self.keystream(nonce, len(packet) - 20))",
     "the cable carried the inner packet's addresses"),
]


# Mistakes that show below their own rung: the rung checked, and the section to reread.
SEEN_AT = {"the window checked before the tag, seen at rung 2": (2, "3. replay")}


@pytest.mark.ladder
@pytest.mark.parametrize("rung, mistake, text, wrong, words", WRONG,
                         ids=[f"{rung}: {mistake}" for rung, mistake, *_ in WRONG])
def test_a_plausible_wrong_solution_is_caught(root: None, solved: Solved, tmp_path: Path,
                                             rung: int, mistake: str, text: str, wrong: str,
                                             words: "str | tuple") -> None:
    solution = solved(rung).read_text()
    if mistake == "the IP header left in the clear":  # the receiving side makes it too
        solution = solution.replace(
            "yield memoryview(xor(secret, self.keystream(nonce, len(secret)))), sender",
            "yield memoryview(bytes(secret[:20]) + xor(secret[20:], self.keystream(nonce, "
            "max(0, len(secret) - 20)))), sender")
    assert solution.count(text) == 1, f"the mistake no longer fits solution {rung}"
    program = tmp_path / "tinyvpn.py"
    program.write_text(solution.replace(text, wrong))
    checked, section = SEEN_AT.get(mistake, (rung, rungs.rung(rung).section))
    failure = rungs.check(checked, program)
    assert failure is not None, f"{mistake}: passed rung {checked}"
    for word in (words,) if isinstance(words, str) else words:
        assert word in failure.happened
    assert (failure.section or rungs.rung(checked).section) == section


def test_the_demo_with_a_key_shows_mallory_dropped_and_the_cable_unreadable(
        root: None, solved: Solved, tmp_path: Path) -> None:
    key = tmp_path / "tinyvpn.key"
    key.write_bytes(os.urandom(32))
    environment = {**os.environ, "TINYVPN_PROGRAM": str(solved(5))}
    demo = subprocess.run([sys.executable, str(TESTS / "lab" / "demo.py"), "--options",
                           f"--key {key}"], env=environment, capture_output=True, text=True,
                          timeout=90)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "3 packets transmitted, 3 received" in demo.stdout
    assert "(from 192.0.2.3:" in demo.stdout and "DROPPED: no valid tag" in demo.stdout
    assert "No answer reached a: b's tinyvpn dropped mallory's datagram" in demo.stdout
    assert "198.51.100.2 (c6 33 64 01 c6 33 64 02) are nowhere in it." in demo.stdout


def test_the_checks_nat_forgets_an_idle_tunnel(root: None) -> None:
    """What rung 1's check relies on: behind the NAT of the checks, without keep-alives, b
    cannot reach a once the tunnel has idled past the NAT's timeout."""
    with part_one.lab(TINYVPN, nat="kept") as tunnel:
        for side in "ab":
            tunnel.start(side)
        netns.bring_up_tunnel(tunnel.hosts)
        assert tunnel.ping("a", 2) and tunnel.ping("b", 2)
        part_one.wait_until_idle(tunnel, part_one.FORGET + 0.5)
        assert not tunnel.ping("b", 2)


def test_the_checks_random_nat_sends_a_from_a_port_b_does_not_know(root: None) -> None:
    """What rung 4's check relies on: behind the NAT that picks a port per mapping, a tinyvpn
    that does not follow its peer answers to a port that leads nowhere."""
    with part_one.lab(TINYVPN, nat="random") as tunnel:
        for side in "ab":
            tunnel.start(side)
        netns.bring_up_tunnel(tunnel.hosts)
        assert not tunnel.ping("a", 2)
        assert tunnel.cable.ports(part_one.A, part_one.B)[-1][0] != netns.PORT
        assert tunnel.cable.ports(part_one.B, part_one.A)[-1][1] == netns.PORT
