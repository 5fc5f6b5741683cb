"""The checks of part two's first rungs (tests/ladder/part-two.md): WireGuard's primitives,
written by the learner from the RFCs. The runner calls them through the ladder's table
(tests/ladder/rungs.py): `python3 tests/ladder/check.py 8` climbs rungs 1 to 8, and
`python3 tests/ladder/check.py 6 --only` checks rung 6 alone.

    6. ChaCha20                  chacha20(key, counter, nonce, data) -> bytes
    7. Poly1305 and the AEAD     poly1305(key, message) -> bytes,
                                 aead_encrypt(key, nonce, plaintext, aad) -> bytes,
                                 aead_decrypt(key, nonce, sealed, aad) -> Optional[bytes]
    8. X25519 and WireGuard's keys   x25519(scalar, u) -> bytes; --private-key, --peer-key

The functions are judged by calling them: a second Python (probe.py) imports the learner's
tinyvpn.py and makes the calls, answering each on a line of JSON. Every answer is compared
with the RFC's bytes; a wrong one is compared with what known mistakes would give
(reference_crypto.py), to name the likely one. The command line of rung 8 is judged from
outside, against `wg pubkey`. Rung 8 needs no root either: tinyvpn runs in stdio mode on
127.0.0.1. Standard library only.
"""

import base64
import json
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from harness import Failed
from reference_crypto import (
    A1,
    A2,
    A3,
    AEAD_2_8_2,
    AEAD_A_5,
    ALICE,
    BLOCK_2_3_2,
    BOB,
    IETF,
    ITERATED,
    JABBERWOCKY,
    KEY_0_31,
    KEY_1C92,
    NINE,
    POLY1305_2_5_2,
    SHARED,
    SUNSCREEN,
    SUNSCREEN_2_4_2,
    X25519_5_2,
    aead_encrypt,
    chacha20,
    h,
    likely_mistake,
    x25519,
)

GUIDE = "tests/ladder/part-two.md"
PROBE = str(Path(__file__).resolve().with_name("probe.py"))

# --- Calling the learner's functions, in a Python of their own (probe.py) ------------------


class Call:
    """One call of a learner's function, what it should return, and the words for both."""

    def __init__(self, what: str, name: str, args: tuple, expected: Optional[bytes],
                 should: str = "", mistakes: bool = True) -> None:
        self.what, self.name, self.args, self.expected = what, name, args, expected
        self.should, self.mistakes = should, mistakes

    def request(self) -> list:
        return [self.name, *({"hex": a.hex()} if isinstance(a, bytes) else a for a in self.args)]


def call_all(program: Path, calls: Sequence[Call], timeout: float) -> None:
    """Make the calls in a second Python; Failed at the first answer that is not right."""
    command = [sys.executable, PROBE, str(program)]
    requests = json.dumps([c.request() for c in calls])
    try:
        run = subprocess.run(command, input=requests, capture_output=True, text=True,
                             timeout=timeout)
        output, errors, finished = run.stdout, run.stderr, True
    except subprocess.TimeoutExpired as expired:
        output, errors, finished = as_text(expired.stdout), as_text(expired.stderr), False
    answers = [json.loads(line) for line in output.splitlines() if line.endswith("}")]
    if answers and "crash" in answers[0]:
        raise Failed(f"{program.name} does not import: {answers[0]['crash']}",
                     "python3 -c 'import tinyvpn' runs without an error: fix that first")
    if not answers:
        raise Failed(f"importing {program.name} did not end in {timeout:.0f} s" if not finished
                     else f"importing {program.name} ended Python; it said: "
                     f"{(errors.strip().splitlines() or ['(nothing)'])[-1]}",
                     "importing it only defines things: main() runs under "
                     "`if __name__ == \"__main__\":`")
    answers = answers[1:]
    for made, answer in zip(calls, answers):
        judge(program, made, answer)
    if len(answers) < len(calls):
        unanswered = calls[len(answers)]
        if not finished:
            raise Failed(f"{unanswered.what}: {unanswered.name} did not return in {timeout:.0f} "
                         "s (an endless loop?)", unanswered.should or "it returns")
        last = errors.strip().splitlines()[-1:] or ["(nothing)"]
        raise Failed(f"{unanswered.what}: Python ended while {unanswered.name} ran; it said: "
                     f"{last[0]}", unanswered.should or "it returns")


def as_text(output: "bytes | str | None") -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def judge(program: Path, made: Call, answer: dict) -> None:
    """Failed unless `answer` is what `made` should have returned."""
    if "missing" in answer:
        raise Failed(f"{program.name} has no function {made.name} yet",
                     f"a function {SIGNATURES[made.name]} at the top level of the file, with "
                     f"that name exactly (the contract in {GUIDE})")
    if "error" in answer:
        raise Failed(f"{made.what}: {made.name} raised {answer['error']}",
                     made.should or "it returns bytes")
    if "type" in answer:
        raise Failed(f"{made.what}: {made.name} returned a {answer['type']}, not bytes",
                     f"{SIGNATURES[made.name]}")
    got = bytes.fromhex(answer["hex"]) if "hex" in answer else None
    if got == made.expected:
        return
    if got is None:
        raise Failed(f"{made.what}: {made.name} returned None", made.should)
    if made.expected is None:
        raise Failed(f"{made.what}: {made.name} returned {len(got)} bytes of plaintext, not "
                     "None", made.should)
    raise Failed(f"{made.what}: {made.name} returned {difference(made, got)}{why(made, got)}",
                 made.should)


SIGNATURES = {
    "chacha20": "chacha20(key, counter, nonce, data) -> bytes",
    "poly1305": "poly1305(key, message) -> bytes",
    "aead_encrypt": "aead_encrypt(key, nonce, plaintext, aad) -> bytes",
    "aead_decrypt": "aead_decrypt(key, nonce, sealed, aad) -> Optional[bytes]",
    "x25519": "x25519(scalar, u) -> bytes",
}


def show(data: bytes) -> str:
    if not data:
        return "b'' (0 bytes)"
    return f"{data[:8].hex(' ')}{' ...' if len(data) > 8 else ''} ({len(data)} bytes)"


def difference(made: Call, got: bytes) -> str:
    """What `got` is, next to what it should be, from the first byte where they differ."""
    expected = made.expected or b""
    right = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y),
                 min(len(got), len(expected)))
    if right < 8 or len(got) != len(expected):
        return f"{show(got)}, not {show(expected)}"
    where = f"from byte {right} on"
    if made.name == "aead_encrypt" and right >= len(expected) - 16:
        where = "the ciphertext is right, the tag (the last 16 bytes) is not"
    return (f"{len(got)} bytes, the first {right} right; {where}: {got[right:right + 8].hex(' ')}"
            f" ..., not {expected[right:right + 8].hex(' ')} ...")


def why(made: Call, got: bytes) -> str:
    """The likely mistake behind a wrong answer, in words."""
    mistake = likely_mistake(made.name, made.args, got) if made.mistakes else ""
    return f"; that is what {made.name} gives when it {mistake}" if mistake else ""


# --- Rung 6: ChaCha20 --------------------------------------------------------------------

CHACHA20_SHOULD = ("RFC 8439 2.4: the data XOR the keystream, block `counter` for its first 64 "
                   "bytes, block counter + 1 for the next 64, and so on")


def chacha20_calls() -> list:
    def call(what: str, key: bytes, counter: int, nonce: bytes, data: bytes,
             expected: Optional[bytes] = None) -> Call:
        return Call(what, "chacha20", (key, counter, nonce, data),
                    chacha20(key, counter, nonce, data) if expected is None else expected,
                    CHACHA20_SHOULD)

    calls = [call("RFC 8439 A.1 #1 (key, nonce and counter 0): 64 zero bytes", *A1[0][:3],
                  bytes(64), A1[0][3]),
             call("RFC 8439 2.3.2's block (counter 1): 64 zero bytes", KEY_0_31, 1,
                  h("000000090000004a00000000"), bytes(64), BLOCK_2_3_2)]
    calls += [call(f"RFC 8439 A.1 #{n}: 64 zero bytes", *vector[:3], bytes(64), vector[3])
              for n, vector in enumerate(A1[1:], 2)]
    calls.append(call("RFC 8439 2.4.2's sunscreen (114 bytes, counter 1)", KEY_0_31, 1,
                      h("000000000000004a00000000"), SUNSCREEN, SUNSCREEN_2_4_2))
    calls += [call(f"RFC 8439 A.2 #{n} ({len(vector[3])} bytes, counter {vector[1]})", *vector)
              for n, vector in enumerate(A2, 1)]
    key, nonce = KEY_1C92, h("000000000000004a00000007")
    calls += [call(f"{length} bytes (RFC 8439 2.4.2's key, counter 5)", key, 5, nonce,
                   JABBERWOCKY[:length]) for length in (0, 1, 63, 64, 65, 127)]
    whole = chacha20(key, 7, nonce, IETF)
    calls += [call("IETF's 375 bytes in two calls: the first 128 bytes at counter 7",
                   key, 7, nonce, IETF[:128], whole[:128]),
              call("IETF's 375 bytes in two calls: the rest at counter 9 (two blocks on), "
                   "which must give the rest of what one call gives", key, 9, nonce,
                   IETF[128:], whole[128:])]
    return calls


def check_chacha20(program: Path) -> None:
    call_all(program, chacha20_calls(), timeout=30)


# --- Rung 7: Poly1305 and the AEAD -------------------------------------------------------

POLY1305_SHOULD = ("RFC 8439 2.5: r (clamped) and s from the key, little-endian; for each "
                   "16-byte block, with a 1 beyond its last byte, acc = (acc + block) * r mod "
                   "2^130 - 5; the tag is acc + s, its low 16 bytes")
SEAL_SHOULD = ("RFC 8439 2.8: the plaintext encrypted from block 1, then Poly1305 (key: block "
               "0's first 32 bytes) over aad, zeros to a multiple of 16, the ciphertext, zeros "
               "to a multiple of 16, and the two lengths, 8 bytes each, little-endian")
OPEN_SHOULD = ("aead_decrypt returns the plaintext when the tag is the one aead_encrypt "
               "computes for that ciphertext and aad, and None otherwise")


def aead_calls() -> list:
    key, message, tag = POLY1305_2_5_2
    calls = [Call("RFC 8439 2.5.2's 'Cryptographic Forum Research Group'", "poly1305",
                  (key, message), tag, POLY1305_SHOULD)]
    calls += [Call(f"RFC 8439 A.3 #{n}{f' ({probes})' if probes else ''}", "poly1305",
                   (key, message), tag, POLY1305_SHOULD)
              for n, (key, message, tag, probes) in enumerate(A3, 1)]
    key, nonce, plaintext, aad, sealed = AEAD_2_8_2
    calls.append(Call("RFC 8439 2.8.2's sunscreen", "aead_encrypt", (key, nonce, plaintext, aad),
                      sealed, SEAL_SHOULD))
    for what, text, data in (("an empty plaintext", b"", aad), ("empty aad", plaintext, b""),
                             ("an empty plaintext and empty aad", b"", b""),
                             ("32 bytes of plaintext, 16 of aad", plaintext[:32], aad + aad[:4])):
        calls.append(Call(f"2.8.2's key and nonce, {what}", "aead_encrypt",
                          (key, nonce, text, data), aead_encrypt(key, nonce, text, data),
                          SEAL_SHOULD))
        calls.append(Call(f"2.8.2's key and nonce, {what}, sealed and opened again",
                          "aead_decrypt", (key, nonce, aead_encrypt(key, nonce, text, data), data),
                          text, OPEN_SHOULD))
    calls.append(Call("RFC 8439 A.5's message", "aead_decrypt", AEAD_A_5[:2] + AEAD_A_5[4:]
                      + AEAD_A_5[3:4], AEAD_A_5[2], OPEN_SHOULD))
    return calls + tampered_calls()


def tampered_calls() -> list:
    """2.8.2's sealed message with one bit flipped here or there: each must be refused."""
    key, nonce, plaintext, aad, sealed = AEAD_2_8_2
    cut = len(sealed) - 16

    def flip(data: bytes, index: int, bit: int) -> bytes:
        changed = bytearray(data)
        changed[index] ^= 1 << bit
        return bytes(changed)

    calls = []
    for where, place, bit, words in (
            ("the ciphertext's first byte", 0, 0, ""),
            ("the ciphertext's middle byte", cut // 2, 4, ""),
            ("the ciphertext's last byte", cut - 1, 7, ""),
            ("the tag's first byte", cut, 0, "the whole tag is compared"),
            ("the tag's middle byte", cut + 8, 4, "the whole tag is compared, all 16 bytes"),
            ("the tag's last byte", len(sealed) - 1, 7, "the whole tag is compared, all 16 "
                                                        "bytes")):
        calls.append(Call(f"2.8.2's sealed sunscreen, bit {bit} of {where} flipped",
                          "aead_decrypt", (key, nonce, flip(sealed, place, bit), aad), None,
                          f"None: {words or 'the tag covers every byte of the ciphertext'}"))
    for where, place, bit in (("first", 0, 0), ("middle", 6, 4), ("last", len(aad) - 1, 7)):
        calls.append(Call(f"2.8.2's sealed sunscreen, bit {bit} of aad's {where} byte flipped",
                          "aead_decrypt", (key, nonce, sealed, flip(aad, place, bit)), None,
                          "None: the tag covers every byte of aad"))
    calls.append(Call("2.8.2's sealed sunscreen, with the nonce's last byte changed",
                      "aead_decrypt", (key, flip(nonce, 11, 0), sealed, aad), None,
                      "None: the tag's one-time key comes from the key and the nonce"))
    calls.append(Call("15 bytes, too short to hold a tag", "aead_decrypt",
                      (key, nonce, sealed[:15], aad), None, "None: there is no tag to check"))
    return calls


def check_aead(program: Path) -> None:
    call_all(program, aead_calls(), timeout=30)


# --- Rung 8: X25519 and WireGuard's keys -------------------------------------------------

X25519_SHOULD = ("RFC 7748 5: the scalar clamped, u's top bit masked, both little-endian; the "
                 "Montgomery ladder over bits 254 to 0; x_2 * z_2^(p - 2) mod p, little-endian")
X25519_TIMEOUT = 60


def x25519_calls() -> list:
    calls = [Call(f"RFC 7748 5.2's vector #{n}", "x25519", (scalar, u), result, X25519_SHOULD)
             for n, (scalar, u, result) in enumerate(X25519_5_2, 1)]
    calls += [Call(f"RFC 7748 5.2's iterated vector, {n:,} iteration{'s' * (n > 1)} (k, u = "
                   "x25519(k, u), k, from k = u = 9)", "x25519", (n,), result,
                   X25519_SHOULD if n == 1 else "one X25519 takes a few milliseconds: the "
                   "ladder in projective coordinates (x, z), one division at the end",
                   mistakes=False) for n, result in ITERATED.items()]
    calls += [Call(f"RFC 7748 6.1: {name}'s public key, x25519(her private key, 9)", "x25519",
                   (private, NINE), public, X25519_SHOULD)
              for name, (private, public) in (("Alice", ALICE), ("Bob", BOB))]
    calls += [Call(f"RFC 7748 6.1: the secret {name} shares, x25519(her private key, "
                   f"{other}'s public key)", "x25519", (mine[0], theirs[1]), SHARED, X25519_SHOULD)
              for name, other, mine, theirs in (("Alice", "Bob", ALICE, BOB),
                                                ("Bob", "Alice", BOB, ALICE))]
    return calls


def check_x25519(program: Path) -> None:
    call_all(program, x25519_calls(), timeout=X25519_TIMEOUT)
    if shutil.which("wg") is None:
        raise Failed("wg is not installed: the check compares tinyvpn's public key with what "
                     "`wg pubkey` prints", "apt-get install wireguard-tools, then check again")
    with tempfile.TemporaryDirectory() as folder:
        check_public_key(program, Path(folder))
        check_bad_keys(program, Path(folder))


PUBLIC_KEY = re.compile(r"public key: (\S+)")


def check_public_key(program: Path, folder: Path) -> None:
    """With --private-key and -d, tinyvpn names its public key: the one wg pubkey prints."""
    private, public = wg_keys(folder, "private.key")
    _, peer = wg_keys(folder, "peer.key")
    options = ["-d", "--private-key", str(private), "--peer-key", peer]
    said, running = start_and_listen(program, options, PUBLIC_KEY)
    named = [match.group(1) for match in map(PUBLIC_KEY.search, said) if match]
    if not named:
        usage = run_tinyvpn(program, ["--help"]).stdout
        for option in ("--private-key", "--peer-key"):
            if option not in usage:
                raise Failed(f"tinyvpn has no {option} option yet: --help does not list it",
                             f"it understands {option}, as the rung describes")
        raise Failed(f"given a file as wg genkey writes it (44 characters and a newline), "
                     f"tinyvpn {' '.join(options)} stdio ... {'said' if running else 'ended'}"
                     f" and said: {said[-1] if said else '(nothing)'}",
                     "-d says at start, on stderr, 'public key: ' and this host's public key "
                     "in base64, as `wg show` does")
    printed = named[0]
    if printed != public:
        raise Failed(f"tinyvpn said 'public key: {printed}' for a private key whose public key "
                     f"`wg pubkey` prints as {public}{wrong_public_key(private, printed)}",
                     "the public key is x25519(private key, 9), in base64 as wg prints it")
    if not running:
        raise Failed("with --private-key and --peer-key, tinyvpn said its public key and "
                     f"stopped; it said: {said[-1]}",
                     "until rung 9, tinyvpn runs as before with them")


def wrong_public_key(private: Path, printed: str) -> str:
    key = base64.b64decode(private.read_text())
    public = x25519(key, NINE)
    for value, mistake in ((key, "the private key itself: never show that one"),
                           (public.hex(), "in hex"), (public[::-1], "its bytes reversed"),
                           (x25519(key, NINE, "no clamping"), "the scalar not clamped")):
        shown = value if isinstance(value, str) else base64.b64encode(value).decode()
        if printed == shown:
            return f": that is {mistake}"
    return ""


def check_bad_keys(program: Path, folder: Path) -> None:
    """Each bad key, and each bad combination of options, stops tinyvpn with a one-line error."""
    _, peer = wg_keys(folder, "peer.key")
    private, _ = wg_keys(folder, "mine.key")
    short, raw = folder / "short.key", folder / "raw.key"
    short.write_text(base64.b64encode(secrets.token_bytes(31)).decode() + "\n")
    raw.write_bytes(secrets.token_bytes(32))
    missing = folder / "missing.key"
    long = base64.b64encode(secrets.token_bytes(33)).decode()
    cases = (
        (["--private-key", str(missing), "--peer-key", peer], "a --private-key file that does "
         "not exist", "missing.key"),
        (["--private-key", str(short), "--peer-key", peer], "a --private-key file holding 31 "
         "bytes in base64", "32"),
        (["--private-key", str(raw), "--peer-key", peer], "a --private-key file of 32 bytes "
         "that are not base64 (a key as rung 2's --key takes it)", "base64"),
        (["--private-key", str(private), "--peer-key", long], "a --peer-key of 33 bytes in "
         "base64", "32"),
        (["--private-key", str(private), "--peer-key", "not-a-key!"], "a --peer-key that is "
         "not base64", "base64"),
        (["--key", str(raw), "--private-key", str(private), "--peer-key", peer],
         "--key with --private-key", "--key"),
        (["--private-key", str(private)], "--private-key without --peer-key", "--peer-key"),
    )
    for options, what, words in cases:
        try:
            result = run_tinyvpn(program, options + ["stdio", "127.0.0.1", str(free_port())])
        except subprocess.TimeoutExpired:
            raise Failed(f"given {what}, tinyvpn started and ran",
                         "it stops at once, with a one-line error that says what is wrong, "
                         "and a non-zero exit status") from None
        lines = result.stderr.strip().splitlines()
        if result.returncode == 0 or "Traceback" in result.stderr or not lines \
                or words not in lines[-1]:
            traceback = " (a traceback) ending" if "Traceback" in result.stderr else ""
            raise Failed(f"given {what}, tinyvpn exited with status {result.returncode} and "
                         f"said{traceback}: {lines[-1] if lines else '(nothing)'}",
                         f"a one-line error that says what is wrong (mentioning {words!r}), "
                         "and a non-zero exit status")


def wg_keys(folder: Path, name: str) -> tuple:
    """A new private key in file `name`, as wg genkey writes it, and its public key."""
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    path = folder / name
    path.touch(mode=0o600)
    path.write_text(private)
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout.strip()
    return path, public


def run_tinyvpn(program: Path, options: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(program), *options], capture_output=True,
                          text=True, timeout=5, stdin=subprocess.DEVNULL)


def start_and_listen(program: Path, options: list, wanted: "re.Pattern[str]") -> tuple:
    """Run tinyvpn in stdio mode to its own port on 127.0.0.1 until it prints a line `wanted`
    matches, or exits, or 5 s pass; return its stderr lines, and whether it still ran."""
    port = str(free_port())
    process = subprocess.Popen([sys.executable, str(program), *options, "stdio", "127.0.0.1",
                                port], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    lines: list = []
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline and not (lines and wanted.search(lines[-1])):
            ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
            line = process.stderr.readline() if ready else ""  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line.rstrip("\n"))
        time.sleep(0.3)  # does it keep running?
        running = process.poll() is None
    finally:
        process.kill()
        _, rest = process.communicate()
    return lines + rest.splitlines(), running


def free_port() -> int:
    """A UDP port nothing uses now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
