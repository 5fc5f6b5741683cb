"""The checks of part two's rungs 9 to 12 (tests/ladder/part-two.md): the learner's tinyvpn
speaks WireGuard with a real WireGuard peer. The runner calls them through the ladder's table
(tests/ladder/rungs.py). Standard library only.

Each check runs the learner's tinyvpn in namespace a, with --private-key and --peer-key, and a
WireGuard that nobody here wrote in namespace b: wireguard-go, configured with `wg` (this kernel
may have no wireguard module). It watches the cable (recorder.py), and, knowing every key
(it made them), decodes what a sent and says which field is wrong; it also plays the peer itself
where it needs a message the real one would never send (a response with a bit flipped, an
initiation replayed).

    underlay (veth):  a 192.0.2.1  <---->  b 192.0.2.2      UDP port 5000 on both
    tunnel:           a 198.51.100.1 (tinyvpn's TUN)  <---->  b 198.51.100.2 (wireguard-go's)
"""

import base64
import hashlib
import hmac
import io
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import harness
import netns
import wire
from harness import Failed
from netns import MALLORY, TUNNEL, UNDERLAY, Hosts
from recorder import Recorder
from reference_crypto import (
    CONSTRUCTION,
    IDENTIFIER,
    LABEL_MAC1,
    Noise,
    digest,
    kdf,
    mac,
    seal,
    unseal,
    with_macs,
    x25519,
)
from traffic import tcp_transfer
from wire import echo

GUIDE = "tests/ladder/part-two.md"
A, B = UNDERLAY["a"][0], UNDERLAY["b"][0]

INITIATION, RESPONSE, TRANSPORT = (struct.pack("<I", kind) for kind in (1, 2, 4))
NAMES = {1: "an initiation (type 1)", 2: "a response (type 2)", 3: "a cookie reply (type 3)",
         4: "a transport message (type 4)"}


def tai64n(nanoseconds: int) -> bytes:
    seconds, rest = divmod(nanoseconds, 10**9)
    return struct.pack(">QI", 2**62 + 10 + seconds, rest)


@dataclass
class Keys:
    """Everything the check made: both static key pairs, and a's in wg genkey's format."""
    a: bytes
    b: bytes
    a_file: Path
    b_file: Path

    @property
    def a_public(self) -> bytes:
        return x25519(self.a)

    @property
    def b_public(self) -> bytes:
        return x25519(self.b)


def make_keys(folder: Path) -> Keys:
    a, b = os.urandom(32), os.urandom(32)
    files = folder / "a.key", folder / "b.key"
    for key, file in zip((a, b), files):
        file.write_text(base64.b64encode(key).decode() + "\n")
        file.chmod(0o600)
    return Keys(a, b, *files)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# --- Reading what a sent ------------------------------------------------------------------


@dataclass
class Initiation:
    """An initiation as its responder reads it: the sender's index and ephemeral key, its
    timestamp, and the handshake's state after it."""
    message: bytes
    index: bytes
    ephemeral: bytes
    stamp: bytes
    noise: Noise


def read_initiation(message: bytes, responder: bytes, initiator: bytes, who: str) -> Initiation:
    """Decode an initiation as `responder` (a private key); Failed naming the first field that
    is wrong. `initiator` is the public key expected inside."""
    where = "9. the handshake"
    if len(message) != 148 or message[:4] != INITIATION:
        raise Failed(f"{who} sent {describe(message)}", "an initiation: 148 bytes, starting "
                     "01 00 00 00 (type 1, then three zero bytes): 4 + 4 (sender index) + 32 "
                     "(ephemeral) + 48 (static, sealed) + 28 (timestamp, sealed) + 16 (mac1) + "
                     "16 (mac2)", where)
    expected = mac(digest(LABEL_MAC1, x25519(responder)), message[:116])
    if message[116:132] != expected:
        raise Failed(f"{who}'s initiation has a mac1 that does not match: "
                     f"{mac1_mistake(message, x25519(responder), initiator)}",
                     "mac1 = MAC(HASH(\"mac1----\" + the responder's public key), the 116 "
                     "bytes before mac1): BLAKE2s keyed, 16 bytes", where)
    noise = Noise(x25519(responder))
    ephemeral = message[8:40]
    noise.ephemeral(ephemeral)
    static = noise.unseal(noise.mix(x25519(responder, ephemeral)), message[40:88])
    if static is None:
        raise Failed(f"{who}'s initiation: its encrypted static key does not decrypt: "
                     f"{static_mistake(message, responder, initiator)}",
                     "steps 1 to 8 of the initiation: C and H from the construction, the "
                     "identifier and the responder's public key; the ephemeral mixed into "
                     "both; the key from KDF2(C, DH(ephemeral, responder's static)); "
                     "H as the associated data", where)
    if static != initiator:
        raise Failed(f"{who}'s initiation carries the static key {b64(static)}, not its own "
                     f"public key {b64(initiator)}", "the initiator's own public key, sealed",
                     where)
    before = (noise.chain, noise.hash)
    stamp = noise.unseal(noise.mix(x25519(responder, initiator)), message[88:116])
    if stamp is None:
        raise Failed(f"{who}'s initiation: its timestamp does not decrypt: "
                     f"{stamp_mistake(message, responder, initiator, *before)}", "the key from "
                     "KDF2(C, DH(initiator's static, responder's static)), H as associated "
                     "data", where)
    seconds = int.from_bytes(stamp[:8], "big") - 2**62 - 10
    if abs(seconds - time.time()) > 3600:
        little = abs(int.from_bytes(stamp[:8], "little") - 2**62 - 10 - time.time()) < 3600
        bare = abs(int.from_bytes(stamp[:8], "big") - time.time()) < 3600
        raise Failed(f"{who}'s initiation carries the timestamp {stamp.hex(' ')}, which is not "
                     "now in TAI64N" + (": it is little-endian" if little else "") +
                     (": 2^62 + 10 is not added to the seconds" if bare else ""),
                     "TAI64N: 8 bytes big-endian of 2^62 + 10 + the seconds "
                     "since 1970, then 4 bytes big-endian of nanoseconds", where)
    if message[132:] != bytes(16):
        raise Failed(f"{who}'s initiation has a mac2 that is not zero",
                     "mac2 is 16 zero bytes while no cookie was received", where)
    return Initiation(message, message[4:8], ephemeral, stamp, noise)


def opens_static(message: bytes, responder: bytes, one_hash: bool = False,
                 mix_c: bool = True, mix_h: bool = True, aad: bool = True,
                 dh: Optional[bytes] = None, keyed: bool = False, swapped: bool = False) -> bool:
    """Whether the static field opens if the initiator made one mistake (none: all default)."""
    def derive(key: bytes, data: bytes) -> list:
        if keyed:  # keyed BLAKE2s where HMAC belongs
            secret = hashlib.blake2s(data, key=key).digest()
            first = hashlib.blake2s(b"\x01", key=secret).digest()
            return [first, hashlib.blake2s(first + b"\x02", key=secret).digest()]
        return kdf(key, data)[::-1] if swapped else kdf(key, data)

    chain, public, ephemeral = digest(CONSTRUCTION), x25519(responder), message[8:40]
    hashed = digest(chain, IDENTIFIER, public) if one_hash else \
        digest(digest(chain, IDENTIFIER), public)
    chain = derive(chain, ephemeral)[0] if mix_c else chain
    hashed = digest(hashed, ephemeral) if mix_h else hashed
    chain, key = derive(chain, dh or x25519(responder, ephemeral))
    return unseal(key, 0, message[40:88], hashed if aad else b"") is not None


def static_mistake(message: bytes, responder: bytes, initiator: bytes) -> str:
    """The likely mistake behind a static field that does not open."""
    for mistake, words in (
            ({"one_hash": True}, "it opens if H starts as HASH(C + IDENTIFIER + responder's "
             "key) in one go: it is HASH(HASH(C + IDENTIFIER) + responder's key), two hashes"),
            ({"mix_c": False}, "it opens if the ephemeral key is not mixed into C: step 5, "
             "C = KDF1(C, ephemeral public key), is missing"),
            ({"mix_h": False}, "it opens if H leaves out the ephemeral key: step 6, H = "
             "HASH(H + ephemeral public key), is missing"),
            ({"aad": False}, "it opens without associated data: seal it with H as the "
             "associated data"),
            ({"dh": x25519(responder, initiator)}, "it opens with the key from the STATIC "
             "keys' DH: step 7 uses DH(ephemeral private, responder's public)"),
            ({"keyed": True}, "it opens if KDF is made of keyed BLAKE2s: KDF is made of HMAC "
             "(hmac.new(key, data, hashlib.blake2s))"),
            ({"swapped": True}, "it opens if KDF2's two outputs are swapped: the first is the "
             "new chaining key C, the second the key")):
        if opens_static(message, responder, **mistake):  # type: ignore[arg-type]
            return words
    return "a step of 1 to 8 differs (the nonce is 12 zero bytes; x25519's arguments: "\
        "private key first)"


def stamp_mistake(message: bytes, responder: bytes, initiator: bytes, chain: bytes,
                  hashed: bytes) -> str:
    """The likely mistake behind a timestamp field that does not open; `chain` and `hashed`
    are C and H as they should be once the static field is sealed."""
    _, key = kdf(chain, x25519(responder, message[8:40]))  # the ephemeral DH again
    if unseal(key, 0, message[88:116], hashed) is not None:
        return "it opens with the key from DH(ephemeral, responder's static): step 9 uses " \
            "DH(initiator's STATIC private, responder's public)"
    start = digest(CONSTRUCTION)  # H before the static field was mixed in: recompute it
    earlier = digest(digest(digest(start, IDENTIFIER), x25519(responder)), message[8:40])
    _, key = kdf(chain, x25519(responder, initiator))
    if unseal(key, 0, message[88:116], earlier) is not None:
        return "it opens with H from before the static field: after sealing the static key, " \
            "H = HASH(H + the sealed static field)"
    return "step 9 or 10 differs"


def mac1_mistake(message: bytes, responder: bytes, initiator: bytes) -> str:
    """The likely mistake behind a wrong mac1, found by trying the classic ones."""
    key = digest(LABEL_MAC1, responder)
    tries = [
        (mac(key, message[:132]), "it matches MAC over the message up to mac2 (mac1 "
         "included): compute mac1 over the 116 bytes BEFORE mac1"),
        (mac(key, message[:148]), "it matches MAC over the whole message: compute mac1 "
         "over the 116 bytes before mac1"),
        (mac(key, message[:116] + bytes(16)), "it matches MAC over the message with mac1 as "
         "16 zero bytes: compute mac1 over the 116 bytes before mac1, nothing more"),
        (mac(key, message[:116] + bytes(32)), "it matches MAC over the message with mac1 "
         "and mac2 as zeros: compute mac1 over the 116 bytes before mac1, nothing more"),
        (mac(digest(LABEL_MAC1, initiator), message[:116]), "it matches a key made from "
         "your OWN public key: mac1's key is HASH(\"mac1----\" + the RECEIVER's public key)"),
        (mac(responder, message[:116]), "it matches the responder's public key used as the "
         "key itself: the key is HASH(\"mac1----\" + that public key)"),
        (hmac.new(key, message[:116], hashlib.blake2s).digest()[:16], "it matches HMAC-BLAKE2s: "
         "MAC is BLAKE2s KEYED (hashlib.blake2s(data, key=..., digest_size=16)), not HMAC"),
        (hashlib.blake2s(message[:116], key=key).digest()[:16], "it matches a 32-byte keyed "
         "BLAKE2s cut to 16: ask BLAKE2s for digest_size=16, which changes every byte"),
    ]
    for value, words in tries:
        if message[116:132] == value:
            return words
    return "computed over the wrong bytes, or with the wrong key?"


def describe(message: bytes) -> str:
    """'a response (type 2) of 92 bytes', or what the first bytes are."""
    kind = NAMES.get(message[0]) if message[:1] and message[1:4] == bytes(3) else None
    if kind:
        return f"{kind} of {len(message)} bytes"
    if message[:1] and message[0] >> 4 in (4, 6):
        return (f"a datagram of {len(message)} bytes holding an IPv{message[0] >> 4} packet "
                "in the clear (tinyvpn's own wire, not WireGuard's)")
    return f"a datagram of {len(message)} bytes starting {message[:8].hex(' ') or '(empty)'}"


# Every ephemeral private key the check made in this lab, for the key log of a kept cable.
MADE: list = []


@dataclass
class Session:
    """Keys and indexes of one session, seen from the checker's side."""
    mine: bytes
    theirs: bytes
    sending: bytes
    receiving: bytes
    counter: int = 0
    response: bytes = b""  # the response that made it, when the check made it as responder


def respond(initiation: Initiation, responder: bytes, initiator: bytes,
            index: bytes) -> tuple:
    """The response the peer with private key `responder` makes: (message, Session)."""
    noise = Noise(b"")
    noise.chain, noise.hash = initiation.noise.chain, initiation.noise.hash
    ephemeral = os.urandom(32)
    MADE.append(ephemeral)
    public = x25519(ephemeral)
    noise.ephemeral(public)
    noise.mix(x25519(ephemeral, initiation.ephemeral))
    noise.mix(x25519(ephemeral, initiator))
    empty = noise.seal(noise.preshared(), b"")
    message = with_macs(RESPONSE + index + initiation.index + public + empty, initiator)
    receiving, sending = kdf(noise.chain, b"")
    return message, Session(index, initiation.index, sending, receiving)


def open_transport(message: bytes, session: Session) -> Optional[tuple]:
    """(counter, padded packet) of a transport message for `session`, None if not."""
    if len(message) < 32 or message[:4] != TRANSPORT or message[4:8] != session.mine:
        return None
    counter = int.from_bytes(message[8:16], "little")
    opened = unseal(session.receiving, counter, message[16:])
    return None if opened is None else (counter, opened)


# --- The lab: the learner's tinyvpn in a, wireguard-go in b -------------------------------

INJECT = """
import socket, struct, sys
# A raw socket, headers and all: the source address and port can be any, also a port that
# another program (wireguard-go) holds. The kernel fills in the IP checksum; UDP's may be 0.
source, destination = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2])
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
    for payload in map(bytes.fromhex, sys.argv[3:]):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0x4000, 64, 17, 0,
                         source, destination)
        raw.sendto(ip + struct.pack("!HHHH", 5000, 5000, 8 + len(payload), 0) + payload,
                   (sys.argv[2], 0))
"""


class WireGuardLab:
    """Namespaces a and b, the keys, a recorder on the cable, and the programs started."""

    def __init__(self, hosts: Hosts, program: Path) -> None:
        self.hosts, self.program = hosts, program
        self.keys = make_keys(hosts.logs)
        self.cable = Recorder(hosts, "b", f"{hosts.prefix}v")
        self.tinyvpn: Optional[subprocess.Popen] = None
        self.peer: Optional[subprocess.Popen] = None
        self.mallory: list = []  # her address, once b's end of the cable has it
        self.learners_keylog = hosts.logs / "tinyvpn.keylog"  # TINYVPN_KEYLOG, if it writes one

    def start_tinyvpn(self, *options: str, clock: Optional["Clock"] = None) -> subprocess.Popen:
        """a's tinyvpn -d, WireGuard's way (under `clock`, IPv4 only); Failed if it does not
        start."""
        command = clock.command(self.program) if clock else (sys.executable, str(self.program))
        if harness.KEEP:  # the learner wants to see the cable: their secrets too, if they can
            command = ("env", f"TINYVPN_KEYLOG={self.learners_keylog}", *command)
        options = ("--private-key", str(self.keys.a_file), "--peer-key",
                   b64(self.keys.b_public), *options)
        try:
            self.tinyvpn = netns.start_tinyvpn(self.hosts, "a", "-d", *options, program=command)
        except RuntimeError:
            usage = netns.run(self.hosts, "a", *command, "--help", check=False).stdout
            for option in ("--private-key", "--peer-key"):
                if option not in usage:
                    raise Failed(f"tinyvpn has no {option} option yet: --help does not list "
                                 "it", f"it understands {option} (rung 8)") from None
            raise Failed(f"a's tinyvpn did not start with {shlex.join(options)}; it said: "
                         f"{last_words(self.said())}", "it starts, and speaks WireGuard "
                         "to PEER:PORT", "9. the handshake") from None
        if clock:  # no IPv6 on the TUN: the kernel would send packets of its own
            netns.run(self.hosts, "a", "sysctl", "-qw",
                      f"net.ipv6.conf.{self.hosts.tun}.disable_ipv6=1")
        for command_line in netns.tunnel_commands(self.hosts, "a"):
            if not clock or "nodad" not in command_line:
                netns.sh(*command_line)
        return self.tinyvpn

    def keylog(self) -> str:
        """Every secret the check knows, in Wireshark's wg.keylog_file format (its
        packet-wireguard.c): both static private keys (it made them), each ephemeral private
        key it made, and the lines a's tinyvpn wrote to TINYVPN_KEYLOG, if it does."""
        lines = [f"LOCAL_STATIC_PRIVATE_KEY = {b64(key)}\n" for key in (self.keys.a, self.keys.b)]
        lines += [f"LOCAL_EPHEMERAL_PRIVATE_KEY = {b64(key)}\n" for key in MADE]
        learners = self.learners_keylog
        return "".join(lines) + (learners.read_text() if learners.exists() else "")

    def stop_tinyvpn(self) -> None:
        if self.tinyvpn:
            netns.stop(self.tinyvpn)
            self.tinyvpn = None

    def alive(self, doing: str) -> None:
        """Failed, naming the crash first, if a's tinyvpn has exited."""
        if self.tinyvpn and self.tinyvpn.poll() is not None:
            raise Failed(f"a's tinyvpn exited with status {self.tinyvpn.returncode} {doing} "
                         "(which may not be what made it crash: any datagram before may have); "
                         f"its last words: {last_words(self.said(), 3)}",
                         "it keeps running: a message it cannot use is dropped, never a crash")

    def said(self) -> str:
        return netns.output(self.hosts, "tinyvpn-a")

    def start_peer(self, endpoint: Optional[str] = None) -> subprocess.Popen:
        """wireguard-go in b, with b's key, a's public key as its peer."""
        self.peer = netns.start_wireguard_go(self.hosts, "b", self.keys.b_file,
                                             b64(self.keys.a_public), endpoint)
        return self.peer

    def stop_peer(self) -> None:
        if self.peer:
            netns.stop_wireguard_go(self.peer, self.hosts.tun)
            self.peer = None

    def latest_handshake(self) -> int:
        """What `wg show IF latest-handshakes` says in b: seconds since 1970, 0 for never."""
        shown = netns.run(self.hosts, "b", "wg", "show", self.hosts.tun, "latest-handshakes")
        return int(shown.stdout.split()[1]) if shown.stdout.split()[1:] else 0

    def inject(self, *payloads: bytes, source: str = B) -> None:
        """Datagrams to a:PORT from `source`:PORT (b's: wireguard-go's, if it runs)."""
        # Mallory, an address on b's end of the cable: she can send as anyone, and listen.
        if source == MALLORY and MALLORY not in self.mallory:
            netns.add_address(self.hosts, "b", f"{self.hosts.prefix}v", (MALLORY,))
            self.mallory.append(MALLORY)
        netns.run(self.hosts, "b", sys.executable, "-c", INJECT, source, A,
                  *(payload.hex() for payload in payloads))

    def cable_to(self, since: float) -> list:
        """(destination, message) of everything a sent since then, to anyone."""
        return [(s.udp[1], s.udp[2]) for s in self.cable.seen(since)
                if s.udp and s.udp[0] == A]

    def sent(self, since: float = 0) -> list:
        """(time, message) of everything a sent to b, oldest first."""
        return list(self.cable.timed(A, B, since))

    def await_message(self, kind: bytes, since: float, timeout: float, what: str,
                      should: str, section: str) -> tuple:
        """The first (time, message) of type `kind` a sent after `since`; Failed if none."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.alive(f"while the check waited for {what}")
            for when, message in self.sent(since):
                if message[:4] == kind:
                    return when, message
            time.sleep(0.05)
        others = [describe(message) for _, message in self.sent(since)]
        raise Failed(f"in {timeout:.0f} s a sent no {what}" +
                     (f"; it sent {', '.join(others[:3])}" if others else ""), should, section)

    def ping(self, side: str, count: int = 3, timeout: float = 2) -> bool:
        result = netns.run(self.hosts, side, "ping", "-c", str(count), "-i", "0.2", "-W",
                           str(timeout), TUNNEL[netns.OTHER[side]][0], check=False)
        return f"{count} received" in result.stdout


def last_words(text: str, lines: int = 1) -> str:
    said = text.strip().splitlines()
    return " | ".join(said[-lines:]) if said else "(nothing)"


@contextmanager
def wireguard_lab(program: Path) -> Iterator[WireGuardLab]:
    lacking = missing()
    if lacking:
        raise Failed(f"this machine cannot check part two's rungs: {lacking}",
                     "a real WireGuard to talk to: wireguard-go and wg installed")
    with netns.two_hosts() as hosts:
        MADE.clear()
        lab = WireGuardLab(hosts, program)
        try:
            yield lab
        except Exception:
            harness.keep_cable(lab.cable.packets, lab.keylog)
            raise


# --- Rung 9: the handshake, as initiator --------------------------------------------------


def check_handshake(program: Path) -> None:
    section = "9. the handshake"
    with wireguard_lab(program) as lab:
        keys = lab.keys
        started = time.time()
        lab.start_tinyvpn()
        first_at, first = lab.await_message(
            INITIATION, started, 3, "initiation after it started", "an initiation to "
            "PEER:PORT as soon as it starts", section)
        read_initiation(first, keys.b, keys.a_public, "a")
        again_at, again = lab.await_message(
            INITIATION, first_at + 0.01, 8, "second initiation while the first went "
            "unanswered", "another initiation, a new one, after 5 s (REKEY_TIMEOUT) and 0 to "
            "333 ms of jitter", section)
        if not 4.5 <= again_at - first_at <= 6.5:
            raise Failed(f"a's unanswered initiation was sent again after "
                         f"{again_at - first_at:.1f} s",
                         "again after 5 s (REKEY_TIMEOUT) and 0 to 333 ms", section)
        initiation = read_initiation(again, keys.b, keys.a_public, "a's second initiation")
        if again[8:40] == first[8:40]:
            raise Failed("a's second initiation has the same ephemeral key as its first"
                         + (", under a new index" if again[4:8] != first[4:8] else "") +
                         ": its static key and a new timestamp are sealed under the same key "
                         "and nonce twice (the two ciphertexts XOR to the plaintexts' XOR)",
                         "every initiation, a retry too, has a new ephemeral key pair and a "
                         "new random index (the paper, section 5.4.2; wireguard-go "
                         "device/noise-protocol.go, CreateMessageInitiation)", section)
        if again[4:8] == first[4:8]:
            raise Failed("a's second initiation has the same sender index as its first",
                         "every initiation has a new random index", section)
        refuse_bad_responses(lab, initiation)
        refuse_replayed_response(lab, confirm(lab, newest_initiation(lab, initiation)))
        lab.stop_tinyvpn()
        with_the_real_peer(lab)


def refuse_bad_responses(lab: WireGuardLab, initiation: Initiation) -> None:
    """Responses a must drop, one by one: none may make a send a transport message."""
    keys, index, started = lab.keys, os.urandom(4), time.time()
    good, _ = respond(initiation, keys.b, keys.a_public, index)
    impostor = os.urandom(32)
    stranger = read_as(initiation, impostor, keys)
    forged, _ = respond(stranger, impostor, keys.a_public, index)
    # mac1 proves nothing about who sent a message (anyone can compute it: its key is made
    # from a public key), so each flip but the one in mac1 comes with mac1 computed again.
    remac = lambda message: with_macs(message[:60], keys.a_public)  # noqa: E731
    for bad, what in (
            (remac(flip(good, 44)), "a response with one bit flipped in its encrypted empty "
             "field (and mac1 computed again)"),
            (remac(flip(good, 20)), "a response with one bit flipped in its ephemeral key (and "
             "mac1 computed again)"),
            (flip(good, 70), "a response with one bit flipped in its mac1"),
            (remac(flip(good, 8)), "a response whose receiver index is not a's sender index"),
            (forged, "a response made with another static key than --peer-key's"),
            (low_order(initiation, keys, index), "a response whose ephemeral key is 32 zero "
             "bytes (a low-order point: every DH with it gives zeros, known to anyone)")):
        since = time.time()
        lab.inject(bad)
        time.sleep(0.4)
        lab.alive(f"after the check sent {what}")
        answered = [m for _, m in lab.sent(since) if m[:4] == TRANSPORT]
        if answered:
            raise Failed(f"the check sent {what}; a took it, and sent a transport message",
                         "every response is checked, and dropped if anything is wrong: "
                         "mac1, the receiver index, the sealed empty field; a DH that gives "
                         "32 zero bytes (RFC 7748, section 6.1)", "9. the handshake")
    time.sleep(0.4)  # nothing follows the last one to catch a late answer: wait a little more
    if any(m[:4] == TRANSPORT for _, m in lab.sent(started)):
        raise Failed("the check sent five wrong responses; a took one of them (slowly), and "
                     "sent a transport message", "every wrong response dropped",
                     "9. the handshake")


def refuse_replayed_response(lab: WireGuardLab, session: "Session") -> None:
    """The check's response again: a must not take it a second time, and seal anything again
    under the same key and counter."""
    lab.inject(session.response)
    time.sleep(0.4)
    lab.alive("after the check sent its accepted response again (replayed)")
    lab.ping("a", 1, timeout=0.3)  # a seals an echo request: with which counter?
    counters = [o[0] for o in (open_transport(m, session) for _, m in lab.sent()) if o]
    if len(set(counters)) < len(counters):
        raise Failed("the check sent its accepted response again (replayed); a took it, made "
                     "the same keys again, and sealed with a counter used before (counters "
                     f"{counters[:6]}): the same key and nonce twice",
                     "a response is taken once: the handshake it completes is forgotten "
                     "then (wireguard-go device/noise-protocol.go, ConsumeMessageResponse: "
                     "the handshake's state is cleared once the keys are made)",
                     "9. the handshake")


def low_order(initiation: Initiation, keys: Keys, index: bytes) -> bytes:
    """A response to `initiation` whose ephemeral key is zero: both DH results are zero, so
    anyone can make it, mac1 and sealed empty field right."""
    noise = Noise(b"")
    noise.chain, noise.hash = initiation.noise.chain, initiation.noise.hash
    noise.ephemeral(bytes(32))
    noise.mix(bytes(32))  # DH(a's ephemeral, 0)
    noise.mix(bytes(32))  # DH(a's static, 0)
    empty = noise.seal(noise.preshared(), b"")
    return with_macs(RESPONSE + index + initiation.index + bytes(32) + empty, keys.a_public)


def read_as(initiation: Initiation, impostor: bytes, keys: Keys) -> Initiation:
    """The initiation's state as a responder with private key `impostor` would compute it."""
    noise = Noise(x25519(impostor))
    noise.ephemeral(initiation.ephemeral)
    noise.unseal(noise.mix(x25519(impostor, initiation.ephemeral)), initiation.message[40:88])
    noise.unseal(noise.mix(x25519(impostor, keys.a_public)), initiation.message[88:116])
    return Initiation(initiation.message, initiation.index, initiation.ephemeral,
                      initiation.stamp, noise)


def flip(message: bytes, at: int) -> bytes:
    return message[:at] + bytes([message[at] ^ 0x04]) + message[at + 1:]


def newest_initiation(lab: WireGuardLab, initiation: Initiation) -> Initiation:
    """The initiation a sent last: on a slow machine, a may have sent one more since."""
    newest = [m for _, m in lab.sent() if m[:4] == INITIATION][-1]
    if newest == initiation.message:
        return initiation
    return read_initiation(newest, lab.keys.b, lab.keys.a_public, "a's latest initiation")


def confirm(lab: WireGuardLab, initiation: Initiation) -> Session:
    """Answer `initiation` as b would; a must confirm with a keep-alive. Returns the session."""
    section = "9. the handshake"
    response, session = respond(initiation, lab.keys.b, lab.keys.a_public, os.urandom(4))
    since = time.time()
    lab.inject(response)
    _, message = lab.await_message(
        TRANSPORT, since, 2, "transport message after a correct response (the check made it "
        "with b's key, after bad ones)", "the response accepted, the keys derived, and a "
        "keep-alive sent at once to confirm them; a bad response before must change nothing",
        section)
    first = "a's first transport message after the response"
    if message[4:8] != session.mine:
        raise Failed(f"{first} has the receiver index {message[4:8].hex(' ')}",
                     f"the response's sender index, {session.mine.hex(' ')}, as it came",
                     section)
    opened = open_transport(message, session)
    if opened is None:
        raise Failed(f"{first} ({len(message)} bytes) does not decrypt with the key "
                     "the initiator sends with", "(sending, receiving) = KDF2(C, empty): the "
                     "first for the initiator to send; nonce: 4 zero bytes, then the counter "
                     "as 8 bytes little-endian; no associated data", section)
    what = "a keep-alive" if opened[1] == b"" else f"{len(opened[1])} bytes: a packet it " \
        "queued while there was no session" if opened[1][0] >> 4 in (4, 6) else None
    if opened[0] != 0 or what is None:
        raise Failed(f"{first} decrypts to counter {opened[0]} and " +
                     (what or f"{len(opened[1])} bytes that are no IP packet"),
                     "counter 0, and nothing (a keep-alive) or a packet that waited for the "
                     "session", section)
    session.response = response
    return session


def handshake(lab: WireGuardLab, *options: str) -> Session:
    """a started, and its first initiation answered by the check: the session's keys."""
    started = time.time()
    lab.start_tinyvpn(*options)
    _, message = lab.await_message(INITIATION, started, 3, "initiation after it started",
                                   "an initiation as soon as it starts", "9. the handshake")
    return confirm(lab, read_initiation(message, lab.keys.b, lab.keys.a_public, "a"))


def with_the_real_peer(lab: WireGuardLab) -> None:
    """a restarted, and wireguard-go in b: a handshake wireguard-go reports."""
    lab.start_peer()
    started = time.time()
    lab.start_tinyvpn()
    try:
        netns.wait_for(lambda: lab.latest_handshake() > 0, "the handshake", 3)
    except TimeoutError:
        lab.alive("during its handshake with wireguard-go")
        answered = [m for _, m in lab.cable.timed(B, A, started) if m[:4] == RESPONSE]
        raise Failed("wireguard-go in b reports no handshake (wg show latest-handshakes), "
                     + ("although it answered a's initiation: a sent no keep-alive it "
                        "accepted" if answered else "and never answered a's initiation"),
                     "wireguard-go answers a's initiation and counts the handshake once a's "
                     "keep-alive arrives", "9. the handshake") from None


# --- Rung 10: transport ------------------------------------------------------------------

PATTERN = b"tinyvpn, secret!"  # 16 bytes that ping -p repeats in every echo
ECHO_ID = 0x7767


def echo_request(sequence: int) -> bytes:
    """An IPv4 ICMP echo request from b's tunnel address to a's, 60 bytes: padded, it is 64."""
    return wire.echo_request(TUNNEL["b"][0], TUNNEL["a"][0], ECHO_ID, sequence, PATTERN * 2)


def transport(session: Session, packet: bytes, counter: int) -> bytes:
    """A transport message from the check's end of `session`, padded as WireGuard pads."""
    padded = packet + bytes(-len(packet) % 16)
    return (TRANSPORT + session.theirs + counter.to_bytes(8, "little")
            + seal(session.sending, counter, padded))


def check_transport(program: Path) -> None:
    with wireguard_lab(program) as lab:
        session = handshake(lab, "--keepalive", "1")
        a_tun = Recorder(lab.hosts, "a", lab.hosts.tun)
        first = transport(session, echo_request(1), 0)
        deliver(lab, a_tun, session, first, 1, "an echo request in transport message 0")
        shown = f"ICMP echo-request id={ECHO_ID} seq=1"
        if shown not in lab.said():
            raise Failed(f"a wrote the echo request to its TUN, and -d did not show it ('"
                         f"{shown}'); its last line: {last_words(lab.said())}",
                         "-d shows the decrypted inner packet, as part one's tinyvpn did",
                         "10. transport")
        check_keepalives(lab, session)
        check_counters(lab, session)
        for message, what in (
                (first, "transport message 0 again (replayed)"),
                (flip(transport(session, echo_request(2), 1), 40), "a new transport message "
                 "with one bit flipped in its encrypted packet"),
                (flip(transport(session, echo_request(2), 2), 10), "a new transport message "
                 "with one bit flipped in its counter"),
                (TRANSPORT + session.theirs + (2**64 - 1).to_bytes(8, "little") + os.urandom(80),
                 "a forged transport message, counter 2^64 - 1 and random bytes")):
            refuse(lab, a_tun, message, what)
        for counter, sequence, what in ((10, 10, "counter 10, after 0"),
                                        (5, 5, "counter 5, after 10: reordered")):
            deliver(lab, a_tun, session, transport(session, echo_request(sequence), counter),
                    sequence, f"an echo request in transport message {what}")
        refuse(lab, a_tun, transport(session, echo_request(5), 5), "transport message 5 "
               "again, from b", source=B)
        deliver(lab, a_tun, session, transport(session, echo_request(11), 11), 11,
                "an echo request from mallory's address, authentic and new (counter 11): b "
                "has moved there", source=MALLORY)
        check_window_edge(lab, a_tun, session)
        lab.stop_tinyvpn()
        through_the_real_peer(lab)


HIGH = 9000  # a counter far enough up to probe WireGuard's window at its far edge
WINDOW = 2**13 - 64  # wireguard-go device/../replay/replay.go: (ringBlocks - 1) * blockBits
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1  # the paper, 6.1; wireguard-go replay/replay.go


def check_window_edge(lab: WireGuardLab, a_tun: Recorder, session: Session) -> None:
    """Counter HIGH, then the oldest a window of WINDOW counters still holds: both taken; an
    authentic counter from REJECT_AFTER_MESSAGES up, and packets that are no IP packet that
    fits, refused."""
    section = "10. transport"
    deliver(lab, a_tun, session, transport(session, echo_request(12), HIGH), 12,
            f"an echo request in transport message {HIGH}, after 10")
    oldest = HIGH - WINDOW + 1
    try:
        deliver(lab, a_tun, session, transport(session, echo_request(13), oldest), 13,
                f"an echo request in transport message {oldest}, after {HIGH}: {WINDOW - 1} "
                "behind, reordered and new")
    except Failed as failure:
        raise Failed(failure.happened, "a message up to 2^13 - 64 - 1 = 8127 counters behind "
                     "the highest, if new, is taken: WireGuard's window is at least 2^13 - 64 "
                     "= 8128 counters wide (wireguard-go replay/replay.go; the paper, section "
                     "5.4.6)", section) from None
    request = echo_request(14)
    longer = request[:2] + (len(request) + 20).to_bytes(2, "big") + request[4:]
    for packet, counter, what in (
            (b"\xff" * 32, HIGH + 1, "32 bytes that are no IP packet"),
            (longer, HIGH + 2, "an IPv4 packet whose header says it is 20 bytes longer than "
             "what was sealed")):
        refuse(lab, a_tun, transport(session, packet, counter), f"an authentic transport "
               f"message holding {what}", source=B, should="only IP packets that fit what "
               "was sealed are written to the TUN (wireguard-go device/receive.go drops the "
               "rest)")
    refuse(lab, a_tun, transport(session, echo_request(15), REJECT_AFTER_MESSAGES),
           "an authentic transport message with counter 2^64 - 2^13 - 1", source=B,
           should="no counter from 2^64 - 2^13 - 1 (REJECT_AFTER_MESSAGES) up is taken: the "
           "paper, section 6.2; wireguard-go replay/replay.go")


def deliver(lab: WireGuardLab, a_tun: Recorder, session: Session, message: bytes,
            sequence: int, what: str, source: str = B) -> None:
    """The check sends `message` from `source`; a must write the echo request in it, without
    its padding, to its TUN, and send the reply, sealed and padded, to `source`."""
    section, since = "10. transport", time.time()
    taken(lab, a_tun, message, sequence, what, source)
    written = [p for p in a_tun.written() if echo(p) == (8, ECHO_ID, sequence)][-1]
    if len(written) != 60:
        raise Failed(f"the check sent {what}: a 60-byte packet, padded to 64; a wrote "
                     f"{len(written)} bytes to its TUN", "the padding stripped: the packet "
                     "is as long as its IP header says (bytes 2-3, big-endian)", section)
    try:
        netns.wait_for(lambda: reply(lab, session, sequence, since) is not None, "", 2)
    except TimeoutError:
        elsewhere = [d for d, m in lab.cable_to(since) if d != source and m[:4] == TRANSPORT]
        raise Failed(f"the check sent {what}; a's kernel answered it, and a sent no "
                     f"transport message back to {source} that decrypts to the answer" +
                     (f" (it sent some to {elsewhere[0]})" if elsewhere else ""),
                     "the answer is sealed with the sending key, and sent to where the "
                     "last authentic, new message came from (rung 4)", section) from None
    destination, padded = reply(lab, session, sequence, since) or ("", b"")
    if destination != source:
        raise Failed(f"the check sent {what}; a sent the answer to {destination}",
                     f"to {source}: only an authentic, new message moves the peer", section)
    if len(padded) % 16:
        raise Failed(f"a sealed a {len(padded)}-byte packet", "a packet padded with zeros to "
                     "a multiple of 16 bytes (never past the MTU) before it is sealed",
                     section)


def taken(lab: WireGuardLab, a_tun: Recorder, message: bytes, sequence: int, what: str,
          source: str = B) -> None:
    """The check sends `message` from `source`; a must write the echo request in it to its
    TUN."""
    lab.inject(message, source=source)
    try:
        netns.wait_for(lambda: any(echo(p) == (8, ECHO_ID, sequence) for p in a_tun.written()),
                       "", 2)
    except TimeoutError:
        lab.alive(f"after the check sent {what}")
        raise Failed(f"the check sent {what}; a wrote nothing of it to its TUN; a's -d said: "
                     f"{last_words(lab.said())}", "the packet inside, decrypted with the "
                     "receiving key (nonce: 4 zero bytes, then the counter little-endian), is "
                     "written to the TUN", "10. transport") from None


def reply(lab: WireGuardLab, session: Session, sequence: int, since: float) -> Optional[tuple]:
    """(where a sent it, the padded packet) of a's echo reply `sequence`, once sent."""
    for destination, message in lab.cable_to(since):
        opened = open_transport(message, session)
        if opened and echo(opened[1][:60]) == (0, ECHO_ID, sequence):
            return destination, opened[1]
    return None


def check_keepalives(lab: WireGuardLab, session: Session) -> None:
    """a runs with --keepalive 1: idle for 1.5 s, it sends a keep-alive of the session."""
    since = time.time()
    time.sleep(1.5)
    opened = [open_transport(m, session) for _, m in lab.sent(since)]
    if not any(o and o[1] == b"" for o in opened):
        raise Failed("with --keepalive 1, a sent no keep-alive in 1.5 s of sending nothing"
                     + (f"; it sent {describe(lab.sent(since)[0][1])}" if opened else ""),
                     "an empty transport message (32 bytes) after 1 s of sending nothing",
                     "10. transport")


def check_counters(lab: WireGuardLab, session: Session) -> None:
    counters = [opened[0] for opened in (open_transport(m, session) for _, m in lab.sent())
                if opened]
    if counters != list(range(len(counters))):
        raise Failed(f"a's transport messages carry the counters {counters[:6]}",
                     "0, 1, 2, ...: one more for every message, from 0 (the keep-alive, or a "
                     "packet that waited for the session)",
                     "10. transport")


def refuse(lab: WireGuardLab, a_tun: Recorder, message: bytes, what: str,
           source: str = MALLORY, should: str = "") -> None:
    """Mallory (or b) sends `message`: nothing reaches a's TUN, -d says why, and the peer does
    not move to mallory."""
    before, since, who = len(a_tun.written()), time.time(), \
        "mallory" if source == MALLORY else "the check"
    lab.inject(message, source=source)
    time.sleep(0.4)
    lab.alive(f"after {who} sent {what}")
    if len(a_tun.written()) > before:
        raise Failed(f"{who} sent {what}; a wrote a packet from it to its TUN", should or
                     "only an authentic transport message (its tag checked first), never "
                     "seen before (a replay window on its counter), reaches the TUN",
                     "10. transport")
    if source == MALLORY:
        lab.ping("a", 1, timeout=0.3)  # a seals an echo request for b: sent where?
        if any(d == MALLORY and m[:4] == TRANSPORT for d, m in lab.cable_to(since)):
            raise Failed(f"mallory sent {what}; a dropped it, but sent its next transport "
                         f"message to her ({MALLORY}): it moved the peer before the tag and "
                         "the window said the message was authentic and new",
                         "the peer moves only once a message is authentic and new: tag, "
                         "then window, then the address (rung 4; wireguard-go "
                         "device/receive.go: SetEndpointFromPacket after ValidateCounter)",
                         "10. transport")
    lines = [line for line in lab.said().splitlines() if f"(from {source}:" in line]
    if not lines or "DROP" not in lines[-1].upper():
        raise Failed(f"a's -d line for {what}: {lines[-1] if lines else '(none)'}",
                     "every message dropped is shown as DROPPED, with the reason",
                     "10. transport")


def through_the_real_peer(lab: WireGuardLab) -> None:
    """a restarted, wireguard-go in b: ping both ways, 1 MiB of TCP each way, nothing of the
    inner packets readable on the cable."""
    section = "10. transport"
    lab.start_peer()
    since = time.time()
    lab.start_tinyvpn()
    for side in "ab":
        result = netns.run(lab.hosts, side, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-p",
                           PATTERN.hex(), TUNNEL[netns.OTHER[side]][0], check=False)
        if "3 received" not in result.stdout:
            lab.alive("while pings crossed")
            raise Failed(f"through wireguard-go, {side}'s pings got {result.stdout.strip()}"
                         .splitlines()[-2] if result.stdout.strip() else
                         f"{side}'s ping failed", "pings cross both ways", section)
    for source, sink in (("a", "b"), ("b", "a")):
        try:
            with redirect_stdout(io.StringIO()):
                sent, received, _ = tcp_transfer(lab.hosts, 1024 * 1024, source, sink)
        except (AssertionError, subprocess.SubprocessError):
            lab.alive("during a TCP transfer")
            sent, received = ("1048576", ""), ("not all of it: the transfer broke off", "")
        if sent != received:
            raise Failed(f"1 MiB over TCP from {source} to {sink}, through wireguard-go, "
                         f"arrived as {' '.join(received)}",
                         "the same bytes: same size, same SHA-256", section)
    inner = socket.inet_aton(TUNNEL["a"][0]) + socket.inet_aton(TUNNEL["b"][0])
    for message in [seen.udp[2] for seen in lab.cable.seen(since) if seen.udp]:
        if PATTERN in message or inner in message or inner[4:] + inner[:4] in message:
            raise Failed("the cable carried an inner packet's bytes in the clear",
                         "no byte of the inner packet can be read on the cable", section)


# --- Rung 11: responder, and new sessions ------------------------------------------------


@dataclass
class Initiated:
    """An initiation the check made, as b, and what it needs to read the response."""
    message: bytes
    ephemeral: bytes
    noise: Noise


def initiate(keys: Keys, stamp: bytes, initiator: Optional[bytes] = None) -> Initiated:
    """An initiation to a, from b (or from the private key `initiator`), timestamp `stamp`."""
    static = initiator or keys.b
    noise, ephemeral, index = Noise(keys.a_public), os.urandom(32), os.urandom(4)
    MADE.append(ephemeral)
    noise.ephemeral(x25519(ephemeral))
    sealed = noise.seal(noise.mix(x25519(ephemeral, keys.a_public)), x25519(static))
    timestamp = noise.seal(noise.mix(x25519(static, keys.a_public)), stamp)
    message = with_macs(INITIATION + index + x25519(ephemeral) + sealed + timestamp,
                        keys.a_public)
    return Initiated(message, ephemeral, noise)


def read_response(message: bytes, initiated: Initiated, keys: Keys) -> Session:
    """Decode a's response to `initiated`; Failed naming the first field that is wrong."""
    where = "11. responder"
    if len(message) != 92:
        raise Failed(f"a answered the check's initiation with {describe(message)}",
                     "a response: 92 bytes, starting 02 00 00 00", where)
    if message[8:12] != initiated.message[4:8]:
        raise Failed(f"a's response has the receiver index {message[8:12].hex(' ')}",
                     f"the initiation's sender index, {initiated.message[4:8].hex(' ')}, as it "
                     "came", where)
    if message[60:76] != mac(digest(LABEL_MAC1, keys.b_public), message[:60]):
        raise Failed("a's response has a mac1 that does not match", "mac1 = MAC(HASH(\"mac1"
                     "----\" + the INITIATOR's public key), the 60 bytes before mac1)", where)
    noise = Noise(b"")
    noise.chain, noise.hash = initiated.noise.chain, initiated.noise.hash
    theirs = message[12:44]
    noise.ephemeral(theirs)
    noise.mix(x25519(initiated.ephemeral, theirs))
    noise.mix(x25519(keys.b, theirs))
    if noise.unseal(noise.preshared(), message[44:60]) != b"":
        raise Failed("a's response: its encrypted empty field does not decrypt",
                     "the responder's steps: its ephemeral mixed in, DH(ephemeral, "
                     "initiator's ephemeral), DH(ephemeral, initiator's static), then "
                     "KDF3(C, the pre-shared key: 32 zeros) gives (C, t, key); H mixes t", where)
    sending, receiving = kdf(noise.chain, b"")
    return Session(initiated.message[4:8], message[4:8], sending, receiving)


def check_responder(program: Path) -> None:
    section = "11. responder"
    with wireguard_lab(program) as lab:
        keys = lab.keys
        lab.start_tinyvpn()
        a_tun = Recorder(lab.hosts, "a", lab.hosts.tun)
        stamp = time.time_ns()
        initiated = initiate(keys, tai64n(stamp))
        since = time.time()
        lab.inject(initiated.message)
        _, response = lab.await_message(RESPONSE, since, 2, "response to the check's "
                                        "initiation (made with b's key, timestamp now)",
                                        "a response, at once", section)
        session = read_response(response, initiated, keys)
        netns.run(lab.hosts, "a", "ping", "-c", "2", "-i", "0.2", "-W", "0.3",
                  TUNNEL["b"][0], check=False)
        early = [m for _, m in lab.sent(since) if m[:4] == TRANSPORT and m[4:8] == session.mine]
        if early:
            raise Failed("a answered the check's initiation, then sent a transport message "
                         "with the new session before the initiator had used it",
                         "a responder sends with a new session only once a transport "
                         "message has come in with it: until then, the initiator may not "
                         "have the keys (key confirmation)", section)
        for message, what in (
                (initiated.message, "the same initiation again (replayed)"),
                (initiate(keys, tai64n(stamp - 10**9)).message, "a new initiation with a "
                 "timestamp 1 s older"),
                (flip(initiate(keys, tai64n(time.time_ns())).message, 120), "a new "
                 "initiation from b's key, timestamp now, with one bit flipped in its mac1"),
                (initiate(keys, tai64n(time.time_ns()), os.urandom(32)).message,
                 "an initiation from another static key than --peer-key's")):
            since = time.time()
            lab.inject(message, source=MALLORY)
            time.sleep(0.4)
            lab.alive(f"after mallory sent {what}")
            if any(m[:4] == RESPONSE for _, m in lab.cable_to(since)):
                raise Failed(f"mallory sent {what}; a answered it",
                             "an initiation is answered only if its mac1 is right (the "
                             "paper, section 5.4.4), it comes from --peer-key's key, and its "
                             "timestamp is newer than any answered before", section)
        session = not_locked_out(lab)
        newer_session_first(lab, a_tun, session)
        with_a_restarted_peer(lab)


def newer_session_first(lab: WireGuardLab, a_tun: Recorder, answered: Session) -> None:
    """a answered b; now b answers a's own initiation, a newer session. An echo request in
    the one a answered is taken, and answered in the newer (wireguard-go keypair.go: the
    stale `next` becomes `previous`, never `current`)."""
    section = "11. responder"
    for _ in range(2):  # a may send a retry between the check's reading and its answer
        own = [m for _, m in lab.sent() if m[:4] == INITIATION][-1]
        initiation = read_initiation(own, lab.keys.b, lab.keys.a_public, "a")
        response, newer = respond(initiation, lab.keys.b, lab.keys.a_public, os.urandom(4))
        since = time.time()
        lab.inject(response)
        time.sleep(0.5)
        if any(open_transport(m, newer) for _, m in lab.sent(since)):
            break
    else:
        raise Failed("the check answered a's own initiation; a sent nothing with the session",
                     "a keep-alive (or what waited) at once, as in rung 9", "9. the handshake")
    since = time.time()
    what = "an echo request in the session a had answered, after a's own (newer) one was made"
    taken(lab, a_tun, transport(answered, echo_request(1), 0), 1, what)
    try:
        netns.wait_for(lambda: reply(lab, newer, 1, since) or reply(lab, answered, 1, since),
                       "", 2)
    except TimeoutError:
        raise Failed(f"the check sent {what}; a sent no reply in either session",
                     "the reply, sealed in the newer session", section) from None
    if not reply(lab, newer, 1, since):
        raise Failed(f"the check sent {what}; a answered in the older session: a stale, "
                     "unconfirmed session displaced the newer one a sends with",
                     "the session a made as initiator is newer: the one it answered may "
                     "still receive, but never becomes the one it sends with (wireguard-go "
                     "device/noise-protocol.go, BeginSymmetricSession)", section)


def not_locked_out(lab: WireGuardLab) -> Session:
    """A stranger's initiation, a year ahead, then b's, now: b's is answered. Its session."""
    section, keys = "11. responder", lab.keys
    ahead = initiate(keys, tai64n(time.time_ns() + 365 * 86400 * 10**9), os.urandom(32))
    lab.inject(ahead.message, source=MALLORY)
    time.sleep(0.4)
    initiated, since = initiate(keys, tai64n(time.time_ns())), time.time()
    lab.inject(initiated.message)
    try:
        _, response = lab.await_message(RESPONSE, since, 2, "", "", section)
    except Failed:
        raise Failed("mallory sent a valid initiation from another static key than "
                     "--peer-key's, its timestamp a year ahead; then the check's (b's key, "
                     "timestamp now, newer than any before) got no response: a stranger "
                     "locked the real peer out", "the timestamp is compared, and remembered, "
                     "only once the initiator's static key is --peer-key's (the paper, "
                     "section 5.4.2; wireguard-go device/noise-protocol.go, "
                     "ConsumeMessageInitiation)", section) from None
    return read_response(response, initiated, keys)


def with_a_restarted_peer(lab: WireGuardLab) -> None:
    """wireguard-go in b, twice with fresh state, initiates; traffic resumes each time; a
    replay of its initiation changes nothing."""
    section = "11. responder"
    for attempt in ("started", "restarted"):
        lab.stop_peer()
        lab.start_peer(endpoint=A)  # fresh: it initiates with the first packet it sends
        since = time.time()
        if not lab.ping("b", 1, timeout=5):
            lab.alive(f"after wireguard-go {attempt}")
            answered = any(m[:4] == RESPONSE for _, m in lab.sent(since))
            raise Failed(f"wireguard-go in b, {attempt}, initiated a handshake; "
                         + ("a answered, but b's ping got no answer within 5 s" if answered
                            else "a never answered it"), "a answers, and traffic resumes "
                         "within seconds", section)
    captured = [m for _, m in lab.cable.timed(B, A) if m[:4] == INITIATION][-1]
    since = time.time()
    lab.inject(captured, source=MALLORY)
    time.sleep(0.4)
    if any(m[:4] == RESPONSE for _, m in lab.cable_to(since)):
        raise Failed("mallory replayed wireguard-go's initiation, captured on the cable; a "
                     "answered it (is the timestamp compared with the newest answered?)",
                     "a replayed initiation is dropped: its timestamp is not newer", section)
    if not lab.ping("a", 3) or not lab.ping("b", 3):
        raise Failed("after mallory replayed wireguard-go's initiation, pings got no answer",
                     "a replay changes nothing: the session in use goes on", section)


# --- Rung 12: timers, with a's clock in the check's hands ---------------------------------
# WireGuard's own timers are not what is checked: the check plays b itself, and sets a's clock
# with libfaketime (Debian's faketime package), which every clock read of a's process obeys.
# Frozen, it moves only when the check moves it; then the check wakes a with a datagram a
# drops (the guide's contract: timers read the clock each time the loop wakes).

FAKETIME = "/usr/lib/*/faketime/libfaketime.so.1"
WAKE = b"tinyvpn check: wake up, and look at the clock"
REKEY_TIMEOUT, JITTER = 5.0, 0.333  # the paper, sections 6.1 and 6.4; wireguard-go timers.go
KEEPALIVE_TIMEOUT = 10.0  # the paper, section 6.1; wireguard-go device/constants.go
REKEY_ATTEMPT_TIME = 90.0  # wireguard-go counts MaxTimerHandshakes = 90 / 5 retries after it
# wireguard-go sends MaxTimerHandshakes + 2 = 20 initiations: the last 19 waits after the first
ROUNDING = 0.02  # a TAI64N stamp may be rounded down to a multiple of 2^24 ns (16.8 ms)
LAST_RETRY = (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT + 1) * (REKEY_TIMEOUT + JITTER + ROUNDING) + 0.1
QUEUED, LOST = b"sent while alone", b"given up, drop!!"  # ping -p patterns, 16 bytes each


class Clock:
    """a's clock: a file libfaketime reads at every clock read; frozen at `now`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(round(time.time()))

    def set(self, when: float) -> None:
        self.now = when
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))
        self.path.with_suffix(".new").write_text(f"{stamp}.{round(when % 1 * 1e9):09d}\n")
        os.replace(self.path.with_suffix(".new"), self.path)  # never read half written

    def run_ahead(self, seconds: float) -> None:
        """From now on a's clock runs, `seconds` ahead of the real one."""
        self.path.with_suffix(".new").write_text(f"+{seconds:.0f}\n")
        os.replace(self.path.with_suffix(".new"), self.path)

    def command(self, program: Path) -> tuple:
        library = sorted(Path("/").glob(FAKETIME.lstrip("/")))
        return ("env", f"LD_PRELOAD={library[0]}", f"FAKETIME_TIMESTAMP_FILE={self.path}",
                "FAKETIME_NO_CACHE=1", "TZ=UTC", sys.executable, str(program))


def faketime_missing() -> Optional[str]:
    if not list(Path("/").glob(FAKETIME.lstrip("/"))):
        return "libfaketime missing: apt-get install faketime (rung 12 sets a's clock with it)"
    return None


def stamp_time(initiation: Initiation) -> float:
    """When a made `initiation`, by its own clock: its TAI64N timestamp."""
    seconds, nanoseconds = struct.unpack(">QI", initiation.stamp)
    return seconds - 2**62 - 10 + nanoseconds / 1e9


class TimerLab:
    """Rung 12's lab: a under the check's clock, IPv4 only (the kernel's IPv6 chatter would
    be traffic), and everything a sent, decoded."""

    def __init__(self, lab: WireGuardLab) -> None:
        self.lab, self.keys = lab, lab.keys
        self.clock = Clock(lab.hosts.logs / "a.clock")
        self.seen = 0  # initiations of a's already read

    def wake(self, at: float, why: str) -> None:
        """Set a's clock to `at` and wake a; return once a has dropped the wake-up datagram."""
        self.clock.set(at)
        before = self.drops()
        self.lab.inject(WAKE)
        try:
            netns.wait_for(lambda: self.drops() > before, "", 5)
        except TimeoutError:
            self.lab.alive(f"after its clock was set {why}")
            raise Failed("a did not show (-d) the check's wake-up datagram as DROPPED within "
                         "5 s: either it did not read it, or this machine is too slow to "
                         "judge rung 12", "every datagram read, a dropped one shown by -d at "
                         "once", "12. timers") from None
        time.sleep(0.25)

    def drops(self) -> int:
        return sum(1 for line in self.lab.said().splitlines()
                   if "DROP" in line.upper() and f"(from {B}:" in line)

    def initiations(self, wait: float = 0) -> list:
        """a's initiations not read before, decoded; waits up to `wait` s for one."""
        deadline = time.time() + wait
        while True:
            sent = [m for _, m in self.lab.sent() if m[:4] == INITIATION][self.seen:]
            if sent or time.time() >= deadline:
                break
            time.sleep(0.05)
        self.seen += len(sent)
        return [read_initiation(m, self.keys.b, self.keys.a_public, "a") for m in sent]

    def ping(self, pattern: bytes) -> None:
        netns.run(self.lab.hosts, "a", "ping", "-c", "1", "-W", "0.2", "-p", pattern.hex(),
                  TUNNEL["b"][0], check=False)

    def carried(self, session: Session, since: float, pattern: bytes) -> list:
        """Destinations of a's transport messages in `session` since then holding `pattern`."""
        found = [(d, open_transport(m, session)) for d, m in self.lab.cable_to(since)]
        return [d for d, opened in found if opened and pattern in opened[1]]


def check_timers(program: Path) -> None:
    section = "12. timers"
    lacking = faketime_missing()
    if lacking:
        raise Failed(f"this machine cannot check rung 12: {lacking}", "libfaketime installed")
    with wireguard_lab(program) as lab:
        timers = TimerLab(lab)
        lab.start_tinyvpn(clock=timers.clock)
        last = check_retries(timers)
        session = check_queue(timers, last)
        session = check_rekey_on_sending(timers, session)
        check_rekey_on_receiving(timers, session)
        check_done_as_responder(timers)
        lab.stop_tinyvpn()
        through_wireguard_go_across_a_rekey(lab, timers.clock, section)


def check_retries(timers: TimerLab) -> Initiation:
    """a alone: its initiations, every 5 s + 0 to 333 ms, a fresh ephemeral each, until about
    90 s; then silence. Returns the last."""
    section = "12. timers"
    found = timers.initiations(3)
    if not found:
        raise Failed("a sent no initiation after it started", "an initiation as soon as it "
                     "starts", "9. the handshake")
    tries, waits = [found[0]], []
    while True:
        last = stamp_time(tries[-1])
        timers.wake(last + REKEY_TIMEOUT - 0.01, "to 4.99 s after its last initiation")
        early = timers.initiations()
        if early:
            raise Failed(f"a sent an initiation again {stamp_time(early[0]) - last:.2f} s "
                         "after the one before, by its own clock (which the check sets)",
                         "again after REKEY_TIMEOUT (5 s) + a jitter of 0 to 333 ms (the "
                         "paper, section 6.4; wireguard-go device/timers.go)", section)
        for step in (0, 0.111, 0.222, JITTER + ROUNDING + 0.001):
            timers.wake(last + REKEY_TIMEOUT + step, f"to {REKEY_TIMEOUT + step:.3f} s after")
            found = timers.initiations(2 if step > JITTER else 0)
            if found:
                break
        trying = last - stamp_time(tries[0])
        if not found and trying < REKEY_ATTEMPT_TIME - REKEY_TIMEOUT:
            timers.wake(last + REKEY_TIMEOUT + 1.5, "to 6.5 s after its last initiation")
            late = timers.initiations(2)
            if late:
                raise Failed("a sent its next initiation later than "
                             f"{REKEY_TIMEOUT + JITTER + ROUNDING + 0.001:.3f} s after the one "
                             f"before, by {stamp_time(late[0]) - last:.2f} s, by its own clock "
                             "(which the check sets)",
                             "again after REKEY_TIMEOUT (5 s) + a jitter of 0 to 333 ms, no "
                             "more (the paper, section 6.4; wireguard-go device/timers.go)",
                             section)
        if not found:
            if trying < REKEY_ATTEMPT_TIME - REKEY_TIMEOUT:
                raise Failed(f"a's initiations went unanswered; it sent {len(tries)}, the last "
                             f"{trying:.1f} s after the first (by its clock), and none "
                             f"{REKEY_TIMEOUT + JITTER + ROUNDING + 0.001:.3f} s after that",
                             "again every 5 s + jitter while unanswered, until "
                             "REKEY_ATTEMPT_TIME (90 s) of trying (the paper, section 6.4)",
                             section)
            break
        retry = found[0]
        if retry.ephemeral in {t.ephemeral for t in tries}:
            raise Failed(f"a's retry {len(tries)} has the ephemeral key of an initiation "
                         "before: the same key and nonce seal its static key and timestamp "
                         "again", "a fresh ephemeral key and index for every initiation (the "
                         "paper, section 6.4; wireguard-go device/noise-protocol.go)", section)
        waits.append(stamp_time(retry) - last)
        tries.append(retry)
        if stamp_time(retry) - stamp_time(tries[0]) > LAST_RETRY:
            raise Failed(f"a still sent initiations {stamp_time(retry) - stamp_time(tries[0]):.0f}"
                         " s after the first went unanswered (by its clock)", "a handshake is "
                         "given up after REKEY_ATTEMPT_TIME (90 s; wireguard-go gives up "
                         "after 20 initiations, the last near 98 s): the paper, section 6.4; "
                         "wireguard-go device/timers.go",
                         section)
        if len(tries) == 3:
            timers.ping(LOST)  # queued for this handshake, which will be given up
    if all(wait < REKEY_TIMEOUT + ROUNDING for wait in waits):
        raise Failed(f"a's {len(waits)} retries all came {REKEY_TIMEOUT:.0f} s after the one "
                     "before, by its clock, to the hundredth: no jitter",
                     "REKEY_TIMEOUT + a random jitter of 0 to 333 ms, so that peers do not "
                     "retry in lockstep (wireguard-go device/timers.go)", section)
    if any(wait < REKEY_TIMEOUT - ROUNDING for wait in waits):
        raise Failed(f"a retried after {min(waits):.3f} s", "not before REKEY_TIMEOUT (5 s)",
                     section)
    for later in (30, 300):
        since = time.time()
        timers.wake(stamp_time(tries[-1]) + later, f"{later} s after")
        if timers.lab.sent(since):
            raise Failed(f"a gave up its handshake, and still sent "
                         f"{describe(timers.lab.sent(since)[0][1])} {later} s after its last "
                         "initiation, with nothing to send", "silence, until a packet comes "
                         "from the TUN: only new data starts a handshake again (the paper, "
                         "section 6.4)", section)
    return tries[-1]


def check_queue(timers: TimerLab, last: Initiation) -> Session:
    """New data after giving up: a handshake at once; answered (from mallory's address), the
    packet that waited goes out to her; the one of the handshake given up, never."""
    section, lab, keys = "12. timers", timers.lab, timers.keys
    timers.ping(QUEUED)
    found = timers.initiations(2)
    if not found:
        raise Failed("a had given up its handshake; a packet came from its TUN, and a sent no "
                     "initiation within 2 s", "new data starts a new handshake at once (the "
                     "paper, section 6.4)", section)
    response, session = respond(found[-1], keys.b, keys.a_public, os.urandom(4))
    since = time.time()
    lab.inject(response, source=MALLORY)
    try:
        netns.wait_for(lambda: bool(timers.carried(session, since, QUEUED)), "", 2)
    except TimeoutError:
        lab.alive("after the check answered its initiation")
        raise Failed("a ping was read from a's TUN while a had no session; the check answered "
                     "the initiation that followed, and a never sent that ping",
                     "a packet read while there is no session waits in a queue, and is sent "
                     "once the handshake is done (wireguard-go device/send.go, "
                     "SendStagedPackets)", section) from None
    if timers.carried(session, since, LOST):
        raise Failed("a sent a packet it had queued for the handshake it gave up",
                     "a handshake given up drops what waited for it (wireguard-go "
                     "device/timers.go, expiredRetransmitHandshake)", section)
    if timers.carried(session, since, QUEUED) != [MALLORY]:
        raise Failed(f"the check answered a's initiation from {MALLORY}; a sent the packet "
                     f"that waited to {timers.carried(session, since, QUEUED)[0]}",
                     "an authentic response moves the peer, as a transport message does "
                     "(wireguard-go device/receive.go)", "10. transport")
    session.counter = 0
    return session


def send_as_b(timers: TimerLab, session: Session, packet: bytes = b"") -> None:
    timers.lab.inject(transport(session, packet, session.counter))
    session.counter += 1


def echo_reply(sequence: int) -> bytes:
    """An echo reply from b to a, which a's kernel takes and answers with nothing: data."""
    request = echo_request(sequence)
    icmp = b"\x00" + request[21:22] + bytes(2) + request[24:]
    return request[:20] + icmp[:2] + struct.pack("!H", wire.checksum(icmp)) + icmp[4:]


def check_rekey_on_sending(timers: TimerLab, session: Session) -> Session:
    """The passive keep-alive at 10 s; no new handshake while idle or at 119 s; one when a
    sends at 150 s. Returns the session the check makes then."""
    section, lab, clock = "12. timers", timers.lab, timers.clock
    made = clock.now
    clock.set(made + 1)
    send_as_b(timers, session, echo_reply(1))
    for after, wanted in ((KEEPALIVE_TIMEOUT - 0.1, False), (KEEPALIVE_TIMEOUT + 0.5, True)):
        since = time.time()
        timers.wake(made + 1 + after, f"{after} s after data came in")
        time.sleep(0.2 if wanted else 0)
        kept = [m for _, m in lab.sent(since) if open_transport(m, session) and
                open_transport(m, session)[1] == b""]  # type: ignore[index]
        if bool(kept) != wanted:
            raise Failed(f"data came in (an echo reply: a's kernel answers nothing); "
                         f"{after} s later by a's clock, a had " +
                         ("already sent a keep-alive" if kept else "sent no keep-alive"),
                         "a passive keep-alive: an empty transport message KEEPALIVE_TIMEOUT "
                         "(10 s) after data came in, if a sent nothing since (the paper, "
                         "section 6.5; wireguard-go device/timers.go)", section)
    for age, wanted in ((119, False), (150, True)):
        timers.wake(made + age, f"{age} s after the session was made")
        if age == 150 and timers.initiations():
            raise Failed("a started a new handshake 150 s into a session, with nothing to "
                         "send", "an idle tunnel stays silent: the initiator rekeys when it "
                         "SENDS on a session 120 s old (the paper, section 6.2)", section)
        since = time.time()
        timers.ping(QUEUED)
        if not timers.carried(session, since, QUEUED):
            raise Failed(f"a did not send a ping on its session {age} s old",
                         "a session is used to send until REJECT_AFTER_TIME (180 s)", section)
        found = timers.initiations(2 if wanted else 0.3)
        if bool(found) != wanted:
            raise Failed(f"a sent a ping on a session it initiated, {age} s old by its clock, "
                         + ("and started a new handshake" if found else "and started no new "
                            "handshake"), "a new handshake by the session's initiator when it "
                         "sends on a session REKEY_AFTER_TIME (120 s) old, not before (the "
                         "paper, section 6.2; wireguard-go device/send.go, "
                         "keepKeyFreshSending)", section)
        send_as_b(timers, session)  # a keep-alive back: the peer is there
    response, newer = respond(found[-1], timers.keys.b, timers.keys.a_public, os.urandom(4))
    lab.inject(response)
    time.sleep(0.3)
    return newer


def check_rekey_on_receiving(timers: TimerLab, session: Session) -> None:
    """Keep-alives from b at 160 and 166 s: a new handshake only after the second; at 181 s the
    session takes nothing more, and a sends nothing with it."""
    section, lab, clock = "12. timers", timers.lab, timers.clock
    made = clock.now
    for age, wanted in ((160, False), (166, True)):
        clock.set(made + age)
        send_as_b(timers, session)
        found = timers.initiations(2 if wanted else 0.4)
        if bool(found) != wanted:
            raise Failed(f"b sent a keep-alive on a session a initiated, {age} s old by a's "
                         "clock; a " + ("started" if found else "did not start") +
                         " a new handshake", "a new handshake by the initiator when it "
                         "receives on a session REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - "
                         "REKEY_TIMEOUT = 165 s old, not before (wireguard-go "
                         "device/receive.go, keepKeyFreshReceiving)", section)
    a_tun = Recorder(lab.hosts, "a", lab.hosts.tun)
    clock.set(made + 181)
    since = time.time()
    send_as_b(timers, session, echo_request(21))
    time.sleep(0.5)
    lab.alive("after the check sent an echo request on a session 181 s old")
    if any(echo(p) == (8, ECHO_ID, 21) for p in a_tun.written()):
        raise Failed("the check sent an echo request on a session 181 s old by a's clock; a "
                     "wrote it to its TUN", "no session is used after REJECT_AFTER_TIME "
                     "(180 s): its keys receive nothing more, as they send nothing more "
                     "(the paper, section 6.2; wireguard-go device/receive.go)", section)
    timers.ping(QUEUED)
    if any(open_transport(m, session) is not None or m[4:8] == session.mine
           for _, m in lab.sent(since) if m[:4] == TRANSPORT):
        raise Failed("a sent a transport message on a session 181 s old by its clock",
                     "no session is used after REJECT_AFTER_TIME (180 s)", section)


def check_done_as_responder(timers: TimerLab) -> None:
    """a's own handshake is under way (since 166 s); b's initiation crosses it, and b confirms
    a's response: a's handshake is done too, so no retry of it follows."""
    section, lab = "12. timers", timers.lab
    initiated = initiate(timers.keys, tai64n(time.time_ns()))
    since = time.time()
    lab.inject(initiated.message)
    _, response = lab.await_message(RESPONSE, since, 2, "response to the check's initiation "
                                    "(b's key, timestamp now), while a's own handshake was "
                                    "under way", "a response, at once", "11. responder")
    send_as_b(timers, read_response(response, initiated, timers.keys))  # b confirms it
    time.sleep(0.3)
    timers.initiations()  # what a sent before it had the confirmation
    later = REKEY_TIMEOUT + JITTER + ROUNDING + 0.1
    timers.wake(timers.clock.now + later, f"{later:.2f} s after b confirmed a session")
    if timers.initiations(0.5):
        raise Failed("a was retrying its own initiation when it answered b's, and b confirmed "
                     f"that session; {later:.2f} s later by its clock, a initiated again",
                     "a session confirmed ends the handshake under way, whoever began it: no "
                     "more retries (wireguard-go device/receive.go, ReceivedWithKeypair, then "
                     "device/timers.go, timersHandshakeComplete)", section)


def through_wireguard_go_across_a_rekey(lab: WireGuardLab, clock: Clock, section: str) -> None:
    """wireguard-go in b; a's clock runs; 20 pings, and a's clock jumps 130 s mid-way: a
    rekeys with wireguard-go, and no ping is lost, the first (sent before any session) too."""
    lab.start_peer()  # without a's address: it answers, a initiates
    clock.run_ahead(0)
    lab.start_tinyvpn(clock=clock)
    pinging = netns.start(lab.hosts, "a", "ping", "-c", "20", "-i", "0.2", "-W", "2",
                          TUNNEL["b"][0], name="ping")
    time.sleep(2)
    jumped = time.time()
    clock.run_ahead(130)
    pinging.wait(20)
    lab.alive("while pings crossed, through wireguard-go")
    answered = {int(n) for n in re.findall(r"icmp_seq=(\d+)",
                                           netns.output(lab.hosts, "ping", "out"))}
    lost = sorted(set(range(1, 21)) - answered)
    if lost:
        raise Failed(f"through wireguard-go, 20 pings a second apart by five, a's clock moved "
                     f"130 s ahead after 2 s: pings {lost[:8]} were lost",
                     "none lost: the first waits in the queue for the handshake; the new "
                     "handshake after 120 s goes on while the old session carries traffic",
                     section)
    if not any(m[:4] == RESPONSE for _, m in lab.cable.timed(B, A, jumped)):
        raise Failed("a's clock moved 130 s ahead while it sent pings through wireguard-go; "
                     "no new handshake followed", "a new handshake when the initiator sends "
                     "on a session 120 s old (REKEY_AFTER_TIME)", section)


def seconds(times: list) -> str:
    return ", ".join(f"{t:.0f}" for t in times) or "(none)"

# --- What part two needs ------------------------------------------------------------------


def missing() -> Optional[str]:
    """What part two needs that this machine lacks, with how to get it."""
    tools = netns.missing_tools("wireguard-go", "wg")
    if tools:
        return (f"{' and '.join(tools)} missing: apt-get install wireguard-go "
                "wireguard-tools (the real WireGuard peer these rungs talk to)")
    return None
