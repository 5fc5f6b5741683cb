"""The check of rung 14, cookies under load (tests/ladder/part-three.md): the
learner's tinyvpn answers a flood with cookie replies and no DH, and uses a cookie it is
given. Standard library only; it reuses the labs of rungs 9 to 12 (part_two_protocol.py) and
of rung 13 (part_three_routing.py).

    underlay (veth):  a 192.0.2.1     <---->  b 192.0.2.2 (wireguard-go, the check's probes)
                      a 2001:db8:1::1         b 2001:db8:1::2, 2001:db8:1::1:0:0:2 (probes)
                                              b 192.0.2.3 (mallory's flood, and a probe)

As initiator (a's clock the check's, through libfaketime), a talks to the check, which plays a
responder under load: it answers a's initiations with cookie replies, some forged, and then
must see a's next initiation carry mac2 made with the one true cookie for a's latest
initiation; 130 s later by a's clock, a's next initiation must carry none. As responder (its
clock again the check's, so that its cookie secret can be made 130 s old), a is flooded from
mallory's address with FLOOD_RATE initiations a second, each with a valid mac1: replays of one
real initiation, which would cost two X25519 each. Meanwhile the check's probes, from IPv4 and
IPv6 addresses, and wireguard-go, initiate: only an initiation with a valid mac2, made with the
cookie for its very address and port, gets a response. Then rung 13's lab: the learner's
tinyvpn as a hub (--config, two [Peer]s), flooded from mallory's host with one initiation
from her own key (valid mac1; a hub without cookies spends an X25519 on each before it finds
no [Peer] of that key), while wireguard-go spoke a initiates and pings spoke c through it.

The CPU bound, in both modes: the learner's user + system CPU seconds (/proc/PID/stat) over
1.5 s of the flood, once under way, divided by the datagrams it read or sent meanwhile, whichever
is more (its namespace's UDP counters, /proc/PID/net/snmp and snmp6, which no busy machine
delays as it delays mallory's own count), must stay below one X25519 of its own (its x25519(),
timed in a second Python): a cookie reply costs a MAC and an XChaCha20-Poly1305, never a DH.
Per datagram read too, since a DH before the load is judged, on a starved machine, may read
too few to feel the load, and then sends nothing. And it must send at least half as many
datagrams as it read meanwhile: a tinyvpn that answers none spends no CPU on answers either.
"""

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import netns
import part_three_routing as routing
import part_two_protocol as wg
import reference_crypto as crypto
from harness import Failed
from netns import MALLORY, TUNNEL, UNDERLAY, Hosts
from part_three_routing import HUB, INNER
from part_two_protocol import INITIATION, RESPONSE, Clock, WireGuardLab, describe
from reference_crypto import digest, mac

GUIDE = "tests/ladder/part-three.md"
SECTION = "14. cookies under load"  # in GUIDE
A, B = UNDERLAY["a"][0], UNDERLAY["b"][0]
A6, B6 = UNDERLAY["a"][1], UNDERLAY["b"][1]
B6_TOO = "2001:db8:1::1:0:0:2"  # another of b's IPv6 addresses, its last 4 bytes B6's
COOKIE_REPLY = (3).to_bytes(4, "little")
LABEL_COOKIE = b"cookie--"
FLOOD_RATE = 500  # initiations a second: load on any machine (each would cost two X25519)
NOBODY = "192.0.2.9"  # a's PEER as responder: its own initiations reach no one
FLOOD_PORT, PROBE_PORT, OTHER_PORT = 40000, 40001, 40002
AHEAD = 130  # seconds a's clock jumps: past a cookie's 120 s, and its secret's

# Mallory's flood, run in b: one initiation again and again from SOURCE:PORT, FLOOD_RATE a
# second, until SIGTERM; it counts what comes back, by type, and prints the counts as a line of
# JSON every 0.1 s, and at the end.
FLOOD = """
import json, signal, socket, sys, time
source, port, target, rate, message = sys.argv[1], int(sys.argv[2]), sys.argv[3], \\
    int(sys.argv[4]), bytes.fromhex(sys.argv[5])
signal.signal(signal.SIGTERM, signal.default_int_handler)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, port))
sock.setblocking(False)
sent, kinds, started, shown = 0, {}, time.monotonic(), 0.0
def show():
    print(json.dumps({"sent": sent, "kinds": kinds, "seconds": time.monotonic() - started}),
          flush=True)
try:
    while True:
        if time.monotonic() > shown + 0.1:
            show()
            shown = time.monotonic()
        while sent < (time.monotonic() - started) * rate:
            sock.sendto(message, (target, 5000))
            sent += 1
        try:
            while True:
                reply = sock.recv(2048)
                kinds[reply[0]] = kinds.get(reply[0], 0) + 1
        except BlockingIOError:
            time.sleep(0.002)
except KeyboardInterrupt:
    show()
"""
# One probe, run in b: an initiation from SOURCE:PORT (IPv4 or IPv6) to a, and the first
# response or cookie reply naming its sender index that a sends back within PROBE_WAIT seconds
# (hex), if any.
PROBE = """
import socket, sys, time
source, port, target, message, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], \\
    bytes.fromhex(sys.argv[4]), float(sys.argv[5])
family = socket.AF_INET6 if ":" in source else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as sock:
    sock.bind((source, port))
    sock.sendto(message, (target, 5000))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(deadline - time.monotonic())
        try:
            reply = sock.recv(2048)
        except socket.timeout:
            break
        if reply[:4] == bytes([2, 0, 0, 0]) and reply[8:12] == message[4:8] or \\
                reply[:4] == bytes([3, 0, 0, 0]) and reply[4:8] == message[4:8]:
            print(reply.hex())
            break
"""
PROBE_WAIT = 8  # seconds: at once, on an idle machine; a busy one may queue the flood a while
PINGS_AGAIN = 3  # after wireguard-go's handshake under the flood: one answered, at least
# The cost of one of the learner's X25519, in CPU seconds, timed in a second Python.
TIME_X25519 = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("learners", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
scalar, point = os.urandom(32), module.x25519(os.urandom(32), (9).to_bytes(32, "little"))
started = time.process_time()
for _ in range(20):
    module.x25519(scalar, point)
print((time.process_time() - started) / 20)
"""


# --- The cookie reply, as 5.4.7 makes it ------------------------------------------------


def cookie_reply(initiation: bytes, cookie: bytes, responder: bytes,
                 nonce: Optional[bytes] = None) -> bytes:
    """The reply a responder with public key `responder` sends to `initiation`."""
    nonce = nonce or os.urandom(24)
    sealed = crypto.xaead_encrypt(digest(LABEL_COOKIE, responder), nonce, cookie,
                                  initiation[116:132])
    return COOKIE_REPLY + initiation[4:8] + nonce + sealed


def with_mac2(message: bytes, cookie: bytes) -> bytes:
    """`message` (an initiation) with mac2 made with `cookie`: over everything before mac2."""
    return message[:132] + mac(cookie, message[:132])


def open_cookie(reply: bytes, initiation: bytes, keys: wg.Keys) -> bytes:
    """The cookie in a's reply to the check's `initiation`; Failed naming what is wrong."""
    if len(reply) != 64:
        raise Failed(f"a answered the check's initiation under load with {describe(reply)}",
                     "a cookie reply: 64 bytes, 03 00 00 00, the initiation's sender index, "
                     "a 24-byte nonce, the cookie sealed (16 + 16 bytes)", SECTION)
    if reply[4:8] != initiation[4:8]:
        raise Failed(f"a's cookie reply has the receiver index {reply[4:8].hex(' ')}",
                     f"the initiation's sender index, {initiation[4:8].hex(' ')}", SECTION)
    key, nonce, sealed = digest(LABEL_COOKIE, keys.a_public), reply[8:32], reply[32:]
    cookie = crypto.xaead_decrypt(key, nonce, sealed, initiation[116:132])
    if cookie is None:
        raise Failed(f"a's cookie reply does not open: {cookie_mistake(reply, initiation, keys)}",
                     "XAEAD(HASH(\"cookie--\" + the responder's OWN public key), the 24-byte "
                     "nonce, the cookie, the initiation's mac1 as associated data)", SECTION)
    return cookie


def cookie_mistake(reply: bytes, initiation: bytes, keys: wg.Keys) -> str:
    """The likely mistake behind a cookie reply that does not open."""
    nonce, sealed, mac1 = reply[8:32], reply[32:], initiation[116:132]
    own, theirs = digest(LABEL_COOKIE, keys.a_public), digest(LABEL_COOKIE, keys.b_public)
    for key, aad, mistake, words in (
            (theirs, mac1, "", "it opens with a key made from the INITIATOR's public key: "
             "the key is HASH(\"cookie--\" + the public key of the one who sends the reply)"),
            (own, b"", "", "it opens without associated data: the initiation's mac1 is it"),
            (own, initiation[132:148], "", "it opens with mac2 as associated data: mac1 is"),
            (own, initiation[:132], "", "it opens with the initiation up to mac2 as "
             "associated data: mac1 alone is"),
            (own, mac1, "input added", "it opens if HChaCha20 adds the input back, as the "
             "block function does: HChaCha20 returns words 0-3 and 12-15 of the state after "
             "the 20 rounds, without the addition"),
            (own, mac1, "12-byte nonce, no HChaCha20", "it opens with plain ChaCha20-Poly1305 "
             "and the nonce's first 12 bytes: XChaCha20 first makes a key with HChaCha20 "
             "from the nonce's first 16 bytes")):
        cookie = crypto.xchacha20(key, nonce, sealed[:-16], mistake)
        if crypto.xaead_encrypt(key, nonce, cookie, aad, mistake) == sealed:
            return words
    return "the key, the nonce or the associated data differs"


# --- As initiator: the check plays a responder under load --------------------------------


def await_initiation(lab: WireGuardLab, since: float, what: str) -> tuple:
    return lab.await_message(INITIATION, since, 8, what, "another initiation after 5 s "
                             "(REKEY_TIMEOUT) and 0 to 333 ms", "12. timers")


def forged(initiation: bytes, keys: wg.Keys) -> dict:
    """Forged cookie replies to `initiation`, by what is wrong, each with the cookies a learner
    could take from it: the one sealed in it, and what a decryption that skips the tag reads."""
    key, replies = digest(LABEL_COOKIE, keys.b_public), {}
    sealed, other = os.urandom(16), os.urandom(16)
    genuine = cookie_reply(initiation, sealed, keys.b_public)
    wrong_nonce = genuine[:8] + bytes([genuine[8] ^ 1]) + genuine[9:]
    wrong_key = cookie_reply(initiation, other, keys.a_public)  # a's own key: not b's
    for reply, inside, what in (
            (wrong_nonce, sealed, "with one bit flipped in its nonce"),
            (wrong_key, other, "sealed with another key than HASH(\"cookie--\" + b's "
             "public key)")):
        replies[what] = (reply, (inside, crypto.xchacha20(key, reply[8:32], reply[32:48])))
    return replies


def check_initiator(lab: WireGuardLab) -> None:
    """a's initiations meet a responder under load: forged cookie replies are used for
    nothing; the true one for a's latest initiation makes its next one's mac2, for 120 s."""
    keys, started = lab.keys, time.time()
    clock = Clock(lab.hosts.logs / "a.clock")
    clock.run_ahead(0)
    lab.start_tinyvpn(clock=clock)
    first_at, first = lab.await_message(INITIATION, started, 3, "initiation after it started",
                                        "an initiation as soon as it starts", "9. the handshake")
    wg.read_initiation(first, keys.b, keys.a_public, "a")
    lies = forged(first, keys)
    lab.inject(*(reply for reply, _ in lies.values()))
    second_at, second = await_initiation(lab, first_at + 0.01, "second initiation after "
                                         "forged cookie replies")
    judge_mac2(second, None, lies, "after forged cookie replies only")
    wg.read_initiation(second, keys.b, keys.a_public, "a's second initiation")
    cookie_expires(lab, clock, cookie_taken(lab, first, second_at, second))


def cookie_taken(lab: WireGuardLab, first: bytes, second_at: float, second: bytes) -> bytes:
    """The true cookie reply to a's `second` initiation, among lies (one to its `first`): a's
    third carries mac2 made with it, and is answered. Returns that cookie."""
    keys, (cookie, older) = lab.keys, (os.urandom(16), os.urandom(16))
    lies = forged(second, keys)
    lab.inject(cookie_reply(second, cookie, keys.b_public),
               cookie_reply(first, older, keys.b_public), *(r for r, _ in lies.values()))
    lies["to a's first initiation, older than its second"] = (b"", (older,))
    _, third = await_initiation(lab, second_at + 0.01, "initiation after the check's cookie "
                                "reply")
    judge_mac2(third, cookie, lies, "after the check's cookie reply "
               "to its latest initiation, then forged ones")
    # Answered at last: a confirms with a keep-alive (mac2 is no part of the handshake's hash)
    wg.confirm(lab, wg.read_initiation(third[:132] + bytes(16), keys.b, keys.a_public, "a"))
    return cookie


def cookie_expires(lab: WireGuardLab, clock: Clock, cookie: bytes) -> None:
    """a's clock AHEAD seconds on, and a packet to send: the session is due for renewal, and
    the initiation that renews it carries no mac2, the cookie being too old."""
    clock.run_ahead(AHEAD)
    since = time.time()
    netns.run(lab.hosts, "a", "ping", "-c", "1", "-W", "0.3", TUNNEL["b"][0], check=False)
    _, message = lab.await_message(
        INITIATION, since, 3, f"initiation after its clock moved {AHEAD} s ahead and it had a "
        "packet to send", "a new handshake at once: a session the initiator sends on is "
        "renewed after 120 s (REKEY_AFTER_TIME)", "12. timers")
    when = f"{AHEAD} s after the check's cookie reply (a's clock moved ahead)"
    if message[132:148] == mac(cookie, message[:132]):
        raise Failed(f"{when}, a's next initiation still carries a mac2 made with that "
                     "cookie", "16 zero bytes: a cookie received is used for 120 s only "
                     "(wireguard-go device/cookie.go AddMacs, CookieRefreshTime), when the "
                     "responder's secret has changed anyway", SECTION)
    judge_mac2(message, None, {}, when)


def judge_mac2(message: bytes, cookie: Optional[bytes], lies: dict, when: str) -> None:
    """Failed unless `message`'s mac2 is made with `cookie` (zeros without one), naming the
    lie it was made with if it was."""
    mac2 = message[132:148]
    if mac2 == (mac(cookie, message[:132]) if cookie else bytes(16)):
        return
    for what, (_, cookies) in lies.items():
        for lie, how in zip(cookies, ("the cookie of", "what a decryption that skips the tag "
                                      "reads in")):
            if mac2 == mac(lie, message[:132]):
                raise Failed(f"{when}, a's next initiation carries a mac2 made with {how} a "
                             f"cookie reply {what}", "a cookie reply is used only if its tag "
                             "checks out, with HASH(\"cookie--\" + the peer's public key) and, "
                             "as associated data, the mac1 of a's LATEST initiation; else it "
                             "is dropped", SECTION)
    if cookie and mac2 == bytes(16):
        raise Failed(f"{when}, a's next initiation carries no mac2 (16 zero bytes)",
                     "the cookie kept, and the next initiation's mac2 = MAC(cookie, the "
                     "initiation up to mac2) for 120 s", SECTION)
    if cookie and mac2 == mac(cookie, message[:116]):
        raise Failed(f"{when}, a's next initiation carries a mac2 made over the bytes before "
                     "mac1", "mac2 = MAC(cookie, every byte before mac2, mac1 included)",
                     SECTION)
    raise Failed(f"{when}, a's next initiation carries the mac2 {mac2.hex(' ')}, made with no "
                 "cookie the check gave", "mac2 = MAC(cookie, every byte before mac2, mac1 "
                 "included), or 16 zero bytes without a cookie", SECTION)


# --- As responder: mallory's flood --------------------------------------------------------


class Flooded(NamedTuple):
    """The tinyvpn mallory floods, single-peer a or the hub, and how the words name it."""
    hosts: Hosts
    process: "subprocess.Popen[bytes]"
    alive: Callable[[str], None]  # Failed, naming the crash first, if it has died
    who: str  # "a", "the hub"
    when: str  # what it was run as, under what flood
    rule: str = ""  # said after each rule broken: what holds in this mode too


class Spoke(NamedTuple):
    """wireguard-go initiating through the flood, and its ping: where the check finds them."""
    log: str  # the name it was started under
    ping: str  # the name its ping was started under
    who: str  # in the words
    pinged: str  # what its ping is, in the words
    side: str  # the namespace it pings from
    target: str  # the address it pings


FLOODED = f"under mallory's flood ({FLOOD_RATE} initiations a second, each with a valid mac1)"


def start_flood(hosts: Hosts, side: str, target: str, message: bytes) -> subprocess.Popen:
    """Mallory's flood, from MALLORY:FLOOD_PORT in namespace `side`: `message` again and
    again, to `target`:PORT."""
    return netns.start(hosts, side, sys.executable, "-c", FLOOD, MALLORY, str(FLOOD_PORT),
                       target, str(FLOOD_RATE), message.hex(), name="flood")


def start_responder(lab: WireGuardLab, clock: Clock) -> None:
    """a's tinyvpn -d under `clock`, its PEER nobody: it initiates to no one, and answers."""
    options = ("--private-key", str(lab.keys.a_file), "--peer-key", wg.b64(lab.keys.b_public))
    lab.tinyvpn = netns.start_tinyvpn(lab.hosts, "a", "-d", *options, peer=NOBODY,
                                      program=clock.command(lab.program))
    for command in netns.tunnel_commands(lab.hosts, "a"):
        netns.sh(*command)


@contextmanager
def verbose_logs() -> Iterator[None]:
    """wireguard-go started in here logs every handshake message (its LOG_LEVEL)."""
    before = os.environ.get("LOG_LEVEL")
    os.environ["LOG_LEVEL"] = "verbose"
    try:
        yield
    finally:
        if before is None:
            del os.environ["LOG_LEVEL"]
        else:
            os.environ["LOG_LEVEL"] = before


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def answer(lab: WireGuardLab, port: int, message: bytes, what: str, source: str = B) -> bytes:
    """What a sends back to `source`:`port` (one of b's addresses) for the initiation
    `message`: a response or a cookie reply naming its sender index; Failed if neither comes
    within PROBE_WAIT seconds."""
    target = A6 if ":" in source else A
    result = netns.run(lab.hosts, "b", sys.executable, "-c", PROBE, source, str(port), target,
                       message.hex(), str(PROBE_WAIT), check=False, timeout=PROBE_WAIT + 10)
    if result.stdout.strip():
        return bytes.fromhex(result.stdout.strip())
    lab.alive(f"after the check sent {what}")
    raise Failed(f"the check sent {what}; a sent nothing back to {address(source, port)} "
                 f"within {PROBE_WAIT} s",
                 "a response, or under load a cookie reply, at once", SECTION)


def learners_x25519(program: Path) -> float:
    """CPU seconds one x25519() of the learner's takes."""
    timed = subprocess.run([sys.executable, "-c", TIME_X25519, str(program)],
                           capture_output=True, text=True, timeout=60)
    return float(timed.stdout) if timed.returncode == 0 else 0.0


def check_responder(lab: WireGuardLab, cost: float) -> None:
    """The flood, and while it lasts: the check's probes, wireguard-go's handshake, and a's
    secret made 130 s old; then a's CPU per cookie reply (`cost`: one of its X25519)."""
    keys, hosts = lab.keys, lab.hosts
    replayed = wg.initiate(keys, wg.tai64n(time.time_ns() - 10**10))  # older than any after
    clock = Clock(hosts.logs / "a.clock")
    clock.run_ahead(0)
    start_responder(lab, clock)
    with verbose_logs():
        lab.start_peer(endpoint=A)
    answered_calmly(lab)
    netns.add_address(hosts, "b", f"{hosts.prefix}v", (MALLORY, B6_TOO))
    flood = start_flood(hosts, "b", A, replayed.message)
    time.sleep(0.5)  # hundreds of initiations in: load on any machine
    pinging = netns.start(hosts, "b", "ping", "-c", "1", "-W", "12", TUNNEL["a"][0],
                          name="ping-b")  # wireguard-go initiates
    assert lab.tinyvpn
    flooded = Flooded(hosts, lab.tinyvpn, lab.alive, "a", FLOODED)
    judge_cpu(flooded, cost)
    cookie = probe_under_load(lab, B)
    wrong_senders(lab, cookie)
    probe_under_load(lab, B6, B6_TOO)
    through_wireguard_go(flooded, pinging, Spoke(
        "wireguard-go-b", "ping-b", "wireguard-go in b", "b's ping", "b", TUNNEL["a"][0]))
    secret_rotated(lab, clock, cookie)
    netns.stop(flood)
    judge_flood(flooded)


def answered_calmly(lab: WireGuardLab) -> None:
    """With no flood, an initiation without mac2 gets its response."""
    calm = wg.initiate(lab.keys, wg.tai64n(time.time_ns()))
    reply = answer(lab, PROBE_PORT, calm.message, "one initiation from b's key, timestamp "
                   "now, and no flood")
    if reply[:4] != RESPONSE:
        raise Failed("with no flood, the check sent one initiation from b's key, timestamp "
                     "now; a answered it with a cookie reply", "a response: only under load "
                     "does an initiation without mac2 get a cookie reply", SECTION)
    wg.read_response(reply, calm, lab.keys)


def fresh(keys: wg.Keys) -> bytes:
    """A new initiation from b's key, timestamp now, mac2 zero."""
    return wg.initiate(keys, wg.tai64n(time.time_ns())).message


def probe_under_load(lab: WireGuardLab, source: str, neighbour: str = "") -> bytes:
    """The check's initiations from `source`:PROBE_PORT during the flood: mac2 zero gets a
    cookie reply; mac2 made with that cookie gets a response, but not from `neighbour` (an
    address of b's, if given). Returns the cookie."""
    keys, sender = lab.keys, address(source, PROBE_PORT)
    first, what = fresh(keys), f"a new initiation from b's key, timestamp now, mac2 zero, " \
        f"from {sender}"
    reply = answer(lab, PROBE_PORT, first, f"{what}, {FLOODED}", source)
    if reply[:4] == RESPONSE:
        raise Failed(f"{FLOODED}, the check sent {what}; a answered it with a response, "
                     "after the DH it costs", "a cookie reply (type 3) instead: under load, "
                     "an initiation without a valid mac2 costs no DH", SECTION)
    cookie = open_cookie(reply, first, keys)
    if neighbour:
        refused(lab, neighbour, PROBE_PORT, f"a new initiation from b's key, its mac2 made "
                f"with the cookie a gave {sender}, from {address(neighbour, PROBE_PORT)}: "
                "another IPv6 address, the same last 4 bytes, the same port",
                with_mac2(fresh(keys), cookie))
    good = wg.initiate(keys, wg.tai64n(time.time_ns()))
    what = f"a new initiation from b's key, its mac2 made with the cookie a gave {sender}"
    reply = answer(lab, PROBE_PORT, with_mac2(good.message, cookie), f"{what}, {FLOODED}",
                   source)
    if reply[:4] != RESPONSE:
        raise Failed(f"{FLOODED}, the check sent {what}, from the same address and port; a "
                     "answered it with another cookie reply", "a response: a valid mac2 "
                     "proves its sender receives at its address; mac2 = MAC(cookie, the "
                     "initiation up to mac2)", SECTION)
    wg.read_response(reply, good, keys)
    return cookie


def wrong_senders(lab: WireGuardLab, cookie: bytes) -> None:
    """During the flood, initiations whose mac2 is not the one for their sender."""
    keys, given = lab.keys, address(B, PROBE_PORT)
    refused(lab, B, PROBE_PORT, "a new initiation from b's key with a mac2 of 16 random bytes",
            fresh(keys)[:132] + os.urandom(16))
    refused(lab, B, OTHER_PORT, f"a new initiation from b's key, its mac2 made with the cookie "
            f"a gave {given}, from port {OTHER_PORT} of the same address",
            with_mac2(fresh(keys), cookie))
    refused(lab, MALLORY, PROBE_PORT, f"a new initiation from b's key, its mac2 made with the "
            f"cookie a gave {given}, from {address(MALLORY, PROBE_PORT)}: another address, the "
            "same port", with_mac2(fresh(keys), cookie))


def refused(lab: WireGuardLab, source: str, port: int, what: str, message: bytes) -> None:
    """Failed if a answers the initiation `message` from `source`:`port` with a response."""
    if answer(lab, port, message, f"{what}, {FLOODED}", source)[:4] == RESPONSE:
        raise Failed(f"{FLOODED}, the check sent {what}; a answered it with a response",
                     "a cookie reply: under load, only a valid mac2 gets a response, and a "
                     "cookie is MAC(secret, the sender's IP address AND port: all 4 or 16 "
                     "bytes of the address)", SECTION)


def through_wireguard_go(flooded: Flooded, pinging: "subprocess.Popen[bytes]",
                         spoke: Spoke) -> None:
    """wireguard-go initiated under the flood: it got a cookie reply it could open, initiated
    again with mac2, was answered, and its ping came back."""
    with suppress(subprocess.TimeoutExpired):
        pinging.wait(15)
    log, who, when = netns.output(flooded.hosts, spoke.log, "out"), flooded.who, flooded.when
    flooded.alive(f"while {spoke.who} initiated under the flood")
    if "Could not decrypt invalid cookie response" in log:
        raise Failed(f"{when}, {spoke.who} initiated; it could not open {who}'s cookie reply "
                     "(its log: \"Could not decrypt invalid cookie response\")",
                     f"a cookie reply wireguard-go opens: XAEAD(HASH(\"cookie--\" + {who}'s "
                     "public key), a random 24-byte nonce, the cookie, the initiation's mac1)"
                     + flooded.rule, SECTION)
    if "1 received" not in netns.output(flooded.hosts, spoke.ping, "out"):
        raise Failed(f"{when}, {spoke.who} initiated ({spoke.pinged}); " +
                     (f"it got {who}'s cookie reply (its log says so), so its retry 5 s later "
                      f"carried mac2; {spoke.pinged} got no answer within 12 s"
                      if "Receiving cookie response" in log else f"{who} sent it no cookie "
                      f"reply, and {spoke.pinged} got no answer within 12 s"),
                     "wireguard-go's initiation with a valid mac2 gets a response: a peer "
                     "completes its handshake under load" + flooded.rule, SECTION)
    if "Receiving cookie response" not in log:
        raise Failed(f"{when}, {spoke.who} initiated, and was answered without a cookie "
                     f"reply: {who} was not under load", "under load at such a flood: any "
                     "definition of load holds 500 initiations a second with a valid mac1"
                     + flooded.rule, SECTION)
    if not pings_again(flooded.hosts, spoke):
        raise Failed(f"{when}, after {spoke.who}'s handshake, none of its next {PINGS_AGAIN} "
                     f"pings got an answer within {PROBE_WAIT} s", "pings cross, whatever "
                     "mallory sends", SECTION)


def pings_again(hosts: Hosts, spoke: Spoke) -> bool:
    """Whether one of PINGS_AGAIN more pings is answered: a busy machine's tinyvpn may fall
    behind the flood, and then its socket's queue, full, drops some of what comes."""
    done = netns.run(hosts, spoke.side, "ping", "-c", str(PINGS_AGAIN), "-i", "0.2", "-W",
                     str(PROBE_WAIT), spoke.target, check=False, timeout=PROBE_WAIT + 10)
    return re.search(r", [1-9]\d* received", done.stdout) is not None  # not ", 0 received"


def secret_rotated(lab: WireGuardLab, clock: Clock, cookie: bytes) -> None:
    """a's clock 130 s ahead: the cookie it gave before is no good any more."""
    clock.run_ahead(130)
    time.sleep(0.5)  # the flood goes on: under load again, whatever a counted before
    later = wg.initiate(lab.keys, wg.tai64n(time.time_ns()))
    what = ("a new initiation from b's key, its mac2 made with the cookie a gave it before "
            "its clock moved 130 s ahead")
    reply = answer(lab, PROBE_PORT, with_mac2(later.message, cookie), f"{what}, {FLOODED}")
    if reply[:4] == RESPONSE:
        raise Failed(f"{FLOODED}, the check sent {what}; a answered it with a response: its "
                     "cookie secret was not changed in 130 s", "a cookie reply: the secret "
                     "changes every 2 minutes (the paper, 5.4.7; wireguard-go "
                     "device/cookie.go, CookieRefreshTime), and a cookie made with an old one "
                     "is refused", SECTION)
    if open_cookie(reply, later.message, lab.keys) == cookie:
        raise Failed(f"{FLOODED}, a gave the check the same cookie before and after its clock "
                     "moved 130 s ahead", "a new cookie: the secret changes every 2 minutes "
                     "(the paper, 5.4.7)", SECTION)


def flood_counts(hosts: Hosts) -> tuple:
    """(sent, cookie replies, responses, seconds) of mallory's flood so far."""
    lines = [line for line in netns.output(hosts, "flood", "out").splitlines()
             if line.endswith("}")]
    counted = json.loads(lines[-1]) if lines else {}
    kinds = counted.get("kinds", {})
    return (counted.get("sent", 0), kinds.get("3", 0), kinds.get("2", 0),
            counted.get("seconds", 0.0))


def judge_cpu(flooded: Flooded, cost: float, seconds: float = 1.5) -> None:
    """Over `seconds` of the flood, by the kernel's count of what the learner's tinyvpn read
    and sent (its namespace's UDP counters: exact at once, however busy the machine): CPU
    seconds per datagram below one X25519 (`cost`), and a datagram sent for most read."""
    pid = flooded.process.pid
    cpu, (read, sent) = netns.cpu_seconds(pid), netns.udp_datagrams(pid)
    time.sleep(seconds)
    flooded.alive("under mallory's flood")
    cpu = netns.cpu_seconds(pid) - cpu
    read, sent = (now - before for now, before in zip(netns.udp_datagrams(pid), (read, sent)))
    counted = (f"{flooded.when}, {flooded.who} read {read} datagrams in {seconds} s and sent "
               f"{sent} (its UDP counters), spending {cpu:.2f} CPU seconds")
    # Per datagram read, too: a DH so slow that the load never seems to come sends nothing.
    handled = max(read, sent)
    if handled and cost and cpu / handled > cost:  # a DH costs one X25519 at least
        raise Failed(f"{counted}, {cpu / handled * 1000:.2f} ms for each, and one of its "
                     f"x25519() takes {cost * 1000:.2f} ms: it computed a DH for them",
                     "no DH under load without a valid mac2: the load (initiations counted as "
                     "they arrive, not as you read them), then mac2, are judged right after "
                     "mac1; a cookie reply costs a MAC and an XChaCha20-Poly1305"
                     + flooded.rule, SECTION)
    if sent < read / 2:
        raise Failed(counted, "a cookie reply to every initiation, at once, and no DH"
                     + flooded.rule, SECTION)


def judge_flood(flooded: Flooded) -> None:
    """Mallory's count of what came back: a cookie reply to most, a response to none."""
    sent, replies, responses, seconds = flood_counts(flooded.hosts)
    flood = (f"mallory flooded {flooded.who} with {sent} replays of one initiation (valid "
             f"mac1) in {seconds:.1f} s")
    if responses:
        raise Failed(f"{flood}; {flooded.who} answered {responses} with a response",
                     "a replayed initiation is never answered; under load, it gets a cookie "
                     "reply", SECTION)
    if replies < sent / 2:
        raise Failed(f"{flood}; {flooded.who} sent her {replies} cookie replies",
                     "a cookie reply to every one: under load, an initiation without a valid "
                     "mac2 gets one, at once and without a DH" + flooded.rule, SECTION)


# --- In hub mode: rung 13's hub, flooded --------------------------------------------------

HUB_FLOODED = f"the hub (tinyvpn -d --config FILE, two [Peer]s) {FLOODED}"
HUB_RULE = ("; with --config as with --private-key: the load, the cookie secret and the "
            "reply's key are the interface's (its own public key), and judged right after "
            "mac1, before any DH says which [Peer] sent the initiation")


def check_hub(program: Path, cost: float) -> None:
    """The hub, spoke c up; mallory floods the hub with one initiation from her own key (no
    [Peer]'s: a correct hub never answers it, however its handshakes with c went), again and
    again; spoke a comes up and pings spoke c through the hub."""
    with routing.hub_lab(program) as lab:
        lab.start_hub()
        lab.start_spoke("c")
        if not routing.replied(lab.ping("c", INNER["b"], wait=3)):
            lab.alive()
            raise Failed("with no flood yet, spoke c's ping to the hub got no reply",
                         "rung 13's hub: a spoke's handshake answered, its pings too",
                         routing.SECTION)
        as_mallory = wg.Keys(lab.keys["b"], lab.keys["m"], Path(), Path())  # the hub responds
        flood = start_flood(lab.hosts, "m", HUB, wg.initiate(as_mallory, wg.tai64n(0)).message)
        time.sleep(0.5)  # hundreds of initiations in: load on any machine
        with verbose_logs():
            lab.start_spoke("a")  # up: it initiates (its PersistentKeepalive)
        pinging = netns.start(lab.hosts, "a", "ping", "-c", "1", "-W", "12", INNER["c"],
                              name="ping-a")
        assert lab.hub
        flooded = Flooded(lab.hosts, lab.hub, lambda _: lab.alive(), "the hub", HUB_FLOODED,
                          HUB_RULE)
        judge_cpu(flooded, cost)
        through_wireguard_go(flooded, pinging, Spoke(
            "wireguard-go-a", "ping-a", "spoke a (wireguard-go)", "its ping to spoke c, "
            "through the hub", "a", INNER["c"]))
        netns.stop(flood)
        judge_flood(flooded)


# --- The rung -----------------------------------------------------------------------------


def check_cookies(program: Path) -> None:
    lacking = wg.faketime_missing()
    if lacking:
        raise Failed(f"this machine cannot check rung 14: {lacking}", "libfaketime installed")
    cost = learners_x25519(program)
    with wg.wireguard_lab(program) as lab:
        check_initiator(lab)  # first: the cable's recorder has little to read yet
        lab.stop_tinyvpn()
        check_responder(lab, cost)
    check_hub(program, cost)
