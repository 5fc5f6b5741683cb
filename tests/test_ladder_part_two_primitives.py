"""Part two's first rungs (tests/ladder/part-two.md: 6. ChaCha20, 7. Poly1305 and the AEAD,
8. X25519 and WireGuard's keys; checked by tests/ladder/part_two_primitives.py) keep their
promise to a learner:

- the checker's own primitives (tests/ladder/reference_crypto.py), which it uses to name a
  learner's mistake, pass the RFCs' vectors, and every mistake it knows shows on at least one
  of its calls;
- the shipped tinyvpn.py fails each rung for want of the function it needs;
- a crash is named first, with its error and line; an endless loop is caught;
- with the reference solutions 1 to N applied, rung N passes and rung N + 1 does not (that
  test, for every rung, is in test_ladder.py);
- plausible wrong solutions (a reference solution with one mistake) are caught, each with words
  that name the mistake.

The checks of these rungs need no root: the functions are called in a second Python
(tests/ladder/probe.py), and rung 8 runs tinyvpn in stdio mode on 127.0.0.1; rung 8 needs wg
(wireguard-tools). The runner (tests/ladder/check.py), which the tests of a learner's run
start, needs root or a user namespace all the same: it makes namespaces for every rung.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import part_two_primitives as primitives
import pytest
import reference_crypto as crypto
import rungs
from conftest import SOLUTIONS, Solved, skip_or_fail
from harness import Failed
from netns import TINYVPN
from rungs import changed_lines

TESTS = Path(__file__).resolve().parent



@pytest.fixture
def wg() -> None:
    if shutil.which("wg") is None:
        skip_or_fail("needs wg: apt-get install wireguard-tools")


def check(rung: int, program: Path) -> "Failed | None":
    return rungs.check(rung, program)


# --- The checker's own primitives ---------------------------------------------------------


def test_the_checkers_primitives_pass_the_rfc_vectors() -> None:
    for key, counter, nonce, keystream in crypto.A1:
        assert crypto.chacha20(key, counter, nonce, bytes(64)) == keystream
    assert crypto.chacha20(crypto.KEY_0_31, 1, bytes.fromhex("000000090000004a00000000"),
                           bytes(64)) == crypto.BLOCK_2_3_2
    for key, counter, nonce, plaintext, ciphertext in crypto.A2:
        assert crypto.chacha20(key, counter, nonce, plaintext) == ciphertext
    for key, message, tag, _ in crypto.A3:
        assert crypto.poly1305(key, message) == tag
    for key, nonce, plaintext, aad, sealed in (crypto.AEAD_2_8_2, crypto.AEAD_A_5):
        assert crypto.aead_encrypt(key, nonce, plaintext, aad) == sealed
    for scalar, u, result in crypto.X25519_5_2:
        assert crypto.x25519(scalar, u) == result
    assert crypto.x25519(crypto.ALICE[0], crypto.BOB[1]) == crypto.SHARED


@pytest.mark.parametrize("name, calls", [("chacha20", primitives.chacha20_calls),
                                         ("poly1305", primitives.aead_calls),
                                         ("aead_encrypt", primitives.aead_calls),
                                         ("x25519", primitives.x25519_calls)])
def test_every_mistake_the_checker_names_shows_on_one_of_its_calls(name: str, calls: object
                                                                   ) -> None:
    function, mistakes = crypto.MISTAKES[name]
    made = [c for c in calls() if c.name == name and len(c.args) > 1]  # type: ignore[operator]
    for mistake in mistakes:
        assert any(function(*c.args, mistake=mistake) != c.expected for c in made), mistake


# --- What a learner sees first -------------------------------------------------------------


@pytest.mark.parametrize("rung, function", [(6, "chacha20"), (7, "poly1305"), (8, "x25519")])
def test_the_shipped_file_fails_each_rung_for_want_of_its_function(rung: int,
                                                                  function: str) -> None:
    failure = check(rung, TINYVPN)
    assert failure is not None
    assert failure.happened == f"tinyvpn.py has no function {function} yet"


@pytest.mark.ladder
def test_a_learner_checks_rung_6_alone_with_only(root: None) -> None:
    run = subprocess.run([sys.executable, str(TESTS / "ladder" / "check.py"), "6", "--only"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout.startswith(f"Checking {TINYVPN} against rung 6 (tests/ladder/"
                                 "part-two.md)\n  rung 6  ChaCha20      FAILED")
    assert "what happened: tinyvpn.py has no function chacha20 yet" in run.stdout
    assert "rung 1" not in run.stdout
    assert run.stdout.endswith("Stopped at rung 6: 0 of 1 passed.\n")


def test_a_learner_who_solved_part_one_runs_rung_6(root: None, solved: Solved) -> None:
    run = subprocess.run([sys.executable, str(TESTS / "ladder" / "check.py"), "8", "--program",
                          str(solved(5))], capture_output=True, text=True,  # type: ignore
                         timeout=300)
    assert run.returncode == 1
    assert "rung 5  encrypt       passed" in run.stdout
    assert "rung 6  ChaCha20      FAILED" in run.stdout
    assert ("      what happened: tinyvpn.py has no function chacha20 yet\n"
            "      what should:   a function chacha20(key, counter, nonce, data) -> bytes at "
            "the top level of the file, with that name exactly (the contract in "
            "tests/ladder/part-two.md)\n"
            "      reread:        tests/ladder/part-two.md, \"6. ChaCha20\"\n") in run.stdout
    assert run.stdout.endswith("Stopped at rung 6: 5 of 8 passed.\n")


def test_a_crash_is_named_first_with_its_line(tmp_path: Path) -> None:
    program = tmp_path / "tinyvpn.py"
    program.write_text("import sys\n\ndef chacha20(key, counter, nonce, data)\n    return data\n")
    failure = check(6, program)
    assert failure is not None
    assert failure.happened.startswith("tinyvpn.py does not import: SyntaxError: ")
    assert failure.happened.endswith("(tinyvpn.py:3)")
    program.write_text("def chacha20(key, counter, nonce, data):\n"
                       "    print('debugging', key)\n"  # the learner's prints change nothing
                       "    return bytes(len(data) // counter)\n")
    failure = check(6, program)
    assert failure is not None
    assert failure.happened == ("RFC 8439 A.1 #1 (key, nonce and counter 0): 64 zero bytes: "
                                "chacha20 raised ZeroDivisionError: integer division or modulo "
                                "by zero (tinyvpn.py:3)")


def test_an_endless_loop_and_a_memory_hog_are_caught(tmp_path: Path) -> None:
    program = tmp_path / "tinyvpn.py"
    program.write_text("def chacha20(key, counter, nonce, data):\n    while True:\n"
                       "        pass\n")
    with pytest.raises(Failed, match=r"chacha20 did not return in 2 s \(an endless "):
        primitives.call_all(program, primitives.chacha20_calls(), timeout=2)
    program.write_text("import time\n\ntime.sleep(60)  # main() run at import, say\n")
    with pytest.raises(Failed, match=r"^importing tinyvpn.py did not end in 2 s$"):
        primitives.call_all(program, primitives.chacha20_calls(), timeout=2)
    program.write_text("def x25519(scalar, u):\n    return bytes(3 * 1024**3)\n")
    failure = check(8, program)
    assert failure is not None
    assert failure.happened.startswith("RFC 7748 5.2's vector #1: x25519 raised MemoryError")


def test_a_function_that_returns_something_else_is_told_so(tmp_path: Path) -> None:
    program = tmp_path / "tinyvpn.py"
    program.write_text("def chacha20(key, counter, nonce, data):\n    return data.hex()\n")
    failure = check(6, program)
    assert failure is not None and "chacha20 returned a str, not bytes" in failure.happened


# --- The reference solutions ---------------------------------------------------------------


def test_the_reference_solutions_of_part_two_are_small() -> None:
    names = [patch.name for patch in SOLUTIONS]
    assert names[5:8] == ["06-chacha20.patch", "07-poly1305.patch", "08-x25519.patch"]
    sizes = {patch.name: changed_lines(patch) for patch in SOLUTIONS[5:8]}
    assert all(size <= 80 for size in sizes.values()), sizes


@pytest.mark.ladder
def test_a_learner_runs_rungs_1_to_8_on_the_solved_file(root: None, wg: None,
                                                        solved: Solved) -> None:
    program = solved(8)
    run = subprocess.run([sys.executable, str(TESTS / "ladder" / "check.py"), "8", "--program",
                          str(program)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"rung 8  X25519\+keys +passed", run.stdout)
    assert run.stdout.endswith("All 8 rungs passed.\n")


def test_the_public_key_is_the_one_wg_pubkey_prints(solved: Solved, wg: None,
                                                    tmp_path: Path) -> None:
    private, public = primitives.wg_keys(tmp_path, "a.key")
    said, running = primitives.start_and_listen(
        solved(8), ["-d", "--private-key", str(private), "--peer-key", public],  # type: ignore
        primitives.PUBLIC_KEY)
    assert f"public key: {public}" in said and running


# --- Plausible wrong solutions -------------------------------------------------------------

# (rung, mistake, the text of the reference solution it replaces, what replaces it, words the
# checker's "what happened" must hold)
WRONG = [
    (6, "the block counter big-endian", 'counter, *struct.unpack("<3L", nonce)]',
     '*struct.unpack("<L", counter.to_bytes(4, "big")), *struct.unpack("<3L", nonce)]',
     "RFC 8439 2.3.2's block (counter 1): 64 zero bytes: chacha20 returned b8 26 49 fc 24 19 95 "
     "43 ... (64 bytes), not 10 f1 e7 e4 d1 3b 59 15 ... (64 bytes); that is what chacha20 "
     "gives when it puts the block counter into the state big-endian"),
    (6, "the nonce read big-endian", 'struct.unpack("<3L", nonce)', 'struct.unpack(">3L", nonce)',
     "when it reads the nonce's words big-endian"),
    (6, "the input state not added back",
     'struct.pack("<16L", *((m + s) & MASK32 for m, s in zip(mixed, state)))',
     'struct.pack("<16L", *mixed)', "leaves out the last step: adding the input state"),
    (6, "20 double rounds", "for _ in range(10):", "for _ in range(20):", "runs 40 rounds"),
    (6, "rotating right", "(s[z] << bits | s[z] >> (32 - bits))",
     "(s[z] >> bits | s[z] << (32 - bits))", "rotates right"),
    (6, "no diagonal rounds", "(0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)",
     "(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15)", "column rounds only"),
    (6, "the same block for every 64 bytes",
     "blocks = range(counter, counter + (len(data) + 63) // 64)",
     "blocks = [counter] * ((len(data) + 63) // 64)",
     "uses the same keystream block again and again"),
    (7, "Poly1305 without clamping r", 'r = int.from_bytes(key[:16], "little") & CLAMP',
     'r = int.from_bytes(key[:16], "little")',
     "RFC 8439 2.5.2's 'Cryptographic Forum Research Group': poly1305 returned"),
    (7, "Poly1305 without clamping r, words", 'r = int.from_bytes(key[:16], "little") & CLAMP',
     'r = int.from_bytes(key[:16], "little")', "when it does not clamp r"),
    (7, "blocks without the 1 beyond them", 'block = message[start:start + 16] + b"\\x01"',
     "block = message[start:start + 16]", "without the 1 beyond its last byte"),
    (7, "the tag without the length block",
     "poly1305(one_time_key, pad16(aad) + pad16(ciphertext) + lengths)",
     "poly1305(one_time_key, pad16(aad) + pad16(ciphertext))",
     "RFC 8439 2.8.2's sunscreen: aead_encrypt returned 130 bytes, the first 114 right; the "
     "ciphertext is right, the tag (the last 16 bytes) is not: 27 e6 da aa 63 39 23 2a ..., not "
     "1a e1 0b 59 4f 09 e2 6a ...; that is what aead_encrypt gives when it leaves the lengths "
     "out of the tag"),
    (7, "no padding", "return data + bytes(-len(data) % 16)", "return data",
     "does not pad aad and ciphertext to a multiple of 16"),
    (7, "16 bytes of padding when none is due", "return data + bytes(-len(data) % 16)",
     "return data + bytes(16 - len(data) % 16)",
     "2.8.2's key and nonce, an empty plaintext: aead_encrypt returned"),
    (7, "the lengths big-endian", 'struct.pack("<QQ", len(aad), len(ciphertext))',
     'struct.pack(">QQ", len(aad), len(ciphertext))', "writes the lengths big-endian"),
    (7, "the tag over the plaintext", "return ciphertext + aead_tag(key, nonce, ciphertext, aad)",
     "return ciphertext + aead_tag(key, nonce, plaintext, aad)",
     "computes the tag over the plaintext"),
    (7, "a tag that is never checked",
     "if len(sealed) < 16 or not hmac.compare_digest(tag, aead_tag(key, nonce, ciphertext, aad)):",
     "if len(sealed) < 16:",
     "2.8.2's sealed sunscreen, bit 0 of the ciphertext's first byte flipped: aead_decrypt "
     "returned 114 bytes of plaintext, not None"),
    (7, "half the tag compared", "hmac.compare_digest(tag, aead_tag(key, nonce, ciphertext, aad))",
     "hmac.compare_digest(tag[:8], aead_tag(key, nonce, ciphertext, aad)[:8])",
     "bit 4 of the tag's middle byte flipped: aead_decrypt returned"),
    (7, "an empty plaintext opened as None", "    return chacha20(key, 1, nonce, ciphertext)\n",
     "    return chacha20(key, 1, nonce, ciphertext) or None\n",
     "2.8.2's key and nonce, an empty plaintext, sealed and opened again: aead_decrypt returned "
     "None"),
    (8, "X25519 without clamping the scalar",
     'k = int.from_bytes(scalar, "little") & ~7 & ~(1 << 255) | 1 << 254',
     'k = int.from_bytes(scalar, "little")',
     "RFC 7748 5.2's vector #1: x25519 returned"),
    (8, "X25519 without clamping the scalar, words",
     'k = int.from_bytes(scalar, "little") & ~7 & ~(1 << 255) | 1 << 254',
     'k = int.from_bytes(scalar, "little")', "does not clamp the scalar"),
    (8, "X25519 without masking u's top bit", 'x1 = int.from_bytes(u, "little") & ~(1 << 255)',
     'x1 = int.from_bytes(u, "little")',
     "RFC 7748 5.2's vector #2: x25519 returned"),
    (8, "X25519 without masking u's top bit, words",
     'x1 = int.from_bytes(u, "little") & ~(1 << 255)', 'x1 = int.from_bytes(u, "little")',
     "does not mask u's top bit"),
    (8, "a24 = 121666", "A24 = 121665", "A24 = 121666", "uses a24 = 121666"),
    (8, "no division by z_2", "return (x2 * pow(z2, P25519 - 2, P25519) % P25519)",
     "return (x2 % P25519)", "returns x_2 without dividing it by z_2"),
    (8, "the private key shown as the public one",
     "base64.b64encode(x25519(args.private_key, BASE_POINT))",
     "base64.b64encode(args.private_key)", "that is the private key itself"),
    (8, "the key file's newline not stripped", "file.read().strip()", "file.read()",
     "given a file as wg genkey writes it (44 characters and a newline), tinyvpn -d "
     "--private-key"),
    (8, "a key of 31 bytes accepted", "    if len(key) != 32:\n", "    if len(key) > 32:\n",
     "given a --private-key file holding 31 bytes in base64, tinyvpn started and ran"),
    (8, "the base64 error left to argparse",
     "        key = base64.b64decode(text, validate=True)\n    except ValueError:\n",
     "        key = base64.b64decode(text, validate=True)\n    except TypeError:\n",
     "given a --private-key file of 32 bytes that are not base64"),
    (8, "--key allowed with --private-key", "keys = parser.add_mutually_exclusive_group()",
     "keys = parser", "given --key with --private-key, tinyvpn started and ran"),
    (8, "--private-key allowed without --peer-key",
     "    if (args.private_key is None) != (args.peer_key is None):\n",
     "    if False:\n", "given --private-key without --peer-key, tinyvpn started and ran"),
]


@pytest.mark.ladder
@pytest.mark.parametrize("rung, mistake, text, wrong, words", WRONG,
                         ids=[f"{rung}: {mistake}" for rung, mistake, *_ in WRONG])
def test_a_plausible_wrong_solution_is_caught(solved: Solved, tmp_path: Path, wg: None,
                                             rung: int, mistake: str, text: str, wrong: str,
                                             words: str) -> None:
    solution = solved(rung).read_text()
    assert solution.count(text) == 1, f"the mistake no longer fits solution {rung}"
    program = tmp_path / "tinyvpn.py"
    program.write_text(solution.replace(text, wrong))
    failure = check(rung, program)
    assert failure is not None, f"{mistake}: passed rung {rung}"
    assert words in failure.happened, failure.happened
