"""What every rung's check shares, in part one (part_one.py), part two
(part_two_primitives.py, part_two_protocol.py) and part three (part_three_*.py) alike: how a
check says that a rung is not solved (Failed), how it names a program that died (crash, died),
and how it keeps a failed check's cable when the learner asks (keep_cable). Standard library
only.

A check is a function check(program: Path) -> None that raises Failed; the ladder's table,
rungs.py, gives each rung its check. A check that runs programs names a dead one before any
symptom it saw:

    try:
        ...  # the check
    except Exception:
        failure = died("b's tinyvpn", process, its_stderr_so_far)
        if failure:
            raise failure from None
        raise
"""

import signal
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Callable, Optional

import wire

# Where a failed check keeps its cable, as pcap (PATH.pcap), when the learner asks for it
# (tests/ladder/check.py --keep-cable); part two's checks add a key log (PATH.keylog).
KEEP: list = []  # [PATH] while one check runs; empty when nobody asked


def keep_cable(packets: Callable[[], list], keylog: Callable[[], str] = lambda: "") -> None:
    """Write a failed check's cable, packets() as (time, IP packet) pairs, to KEEP's file, and
    keylog(), if any, beside it, for Wireshark to decrypt WireGuard with; when asked only."""
    if KEEP:
        wire.write_pcap(f"{KEEP[0]}.pcap", packets())
        secrets = keylog()
        if secrets:
            Path(f"{KEEP[0]}.keylog").write_text(secrets)


class Failed(Exception):
    """A rung not solved: what happened, and what should have. `section` names the guide's
    section whose rule was broken, when that is not the rung being checked (a rung-3 mistake
    can show while rung 2 is checked)."""

    def __init__(self, happened: str, should: str, section: Optional[str] = None) -> None:
        super().__init__(happened)
        self.happened, self.should, self.section = happened, should, section


def last_lines(stderr: str, count: int = 4) -> list:
    """The end of what a program printed on stderr: from a traceback, the innermost frame
    (file, line, code) and the error; else its last `count` lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:
        start = len(lines) - 1 - lines[::-1].index("Traceback (most recent call last):")
        lines = lines[start + 1:]
    return lines[-count:]


def status(returncode: int) -> str:
    """'exit status 1', or 'killed by SIGKILL' for a process a signal ended."""
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


KEEPS_RUNNING = ("it keeps running, whatever arrives: fix this error first (a datagram it "
                 "cannot use is dropped, and -d says why)")


def crash(who: str, returncode: int, stderr: str, when: str = "during the check",
          should: str = KEEPS_RUNNING) -> Failed:
    """The words for a program that ended when it should have kept running: this is what the
    learner must fix first, whatever else went wrong after it."""
    shown = "\n".join(f"        {line}" for line in last_lines(stderr) or ["(nothing)"])
    return Failed(f"{who} died {when} ({status(returncode)}); the last lines it printed on "
                  f"stderr:\n{shown}", should)


def died(who: str, process: "subprocess.Popen[bytes]", stderr: str) -> Optional[Failed]:
    """crash(...) if `process` (which nobody asked to stop) has exited; None while it runs."""
    if process.poll() is None:
        return None
    return crash(who, process.returncode, stderr)


def ended(process: "subprocess.Popen[bytes]", grace: float) -> bool:
    """Whether `process` has exited, or does within `grace` seconds: a crashing tinyvpn loses
    its TUN a moment before it is seen to end, so the symptom a check meets may come first."""
    with suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    return process.poll() is not None
