"""Rung 14, cookies under load (tests/ladder/part-three.md), keeps its promise to a
learner, as rungs 9 to 12 do (see test_ladder_part_two_protocol.py):

- the checker's XChaCha20-Poly1305 gives the draft's vectors, and it names the mistake behind
  a cookie reply it cannot open;
- the file solved to the rung before (13) fails rung 14, for want of a cookie's mac2; with
  the reference solution it passes, and still passes rungs 9 to 13;
- plausible wrong solutions are caught, each with words that name the mistake.

The rung's reference is the patch 14-cookies.patch, applied after every patch before it. Each
check takes about 25 s (wireguard-go, two floods, libfaketime).
"""

import importlib.util
import os
import socket
import time
from pathlib import Path
from typing import Optional

import part_three_cookies as checker
import part_two_protocol as wg
import pytest
import reference_crypto as crypto
import rungs
from conftest import Solved, skip_or_fail
from harness import Failed
from rungs import changed_lines

ROW = rungs.rung(14)
PATCH = ROW.solution


def check(program: Path) -> Optional[Failed]:
    """Rung 14's check on `program`, as the runner runs it; None if it passes."""
    return rungs.check(ROW.number, program)


@pytest.fixture(scope="session")
def references(solved: Solved) -> tuple:
    """(the file solved to the rung before 14, the file solved to 14), as a learner makes them."""
    return solved(ROW.number - 1), solved(ROW.number)


@pytest.fixture
def lab_tools(root: None) -> None:
    """Skip (fail in CI) unless wireguard-go, wg and libfaketime are installed."""
    lacking = wg.missing() or wg.faketime_missing()
    if lacking:
        skip_or_fail(f"needs {lacking}")


def test_the_reference_solution_is_small() -> None:
    assert changed_lines(PATCH) <= 150


def test_the_checkers_xchacha20_poly1305_gives_the_drafts_vectors() -> None:
    key, nonce, subkey = crypto.HCHACHA20_2_2_1
    assert crypto.hchacha20(key, nonce) == subkey
    key, nonce, plaintext, aad, sealed = crypto.XAEAD_A_3_1
    assert crypto.xaead_encrypt(key, nonce, plaintext, aad) == sealed
    assert crypto.xaead_decrypt(key, nonce, sealed, aad) == plaintext
    assert crypto.xaead_decrypt(key, nonce, sealed, aad + b"!") is None
    assert crypto.xaead_decrypt(key, nonce[:23] + b"\0", sealed, aad) is None


@pytest.mark.parametrize("key_of, aad_of, mistake, words", [
    ("b", "mac1", "", "a key made from the INITIATOR's public key"),
    ("a", "none", "", "it opens without associated data"),
    ("a", "mac1", "input added", "if HChaCha20 adds the input back"),
    ("a", "mac1", "12-byte nonce, no HChaCha20", "plain ChaCha20-Poly1305 and the nonce's "
     "first 12 bytes")])
def test_the_checker_names_the_mistake_behind_a_cookie_reply_it_cannot_open(
        tmp_path: Path, key_of: str, aad_of: str, mistake: str, words: str) -> None:
    keys = wg.make_keys(tmp_path)
    initiation = wg.initiate(keys, wg.tai64n(1_700_000_000 * 10**9)).message
    cookie, nonce = os.urandom(16), os.urandom(24)
    right = checker.cookie_reply(initiation, cookie, keys.a_public, nonce)
    assert checker.open_cookie(right, initiation, keys) == cookie
    key = wg.digest(checker.LABEL_COOKIE, keys.a_public if key_of == "a" else keys.b_public)
    aad = initiation[116:132] if aad_of == "mac1" else b""
    wrong = right[:32] + crypto.xaead_encrypt(key, nonce, cookie, aad, mistake)
    assert words in checker.cookie_mistake(wrong, initiation, keys)


@pytest.mark.ladder
def test_rung_14_fails_the_file_solved_to_the_rung_before_and_passes_its_reference(
        lab_tools: None, references: tuple) -> None:
    before = check(references[0])
    assert before is not None
    assert before.happened == ("after the check's cookie reply to its latest initiation, then "
                               "forged ones, a's next initiation carries no mac2 (16 zero "
                               "bytes)")
    assert check(references[1]) is None


@pytest.mark.ladder
def test_the_reference_of_rung_14_still_passes_rungs_9_to_13(lab_tools: None,
                                                            references: tuple) -> None:
    # Cookies must not change what part two's peers see: no load, no cookie, no mac2.
    for rung in (9, 10, 11, 12, 13):
        failure = rungs.check(rung, references[1])
        assert failure is None, f"rung {rung}: {failure and failure.happened}"


def test_the_reference_counts_initiations_by_when_they_arrived_not_when_read(
        solved: Solved) -> None:
    # A busy tinyvpn reads a flood late: counted by the kernel's stamps (SIOCGSTAMP), it still
    # sees 500 a second, where counting its own slow reads it would see too few to be load.
    spec = importlib.util.spec_from_file_location("solved14", solved(ROW.number))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.bind(("127.0.0.1", 0))
        for late in (0.0, 0.5):  # the first read turns the stamps on
            sender.sendto(b"initiation", receiver.getsockname())
            time.sleep(late)
            receiver.recv(100)
            read = time.time()
            arrived = module.arrival(receiver)
            time.sleep(0.1)  # the kernel turns its stamps on a moment later
    assert read - 0.6 < arrived < read - 0.4


# The reference with one plausible mistake: (mistake, the text it replaces, what replaces it,
# words the checker's "what happened" must hold).
WRONG = [
    ("a cookie not bound to the port",
     'mac(self.secret, host.packed + struct.pack("<H", sender[1]))', "mac(self.secret, "
     "host.packed)", "its mac2 made with the cookie a gave 192.0.2.2:40001, from port 40002 of "
     "the same address; a answered it with a response"),
    ("a cookie bound to the port only", 'host.packed + struct.pack("<H", sender[1])',
     'struct.pack("<H", sender[1])', "its mac2 made with the cookie a gave 192.0.2.2:40001, "
     "from 192.0.2.3:40001: another address, the same port; a answered it with a response"),
    ("IPv4 senders only (each taken as ::ffff:a.b.c.d)",
     "        if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped:\n"
     "            host = host.ipv4_mapped  # IPv4 on our dual-stack socket: its 4 bytes\n",
     "        host = host.ipv4_mapped  # every sender: ::ffff:a.b.c.d\n",
     "a's tinyvpn exited with status 1 after the check sent a new initiation from b's key, "
     "timestamp now, mac2 zero, from [2001:db8:1::2]:40001"),
    ("an IPv6 sender's last 4 bytes only, as if IPv4", "host.packed + struct",
     "host.packed[-4:] + struct", "from [2001:db8:1::1:0:0:2]:40001: another IPv6 address, "
     "the same last 4 bytes, the same port; a answered it with a response"),
    ("a received cookie used for ever (no 120 s)",
     "if time.monotonic() - self.cookie_got >= COOKIE_AGE:", "if not self.cookie:",
     "130 s after the check's cookie reply (a's clock moved ahead), a's next initiation still "
     "carries a mac2 made with that cookie"),
    ("cookies for --peer-key only (the hub never judged under load)",
     "        if self.cookies.answered(self.network, message, sender):  # before any DH\n",
     "        if not self.hub and self.cookies.answered(self.network, message, sender):\n",
     "each with a valid mac1), the hub read"),
    ("mac2 accepted unchecked under load (only a zero mac2 gets a cookie reply)",
     "return not hmac.compare_digest(mac(self.cookie_for(sender), message[:-16]),\n"
     "                                       message[-16:])",
     "return message[-16:] == bytes(16)", "a new initiation from b's key with a mac2 of 16 "
     "random bytes; a answered it with a response"),
    ("a DH before the load is judged (the static key decrypted first)",
     "        if self.cookies.answered(self.network, message, sender):  # before any DH\n"
     "            return UNDER_LOAD\n"
     "        noise = Noise(self.public)\n"
     "        noise.ephemeral(message[8:40])\n"
     "        static = noise.open(noise.mix(x25519(self.private, message[8:40])), "
     "message[40:88])\n",
     "        noise = Noise(self.public)\n"
     "        noise.ephemeral(message[8:40])\n"
     "        static = noise.open(noise.mix(x25519(self.private, message[8:40])), "
     "message[40:88])\n"
     "        if self.cookies.answered(self.network, message, sender):\n"
     "            return UNDER_LOAD\n",
     "it computed a DH for them"),
    ("a cookie reply to an older initiation taken (the first mac1 kept)",
     "self.last_mac1 = message[-16:]", "self.last_mac1 = self.last_mac1 or message[-16:]",
     "a mac2 made with the cookie of a cookie reply to a's first initiation, older than its "
     "second"),
    ("the cookie secret never changed", "if time.monotonic() - self.secret_made >= "
     "COOKIE_SECRET_AGE:", "if not self.secret:", "its cookie secret was not changed in 130 s"),
    ("a crash on a forged cookie reply",
     "            return \"cookie reply not sealed by our peer for our latest handshake "
     "message\"", "            raise ValueError(\"forged cookie reply\")",
     "a's tinyvpn exited with status 1 while the check waited for second initiation after "
     "forged cookie replies"),
    ("the cookie reply sent to the peer, not to the initiation's sender",
     "network.sock.sendto(self.reply(message, sender), sender)",
     "network.send_one(memoryview(self.reply(message, sender)))",
     "from port 40002 of the same address, under mallory's flood (500 initiations a second, "
     "each with a valid mac1); a sent nothing back to 192.0.2.2:40002 within 8 s"),
    ("mac2 made over the bytes before mac1", "        return mac(self.cookie, message)\n",
     "        return mac(self.cookie, message[:-16])\n", "carries a mac2 made over the bytes "
     "before mac1"),
    ("always under load", "LOAD = 50", "LOAD = 0", "with no flood, the check sent one "
     "initiation from b's key, timestamp now; a answered it with a cookie reply"),
    ("the cookie reply decrypted without checking its tag",
     "        cookie = xaead_decrypt(self.opening, message[8:32], message[32:], self.last_mac1)\n",
     "        cookie = chacha20(hchacha20(self.opening, message[8:24]), 1,\n"
     "                          bytes(4) + message[24:32], message[32:48])\n",
     "after forged cookie replies only, a's next initiation carries a mac2 made with what a "
     "decryption that skips the tag reads in a cookie reply"),
    ("cookies sealed with the initiator's key, opened with our own",
     "digest(LABEL_COOKIE, public), digest(LABEL_COOKIE, peer)",
     "digest(LABEL_COOKIE, peer), digest(LABEL_COOKIE, public)",
     "a mac2 made with the cookie of a cookie reply sealed with another key than "
     "HASH(\"cookie--\" + b's public key)"),
]


@pytest.mark.ladder
@pytest.mark.parametrize("mistake, text, wrong, words", WRONG,
                         ids=[mistake for mistake, *_ in WRONG])
def test_a_plausible_wrong_solution_is_caught(lab_tools: None, references: tuple,
                                             tmp_path: Path, mistake: str, text: str,
                                             wrong: str, words: str) -> None:
    solution = references[1].read_text()
    assert solution.count(text) == 1, f"the mistake no longer fits {PATCH.name}"
    program = tmp_path / "tinyvpn.py"
    program.write_text(solution.replace(text, wrong))
    failure = check(program)
    assert failure is not None, f"{mistake}: passed rung 14"
    assert words in failure.happened, failure.happened
    # The section to reread is the rung's own: the check names the rule where it is taught.
    assert (failure.section or checker.SECTION) == checker.SECTION
