#!/usr/bin/env python3
"""The ladder's runner: checks your tinyvpn.py against the rungs of the guides in this folder
(README.md lists them), in order, and stops at the first one not solved. As root (or as an
ordinary user, where the kernel gives users namespaces of their own: netns.become_root), from
the top of the checkout:

    python3 tests/ladder/check.py                  rungs 1 to 5 (part one) of ./tinyvpn.py
    python3 tests/ladder/check.py 3                rungs 1 to 3
    python3 tests/ladder/check.py 8 --only         rung 8 alone, not the rungs below it first
    python3 tests/ladder/check.py --program FILE   another file (a classmate's)
    python3 tests/ladder/check.py --keep-cable DIR a failed check's cable kept in DIR as pcap,
                                                   for Wireshark (part two's with a key log)
    python3 tests/ladder/check.py --grade DIR      grade every learner in DIR (classroom.py)
    python3 tests/ladder/check.py --student-copy DEST   the project without the solutions

Each rung's check is in the module of its part (part_one.py, part_two_primitives.py,
part_two_protocol.py, part_three_routing.py, part_three_cookies.py), found through the ladder's
table (rungs.py). A check judges only what can be seen from outside, names a tinyvpn that died
first, with its error, and then the rule that was broken: what happened, what should have,
which section to reread.
Exit status 0 only when every rung asked for passes. Standard library only; runs ip, ping, nft
(and, for parts two and three, wireguard-go, wg and libfaketime).
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))  # netns, wire, ...

import classroom
import harness
import netns
import rungs
from harness import Failed
from netns import TINYVPN
from rungs import PART_ONE, RUNGS, Rung

# What the grader (classroom.py) hears of each rung checked: the rung, its failure (None if it
# passed), and the seconds its check took.
Record = Callable[[Rung, Optional[Failed], float], None]


def main(argv: Optional[list] = None, record: Optional[Record] = None) -> int:
    """The runner's command line (argv: sys.argv[1:] by default); its exit status."""
    parser = argparse.ArgumentParser(description="Check tinyvpn.py against the ladder "
                                     "(tests/ladder/README.md)")
    parser.add_argument("rungs", nargs="?", type=int, choices=range(1, len(RUNGS) + 1),
                        metavar="N", help=f"check rungs 1 to N (default: part one's {PART_ONE}, "
                                          f"or all {len(RUNGS)} with --grade)")
    parser.add_argument("--only", action="store_true",
                        help="check rung N alone, not the rungs below it first")
    parser.add_argument("--program", type=Path, default=TINYVPN,
                        help="the tinyvpn.py to check (default: the checkout's)")
    classroom.add_options(parser)
    parser.add_argument("--keep-cable", type=Path, metavar="FOLDER",
                        help="keep a failed check's cable in FOLDER as pcap, for Wireshark")
    args = parser.parse_args(argv)
    if args.student_copy:
        return classroom.student_copy(args.student_copy)
    netns.become_root("ladder")  # the checks create network namespaces and TUNs
    missing = netns.missing_tools("ip", "ping", "nft")
    if missing:
        sys.exit(f"ladder: {' and '.join(missing)} missing: apt-get install iproute2 "
                 "iputils-ping nftables")
    if args.keep_cable:
        args.keep_cable.mkdir(parents=True, exist_ok=True)
    if args.grade:
        last = args.rungs or len(RUNGS)
        return classroom.grade(args.grade, range(last if args.only else 1, last + 1),
                               {rung.number: rung.name for rung in RUNGS}, args.out,
                               args.time_limit, args.jobs)
    args.rungs = args.rungs or PART_ONE
    first = args.rungs if args.only else 1
    guides = " and ".join(dict.fromkeys(rungs.rung(n).guide for n in (first, args.rungs)))
    asked = f"rung {first}" if args.only else f"rungs 1 to {args.rungs}"
    print(f"Checking {args.program} against {asked} ({guides})", flush=True)
    for rung in (rung for rung in RUNGS if first <= rung.number <= args.rungs):
        started = time.monotonic()
        kept = args.keep_cable and args.keep_cable.resolve() / f"rung-{rung.number}-{rung.name}"
        harness.KEEP[:] = [kept] if kept else []
        failure = rungs.check(rung.number, args.program)
        seconds = time.monotonic() - started
        if record:
            record(rung, failure, seconds)
        if failure is None:
            print(f"  rung {rung.number:<2} {rung.name:<13} passed   {seconds:4.1f} s",
                  flush=True)
            continue
        print(f"  rung {rung.number:<2} {rung.name:<13} FAILED   {seconds:4.1f} s\n"
              f"      what happened: {failure.happened}\n"
              f"      what should:   {failure.should}\n"
              f"      reread:        {rung.reread(failure.section)}", flush=True)
        show_kept(kept)
        print(f"Stopped at rung {rung.number}: {rung.number - first} of "
              f"{args.rungs - first + 1} passed.")
        return 1
    print(f"All {args.rungs} rungs passed." if first < args.rungs else f"Rung {first} passed.")
    return 0


def show_kept(kept: Optional[Path]) -> None:
    """Where a failed check's cable is kept (--keep-cable), and how to open it."""
    if kept and Path(f"{kept}.pcap").exists():
        pcap, keylog = f"{kept}.pcap", f"{kept}.keylog"
        decode = f"-d udp.port=={netns.PORT},ip"
        if Path(keylog).exists():  # part two: WireGuard, which Wireshark decrypts with it
            decode = f"-d udp.port=={netns.PORT},wg -o wg.keylog_file:{keylog}"
        print(f"      the cable:     {pcap}\n"
              f"                     (wireshark {decode} {pcap}; tcpdump -nr {pcap})",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
