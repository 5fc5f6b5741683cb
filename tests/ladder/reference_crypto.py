"""The checker's own reference crypto: RFC 8439's ChaCha20, Poly1305 and AEAD and RFC 7748's
X25519, each also with the mistakes a learner is known to make, and the RFCs' test vectors
that the right ones pass (tests/test_ladder_part_two_primitives.py); then WireGuard's
arithmetic built on them (its AEAD nonce, BLAKE2s hash, KDF and MAC, the handshake's state,
mac1; for rung 14, HChaCha20 and XChaCha20). The checks of rungs 6 to 8
(part_two_primitives.py) compare a learner's answers with these, and name the mistake whose
answer matches; the protocol checks of parts two and three (part_two_protocol.py,
part_three_*.py) make and read WireGuard's messages with them. The checker never runs
the learner's code to judge it. Standard library only.
"""

import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import Literal, Optional

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
# draft-irtf-cfrg-xchacha-03 2.2.1 (HChaCha20: key 00..1f, nonce, subkey) and A.3.1
# (XChaCha20-Poly1305 of SUNSCREEN: key 80..9f, nonce 40..57, aad, ciphertext + tag).
HCHACHA20_2_2_1 = (KEY_0_31, h("000000090000004a0000000031415927"),
                   h("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"))
XAEAD_A_3_1 = (KEY_80_9F, bytes(range(0x40, 0x58)), SUNSCREEN, h("50515253c0c1c2c3c4c5c6c7"),
               h("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b"
                 "4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69"
                 "b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b5"
                 "2ec0875924c1c7987947deafd8780acf49"))
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
# (tests/test_ladder_part_two_primitives.py).

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


def hchacha20(key: bytes, nonce: bytes, mistake: str = "") -> bytes:
    """draft-irtf-cfrg-xchacha 2.2: the block's 20 rounds on key and a 16-byte nonce (in the
    counter's and the nonce's words), words 0-3 and 12-15 out, WITHOUT adding the input."""
    out = struct.unpack("<16L", block(key, int.from_bytes(nonce[:4], "little"), nonce[4:]))
    added = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<4L", nonce))
    if mistake == "input added":  # the block's output as it is, the addition left in
        added = (0,) * 8
    words = out[:4] + out[12:]
    return struct.pack("<8L", *((w - a) & MASK for w, a in zip(words, added)))


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes,
                  mistake: str = "") -> bytes:
    """XChaCha20-Poly1305 (the draft, 2.3): the AEAD under HChaCha20(key, nonce[:16]), with
    nonce 4 zero bytes + nonce[16:]; a 24-byte nonce, which may be random."""
    if mistake == "12-byte nonce, no HChaCha20":
        return aead_encrypt(key, nonce[:12], plaintext, aad)
    return aead_encrypt(hchacha20(key, nonce[:16], mistake), bytes(4) + nonce[16:],
                        plaintext, aad)


def xaead_decrypt(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> Optional[bytes]:
    """What xaead_encrypt sealed, or None if it was not (its tag compared)."""
    if len(sealed) < 16:
        return None
    plaintext = xchacha20(key, nonce, sealed[:-16])
    return plaintext if xaead_encrypt(key, nonce, plaintext, aad) == sealed else None


def xchacha20(key: bytes, nonce: bytes, data: bytes, mistake: str = "") -> bytes:
    """XChaCha20 alone, from block 1 (as the AEAD encrypts): what a decryption that skips
    the tag would read."""
    if mistake == "12-byte nonce, no HChaCha20":
        return chacha20(key, 1, nonce[:12], data)
    return chacha20(hchacha20(key, nonce[:16], mistake), 1, bytes(4) + nonce[16:], data)


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


def x25519(scalar: bytes, u: bytes = NINE, mistake: str = "") -> bytes:
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


# --- WireGuard's arithmetic, built on them (the WireGuard paper, section 5.4) --------------
# Part two's protocol checks (part_two_protocol.py) make and read WireGuard's messages with it.


def nonce(counter: int) -> bytes:
    """WireGuard's AEAD nonce: 4 zero bytes, then the counter, little-endian."""
    return bytes(4) + counter.to_bytes(8, "little")


def seal(key: bytes, counter: int, plaintext: bytes, aad: bytes = b"") -> bytes:
    return aead_encrypt(key, nonce(counter), plaintext, aad)


def unseal(key: bytes, counter: int, sealed: bytes, aad: bytes = b"") -> Optional[bytes]:
    if len(sealed) < 16:
        return None
    plaintext = chacha20(key, 1, nonce(counter), sealed[:-16])
    return plaintext if seal(key, counter, plaintext, aad) == sealed else None


def digest(*parts: bytes) -> bytes:
    return hashlib.blake2s(b"".join(parts)).digest()


def kdf(key: bytes, data: bytes, count: int = 2) -> list:
    secret, keys = hmac.new(key, data, hashlib.blake2s).digest(), [b""]
    for i in range(1, count + 1):
        keys.append(hmac.new(secret, keys[-1] + bytes([i]), hashlib.blake2s).digest())
    return keys[1:]


def mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"


class Noise:
    """A handshake's state, as the paper's section 5.4 mixes it: chaining key and hash."""

    def __init__(self, responder: bytes) -> None:
        self.chain = digest(CONSTRUCTION)
        self.hash = digest(digest(self.chain, IDENTIFIER), responder)

    def mix(self, data: bytes) -> bytes:
        self.chain, key = kdf(self.chain, data)
        return bytes(key)

    def ephemeral(self, public: bytes) -> None:
        self.mix(public)
        self.hash = digest(self.hash, public)

    def seal(self, key: bytes, plaintext: bytes) -> bytes:
        sealed = seal(key, 0, plaintext, self.hash)
        self.hash = digest(self.hash, sealed)
        return sealed

    def unseal(self, key: bytes, sealed: bytes) -> Optional[bytes]:
        opened = unseal(key, 0, sealed, self.hash)
        self.hash = digest(self.hash, sealed)
        return opened

    def preshared(self) -> bytes:
        self.chain, extra, key = kdf(self.chain, bytes(32), 3)
        self.hash = digest(self.hash, extra)
        return bytes(key)


def with_macs(message: bytes, receiver: bytes) -> bytes:
    """The message followed by mac1 (keyed for `receiver`) and an empty mac2."""
    return message + mac(digest(LABEL_MAC1, receiver), message) + bytes(16)
