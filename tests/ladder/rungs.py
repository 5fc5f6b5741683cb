"""The ladder's table: every rung, with its name, its check, the guide section that teaches
it and its reference solution. Whoever goes from a rung's number to any of these goes through
this table: the runner (check.py), the grader (classroom.py), the ladder's tests and the
benchmark. tests/test_ladder.py checks that it is whole: every rung has a check, a
section that its guide has, and a patch in solutions/.

A rung's stretch is the first rung of the climb it belongs to: the reference solutions 1 to N
are proven to pass rungs stretch to N. Part one builds on itself from rung 1; part two's
primitives start afresh at 6 (they are functions, called alone), its protocol at 9; part
three at 13, from solution 12's WireGuard.
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import part_one
import part_three_cookies
import part_three_routing
import part_two_primitives
import part_two_protocol
from harness import Failed

SOLUTIONS = Path(__file__).resolve().parent / "solutions"  # NN-name.patch: sorted, in order


@dataclass(frozen=True)
class Rung:
    number: int
    name: str  # as the runner prints it
    check: Callable[[Path], None]  # raises Failed when `program` does not solve the rung
    guide: str  # the guide that teaches it, as the learner finds it from the checkout's top
    section: str  # that guide's section: its heading, "## " and this
    patch: str  # the reference solution's file in SOLUTIONS
    stretch: int  # the first rung of its climb (above)

    @property
    def solution(self) -> Path:
        return SOLUTIONS / self.patch

    def reread(self, section: Optional[str] = None) -> str:
        """Where to read `section` (by default the rung's own): the guide, and the section in
        quotes; a section a check names in another guide says which ("GUIDE.md, ...")."""
        section = section or self.section
        return section if ".md" in section else f"{self.guide}, \"{section}\""


ONE, TWO = part_one.GUIDE, part_two_primitives.GUIDE
RUNGS = (
    Rung(1, "keep-alive", part_one.check_keepalive, ONE, "1. keep-alive",
         "01-keepalive.patch", 1),
    Rung(2, "authenticate", part_one.check_authenticate, ONE, "2. authenticate",
         "02-authenticate.patch", 1),
    Rung(3, "replay", part_one.check_replay, ONE, "3. replay", "03-replay.patch", 1),
    Rung(4, "roam", part_one.check_roam, ONE, "4. roam", "04-roam.patch", 1),
    Rung(5, "encrypt", part_one.check_encrypt, ONE, "5. encrypt", "05-encrypt.patch", 1),
    # Part two's primitives, checked by calling the learner's functions.
    Rung(6, "ChaCha20", part_two_primitives.check_chacha20, TWO, "6. ChaCha20",
         "06-chacha20.patch", 6),
    Rung(7, "Poly1305+AEAD", part_two_primitives.check_aead, TWO, "7. Poly1305 and the AEAD",
         "07-poly1305.patch", 6),
    Rung(8, "X25519+keys", part_two_primitives.check_x25519, TWO,
         "8. X25519 and WireGuard's keys", "08-x25519.patch", 6),
    # Part two's protocol, against a real WireGuard (rung 12 with the learner's clock in the
    # check's hands: libfaketime).
    Rung(9, "handshake", part_two_protocol.check_handshake, TWO, "9. the handshake",
         "09-handshake.patch", 9),
    Rung(10, "transport", part_two_protocol.check_transport, TWO, "10. transport",
         "10-transport.patch", 9),
    Rung(11, "responder", part_two_protocol.check_responder, TWO, "11. responder",
         "11-responder.patch", 9),
    Rung(12, "timers", part_two_protocol.check_timers, TWO, "12. timers", "12-timers.patch",
         9),
    # Part three: a hub with many peers (cryptokey routing), wireguard-go spokes.
    Rung(13, "many-peers", part_three_routing.check_routing, part_three_routing.GUIDE,
         "13. many peers", "13-routing.patch", 13),
    Rung(14, "cookies", part_three_cookies.check_cookies, part_three_cookies.GUIDE,
         "14. cookies under load", "14-cookies.patch", 13),
)
PART_ONE = max(rung.number for rung in RUNGS if rung.guide == ONE)  # what the runner climbs


def rung(number: int) -> Rung:
    """Rung `number`, 1 to len(RUNGS)."""
    if not 1 <= number <= len(RUNGS):
        raise ValueError(f"no rung {number}: the ladder has rungs 1 to {len(RUNGS)}")
    return RUNGS[number - 1]


def check(number: int, program: Path) -> Optional[Failed]:
    """Check one rung on `program`; None if it passes."""
    try:
        rung(number).check(program)
    except Failed as failure:
        return failure
    except (TimeoutError, subprocess.TimeoutExpired) as error:
        return Failed(f"the check timed out: {error}", "tinyvpn keeps answering")
    return None


def changed_lines(patch: Path) -> int:
    """A patch's size as the ladder counts it: the lines it adds or removes."""
    return sum(1 for line in patch.read_text().splitlines()
               if line[:1] in "+-" and line[:3] not in ("+++", "---"))
