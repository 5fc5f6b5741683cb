#!/usr/bin/env python3
"""Checks the first rungs of part two (tests/exercises/part-two.md): WireGuard's primitives,
written by the learner from the RFCs. Run it through the ladder, as root, from the top of the
checkout: `python3 tests/exercises.py 8` climbs rungs 1 to 8.

    6. ChaCha20                  chacha20(key, counter, nonce, data) -> bytes
    7. Poly1305 and the AEAD     poly1305(key, message) -> bytes,
                                 aead_encrypt(key, nonce, plaintext, aad) -> bytes,
                                 aead_decrypt(key, nonce, sealed, aad) -> Optional[bytes]
    8. X25519 and WireGuard's keys   x25519(scalar, u) -> bytes; --private-key, --peer-key

The functions are judged by calling them: a second Python imports the learner's tinyvpn.py and
makes the calls (so an endless loop or a crash cannot take the checker down), answering each on
a line of JSON. Every answer is compared with the RFC's bytes; a wrong one is compared with what
known mistakes would give, to name the likely one. The command line of rung 8 is judged from
outside, against `wg pubkey`. Standard library only.
"""

import base64
import importlib.util
import json
import os
import re
import resource
import secrets
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional

from ladder import Failed

GUIDE = "tests/exercises/part-two.md"

# --- The RFCs' test vectors, copied from RFC 8439 and RFC 7748 ----------------------------


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


KEY_0_31 = bytes(range(32))  # 00:01:02:...:1f, RFC 8439 2.3.2 and 2.4.2
KEY_1 = bytes(31) + b"\x01"
KEY_80_9F = bytes(range(0x80, 0xA0))  # RFC 8439 2.6.2 and 2.8.2
KEY_1C92 = h("1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0")  # A.2 #3, A.5
NONCE_2 = bytes(11) + b"\x02"
SUNSCREEN = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
             b"the future, sunscreen would be it.")
IETF = (b"Any submission to the IETF intended by the Contributor for publication as all or "
        b"part of an IETF Internet-Draft or RFC and any statement made within the context of "
        b"an IETF activity is considered an \"IETF Contribution\". Such statements include "
        b"oral statements in IETF sessions, as well as written and electronic communications "
        b"made at any time or place, which are addressed to")
JABBERWOCKY = (b"'Twas brillig, and the slithy toves\nDid gyre and gimble in the wabe:\n"
               b"All mimsy were the borogoves,\nAnd the mome raths outgrabe.")
DRAFTS = ("Internet-Drafts are draft documents valid for a maximum of six months and may be "
          "updated, replaced, or obsoleted by other documents at any time. It is inappropriate "
          "to use Internet-Drafts as reference material or to cite them other than as "
          "/\u201cwork in progress./\u201d").encode()

BLOCK_2_3_2 = h("10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
                "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")
SUNSCREEN_2_4_2 = h(
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dab"
    "cd62b3571639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806"
    "818ce91ab77937365af90bbf74a35be6b40b8eedf2785e42874d")
A1 = (  # RFC 8439 A.1: key, counter, nonce, the keystream block
    (bytes(32), 0, bytes(12), h(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")),
    (bytes(32), 1, bytes(12), h(
        "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
        "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f")),
    (KEY_1, 1, bytes(12), h(
        "3aeb5224ecf849929b9d828db1ced4dd832025e8018b8160b82284f3c949aa5a"
        "8eca00bbb4a73bdad192b5c42f73f2fd4e273644c8b36125a64addeb006c13a0")),
    (b"\x00\xff" + bytes(30), 2, bytes(12), h(
        "72d54dfbf12ec44b362692df94137f328fea8da73990265ec1bbbea1ae9af0ca"
        "13b25aa26cb4a648cb9b9d1be65b2c0924a66c54d545ec1b7374f4872e99f096")),
    (bytes(32), 0, NONCE_2, h(
        "c2c64d378cd536374ae204b9ef933fcd1a8b2288b3dfa49672ab765b54ee27c7"
        "8a970e0e955c14f3a88e741b97c286f75f8fc299e8148362fa198a39531bed6d")),
)
A2 = (  # RFC 8439 A.2: key, counter, nonce, plaintext, ciphertext
    (bytes(32), 0, bytes(12), bytes(64), A1[0][3]),
    (KEY_1, 1, NONCE_2, IETF, h(
        "a3fbf07df3fa2fde4f376ca23e82737041605d9f4f4f57bd8cff2c1d4b7955ec2a97948bd3722915c8f3d3"
        "37f7d370050e9e96d647b7c39f56e031ca5eb6250d4042e02785ececfa4b4bb5e8ead0440e20b6e8db09d8"
        "81a7c6132f420e52795042bdfa7773d8a9051447b3291ce1411c680465552aa6c405b7764d5e87bea85ad0"
        "0f8449ed8f72d0d662ab052691ca66424bc86d2df80ea41f43abf937d3259dc4b2d0dfb48a6c9139ddd7f7"
        "6966e928e635553ba76c5c879d7b35d49eb2e62b0871cdac638939e25e8a1e0ef9d5280fa8ca328b351c3c"
        "765989cbcf3daa8b6ccc3aaf9f3979c92b3720fc88dc95ed84a1be059c6499b9fda236e7e818b04b0bc39c"
        "1e876b193bfe5569753f88128cc08aaa9b63d1a16f80ef2554d7189c411f5869ca52c5b83fa36ff216b9c1"
        "d30062bebcfd2dc5bce0911934fda79a86f6e698ced759c3ff9b6477338f3da4f9cd8514ea9982ccafb341"
        "b2384dd902f3d1ab7ac61dd29c6f21ba5b862f3730e37cfdc4fd806c22f221")),
    (KEY_1C92, 42, NONCE_2, JABBERWOCKY, h(
        "62e6347f95ed87a45ffae7426f27a1df5fb69110044c0d73118effa95b01e5cf166d3df2d721caf9b21e5f"
        "b14c616871fd84c54f9d65b283196c7fe4f60553ebf39c6402c42234e32a356b3e764312a61a5532055716"
        "ead6962568f87d3f3f7704c6a8d1bcd1bf4d50d6154b6da731b187b58dfd728afa36757a797ac188d1")),
)
POLY1305_2_5_2 = (h("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b"),
                  b"Cryptographic Forum Research Group", h("a8061dc1305136c6c22b8baf0c0127a9"))
R1, R2, R1_4 = (h("01" + "00" * 15), h("02" + "00" * 15),
                h("0100000000000000" + "0400000000000000"))
S_36E5 = h("36e5f6b5c5e06070f0efca96227a863e")
A3 = (  # RFC 8439 A.3: the one-time key, the message, the tag; and what the vector probes
    (bytes(32), bytes(64), bytes(16), ""),
    (bytes(16) + S_36E5, IETF, S_36E5, "r is 0: the tag is s"),
    (S_36E5 + bytes(16), IETF, h("f3477e7cd95417af89a6b8794c310cf0"), ""),
    (KEY_1C92, JABBERWOCKY, h("4541669a7eaaee61e708dc7cbcc5eb62"), ""),
    (R2 + bytes(16), b"\xff" * 16, h("03" + "00" * 15), "a result not fully reduced modulo p"),
    (R2 + b"\xff" * 16, R2, h("03" + "00" * 15), "adding s overflows 2^128"),
    (R1 + bytes(16), b"\xff" * 16 + h("f0" + "ff" * 15) + h("11" + "00" * 15),
     h("05" + "00" * 15), "a block of all ones, and a carry"),
    (R1 + bytes(16), b"\xff" * 16 + h("fb" + "fe" * 15) + b"\x01" * 16, bytes(16),
     "a result of exactly 2^130 - 5"),
    (R2 + bytes(16), h("fd" + "ff" * 15), h("fa" + "ff" * 15), "a result of exactly 2^130 - 6"),
    (R1_4 + bytes(16), h("e33594d7505e43b9" + "00" * 8 + "3394d7505e4379cd01" + "00" * 7)
     + bytes(16) + R1, h("14000000000000005500000000000000"), "a 131-bit intermediate result"),
    (R1_4 + bytes(16), h("e33594d7505e43b9" + "00" * 8 + "3394d7505e4379cd01" + "00" * 7)
     + bytes(16), h("13" + "00" * 15), "a 131-bit final result"),
)
AEAD_2_8_2 = (KEY_80_9F, h("070000004041424344454647"), SUNSCREEN, h("50515253c0c1c2c3c4c5c6c7"),
              h("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca96712"
                "82fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58"
                "fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116"
                "1ae10b594f09e26a7e902ecbd0600691"))
AEAD_A_5 = (KEY_1C92, h("000000000102030405060708"), DRAFTS, h("f33388860000000000004e91"),
            h("64a0861575861af460f062c79be643bd5e805cfd345cf389f108670ac76c8cb24c6cfc18755d43ee"
              "a09ee94e382d26b0bdb7b73c321b0100d4f03b7f355894cf332f830e710b97ce98c8a84abd0b9481"
              "14ad176e008d33bd60f982b1ff37c8559797a06ef4f0ef61c186324e2b3506383606907b6a7c02b0"
              "f9f6157b53c867e4b9166c767b804d46a59b5216cde7a4e99040c5a40433225ee282a1b0a06c523e"
              "af4534d7f83fa1155b0047718cbc546a0d072b04b3564eea1b422273f548271a0bb2316053fa7699"
              "1955ebd63159434ecebb4e466dae5a1073a6727627097a1049e617d91d361094fa68f0ff77987130"
              "305beaba2eda04df997b714d6c6f2c29a6ad5cb4022b02709b"
              "eead9d67890cbb22392336fea1851f38"))
X25519_5_2 = (  # RFC 7748 5.2: scalar, u, the result
    (h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
     h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
     h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")),
    (h("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
     h("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
     h("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")),
)
ITERATED = {1: h("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"),
            1000: h("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")}
ALICE = (h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
         h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
BOB = (h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
       h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
SHARED = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
NINE = (9).to_bytes(32, "little")


# --- The checker's own primitives, right and with known mistakes ---------------------------
# Only to recognise a learner's wrong answer: a mistake is named when the learner's bytes are
# what the primitive gives with that mistake. The right ones pass the RFC's vectors above
# (tests/test_exercises_crypto.py).

MASK = 0xFFFFFFFF
COLUMNS = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15))
DIAGONALS = ((0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))


def block(key: bytes, counter: int, nonce: bytes, mistake: str = "") -> bytes:
    def words(data: bytes, big: bool) -> tuple:
        return struct.unpack((">" if big else "<") + f"{len(data) // 4}L", data)

    count = counter.to_bytes(4, "little")
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574,
             *words(key, mistake == "key big-endian"),
             *words(count, mistake == "counter big-endian"),
             *words(nonce, mistake == "nonce big-endian")]
    mixed = state.copy()
    rounds = {"40 rounds": 20, "10 rounds": 5}.get(mistake, 10)
    for _ in range(rounds):
        for a, b, c, d in COLUMNS + (COLUMNS if mistake == "columns only" else DIAGONALS):
            for x, y, z, bits in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
                mixed[x] = (mixed[x] + mixed[y]) & MASK
                mixed[z] ^= mixed[x]
                if mistake == "rotates right":
                    bits = 32 - bits
                mixed[z] = (mixed[z] << bits | mixed[z] >> (32 - bits)) & MASK
    if mistake != "no addition":
        mixed = [(m + s) & MASK for m, s in zip(mixed, state)]
    return struct.pack((">" if mistake == "output big-endian" else "<") + "16L", *mixed)


def chacha20(key: bytes, counter: int, nonce: bytes, data: bytes, mistake: str = "") -> bytes:
    first = {"ignores the counter": 0, "counter off by one": counter + 1}.get(mistake, counter)
    step = 0 if mistake == "same block" else 1
    blocks = (len(data) + 63) // 64
    stream = b"".join(block(key, first + i * step, nonce, mistake) for i in range(blocks))
    return bytes(x ^ y for x, y in zip(data, stream))


CHACHA20_MISTAKES = {
    "counter big-endian": "puts the block counter into the state big-endian (word 12 is the "
                          "counter: its bytes go in little-endian, like every word's)",
    "nonce big-endian": "reads the nonce's words big-endian (words 13 to 15 are the nonce's "
                        "4-byte pieces, each read little-endian)",
    "key big-endian": "reads the key's words big-endian (words 4 to 11 are the key's 4-byte "
                      "pieces, each read little-endian)",
    "no addition": "leaves out the last step: adding the input state, word by word, to the "
                   "mixed one",
    "output big-endian": "writes the state's words out big-endian (each goes out "
                         "little-endian)",
    "rotates right": "rotates right (<<< in the quarter round rotates left)",
    "columns only": "runs column rounds only (every second round is a diagonal round: "
                    "QUARTERROUND(0, 5, 10, 15) and the three after it)",
    "40 rounds": "runs 40 rounds (20 rounds are 10 times the list of 8 quarter rounds)",
    "10 rounds": "runs 10 rounds (20 rounds are 10 times the list of 8 quarter rounds)",
    "same block": "uses the same keystream block again and again (block counter + 1 "
                  "encrypts the next 64 bytes, and so on)",
    "counter off by one": "starts at block counter + 1 (the first 64 bytes use block counter)",
    "ignores the counter": "starts at block 0 whatever the counter (the first 64 bytes use "
                           "block counter)",
}

P130 = 2**130 - 5


def poly1305(key: bytes, message: bytes, mistake: str = "") -> bytes:
    r, s = key[:16], key[16:]
    if mistake == "r and s swapped":
        r, s = s, r
    order: Literal["big", "little"] = "big" if mistake == "r and s big-endian" else "little"
    r_number = int.from_bytes(r, order)
    if mistake != "no clamping":
        r_number &= 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    accumulator = 0
    for start in range(0, len(message), 16):
        piece = message[start:start + 16]
        if mistake == "short block padded":
            piece = piece.ljust(16, b"\0")
        if mistake != "no 1 byte":
            piece += b"\x01"
        number = int.from_bytes(piece, "big" if mistake == "blocks big-endian" else "little")
        accumulator = (accumulator + number) * r_number
        if mistake != "never reduced":
            accumulator %= P130
    return ((accumulator + int.from_bytes(s, order)) % 2**128).to_bytes(16, "little")


POLY1305_MISTAKES = {
    "no clamping": "does not clamp r (RFC 8439 2.5: r &= 0x0ffffffc0ffffffc0ffffffc0fffffff)",
    "no 1 byte": "adds each block without the 1 beyond its last byte (2^128 for a 16-byte "
                 "block)",
    "short block padded": "pads a short last block to 16 bytes before adding the 1 (the 1 goes "
                          "just beyond the block's own last byte)",
    "blocks big-endian": "reads the blocks big-endian (every number in Poly1305 is "
                         "little-endian)",
    "r and s big-endian": "reads r and s big-endian (every number in Poly1305 is "
                          "little-endian)",
    "r and s swapped": "takes s from the key's first 16 bytes and r from the last 16 (r is "
                       "first)",
    "never reduced": "never reduces the accumulator modulo 2^130 - 5",
}


def pad16(data: bytes, mistake: str) -> bytes:
    if mistake == "no padding":
        return data
    if mistake == "16 bytes of padding when none is due":
        return data + bytes(16 - len(data) % 16)
    return data + bytes(-len(data) % 16)


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes,
                 mistake: str = "") -> bytes:
    ciphertext = chacha20(key, 0 if mistake == "encrypts from block 0" else 1, nonce, plaintext)
    one_time_key = block(key, 1 if mistake == "one-time key from block 1" else 0, nonce)[:32]
    tagged = plaintext if mistake == "tag over the plaintext" else ciphertext
    order = ">QQ" if mistake == "lengths big-endian" else "<QQ"
    lengths = struct.pack(order, len(aad), len(tagged))
    if mistake == "lengths swapped":
        lengths = lengths[8:] + lengths[:8]
    data = {"no aad in the tag": pad16(tagged, mistake) + lengths,
            "ciphertext before aad": pad16(tagged, mistake) + pad16(aad, mistake) + lengths,
            "no length block": pad16(aad, mistake) + pad16(tagged, mistake),
            }.get(mistake, pad16(aad, mistake) + pad16(tagged, mistake) + lengths)
    return ciphertext + poly1305(one_time_key, data)


AEAD_MISTAKES = {
    "no length block": "leaves the lengths out of the tag (the last 16 bytes Poly1305 reads "
                       "are the lengths of aad and ciphertext, 8 bytes each, little-endian)",
    "no padding": "does not pad aad and ciphertext to a multiple of 16 bytes with zeros "
                  "before the tag reads them",
    "16 bytes of padding when none is due": "pads with 16 zero bytes what is already a "
                                            "multiple of 16 (or empty): the padding is 0 to "
                                            "15 bytes",
    "lengths big-endian": "writes the lengths big-endian (8 bytes each, little-endian)",
    "lengths swapped": "writes the ciphertext's length before aad's (aad's comes first)",
    "tag over the plaintext": "computes the tag over the plaintext (it covers the ciphertext)",
    "encrypts from block 0": "encrypts with the keystream from block 0 (block 0 makes the "
                             "one-time key; the plaintext is encrypted from block 1)",
    "one-time key from block 1": "takes the one-time key from block 1 (it is the first 32 "
                                 "bytes of block 0)",
    "no aad in the tag": "leaves aad out of the tag (the tag covers aad, then the "
                         "ciphertext)",
    "ciphertext before aad": "puts the ciphertext before aad in what the tag covers (aad "
                             "first)",
}

P255 = 2**255 - 19


def x25519(scalar: bytes, u: bytes, mistake: str = "") -> bytes:
    order: Literal["big", "little"] = "big" if mistake == "big-endian" else "little"
    k = int.from_bytes(scalar, order)
    if not mistake.startswith("no clamping"):
        k = k & ~7 & ~(1 << 255) | 1 << 254
    x1 = int.from_bytes(u, order) % (2**256 if mistake == "no masking" else 2**255)
    a24 = 121666 if mistake == "a24 = 121666" else 121665
    x2, z2, x3, z3 = 1, 0, x1, 1
    for t in reversed(range(256 if mistake == "no clamping, 256 bits" else 255)):
        bit = k >> t & 1
        if bit:
            x2, z2, x3, z3 = x3, z3, x2, z2
        a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
        aa, bb, da, cb = a * a % P255, b * b % P255, d * a % P255, c * b % P255
        e = aa - bb
        x2, z2 = aa * bb % P255, e * (aa + a24 * e) % P255
        x3, z3 = (da + cb) ** 2 % P255, x1 * (da - cb) ** 2 % P255
        if bit:
            x2, z2, x3, z3 = x3, z3, x2, z2
    if mistake == "returns x_3":
        x2, z2 = x3, z3
    result = x2 % P255 if mistake == "no division" else x2 * pow(z2, P255 - 2, P255) % P255
    return result.to_bytes(32, order)


NO_CLAMPING = ("does not clamp the scalar (RFC 7748 5: clear its 3 lowest bits and bit 255, "
               "set bit 254)")
X25519_MISTAKES = {
    "no clamping": NO_CLAMPING,
    "no clamping, 256 bits": NO_CLAMPING,
    "no masking": "does not mask u's top bit (RFC 7748 5: bit 255 of u is ignored)",
    "big-endian": "reads and writes the numbers big-endian (RFC 7748 5: little-endian)",
    "a24 = 121666": "uses a24 = 121666 (in z_2 = E * (AA + a24 * E), a24 = 121665)",
    "no division": "returns x_2 without dividing it by z_2 (x_2 * z_2^(p - 2) mod p)",
    "returns x_3": "returns x_3 / z_3 (the result is x_2 / z_2)",
}
MISTAKES: dict = {"chacha20": (chacha20, CHACHA20_MISTAKES),
                  "poly1305": (poly1305, POLY1305_MISTAKES),
                  "aead_encrypt": (aead_encrypt, AEAD_MISTAKES),
                  "x25519": (x25519, X25519_MISTAKES)}


def likely_mistake(name: str, args: Sequence, got: bytes) -> str:
    """The mistake that gives `got`, in words, or ""."""
    function, mistakes = MISTAKES.get(name, (None, {}))
    for mistake, words in mistakes.items():
        if function(*args, mistake=mistake) == got:
            return words
    return ""


# --- Calling the learner's functions, in a Python of their own -----------------------------


def probe(program: str) -> None:
    """The second Python: import `program`, make the calls read from stdin (a JSON list of
    [function, arguments...]; bytes as {"hex": ...}) and answer each on a line of stdout."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the learner's code prints goes to stderr, never among the answers
    # An X25519 that never reduces modulo p doubles its numbers at every step: a MemoryError
    # here, not the machine's memory gone.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    calls = json.load(sys.stdin)
    try:
        spec = importlib.util.spec_from_file_location("tinyvpn_under_test", program)
        module = importlib.util.module_from_spec(spec)
        sys.modules["tinyvpn_under_test"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException as error:  # a SyntaxError, an exception, even sys.exit() at import
        print(json.dumps({"crash": crash(error, program)}), file=answers, flush=True)
        return
    print(json.dumps({"imported": True}), file=answers, flush=True)
    for name, *arguments in calls:
        values = [bytes.fromhex(a["hex"]) if isinstance(a, dict) else a for a in arguments]
        print(json.dumps(make_call(module, program, name, values)), file=answers, flush=True)


MEMORY = 2 * 1024**3  # bytes the learner's calls may use


def make_call(module: Any, program: str, name: str, values: list) -> dict:
    function = getattr(module, name, None)
    if not callable(function):
        return {"missing": name}
    try:
        if name == "x25519" and len(values) == 1:  # RFC 7748 5.2: k, u = x25519(k, u), k
            k = u = NINE
            for _ in range(values[0]):
                k, u = function(k, u), k
                if not isinstance(k, (bytes, bytearray)):
                    break
            result = k
        else:
            result = function(*values)
    except BaseException as error:  # noqa: B036 (sys.exit() in a function is a crash too)
        return {"error": crash(error, program)}
    if result is None:
        return {"none": True}
    if isinstance(result, (bytes, bytearray)):
        return {"hex": bytes(result).hex()}
    return {"type": type(result).__name__}


def crash(error: BaseException, program: str) -> str:
    """The error, and where in `program` it happened: 'ZeroDivisionError: ... (tinyvpn.py:12)'."""
    name = Path(program).name
    if isinstance(error, SyntaxError):
        return f"{type(error).__name__}: {error.msg} ({name}:{error.lineno})"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if Path(frame.filename).resolve() == Path(program).resolve()]
    where = f" ({name}:{lines[-1]})" if lines else ""
    return f"{type(error).__name__}: {error}{where}"


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
    command = [sys.executable, str(Path(__file__).resolve()), "--probe", str(program)]
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


# --- The rungs, as tests/exercises.py registers them -------------------------------------

RUNGS: Sequence[tuple] = (
    ("ChaCha20", check_chacha20, "6. ChaCha20"),
    ("Poly1305+AEAD", check_aead, "7. Poly1305 and the AEAD"),
    ("X25519+keys", check_x25519, "8. X25519 and WireGuard's keys"),
)

if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"] and len(sys.argv) == 3:
        probe(sys.argv[2])
    else:
        sys.exit("exercises_crypto: part of tests/exercises.py: run python3 tests/exercises.py 8")
