#!/usr/bin/env python3
"""A class of learners: grade a folder of learners' files against the ladder, and make a copy
of the project without the reference solutions, for coursework. Run from the runner:

    python3 tests/ladder/check.py --grade DIR        every learner in DIR, all rungs
    python3 tests/ladder/check.py --grade DIR 5      rungs 1 to 5 (part one) only
    python3 tests/ladder/check.py --student-copy DEST

A learner in DIR is one .py file (alice.py) or one folder holding a tinyvpn.py (bob/). Each is
checked in a process of its own (python3 tests/ladder/classroom.py --one ...: the checker, word for
word, its output kept in a log), with a time limit, on a copy of the file in a scratch folder,
in network namespaces whose names start with a prefix of that learner's own. Afterwards,
whatever happened, the process group is killed, every process left in those namespaces
ended, the namespaces and the scratch folder removed. tests/ladder/TEACHERS.md says what
this protects against, and what it does not: it is no sandbox.
Standard library only, like the checker.
"""

import argparse
import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
WIREGUARD_SOCKETS = Path("/var/run/wireguard")  # wireguard-go's, named after its interface

# Seconds a learner's check of one rung may take before the grader stops it: a solved file
# takes at most 15 s for each rung but the last, and about 40 s for rung 12 (tests/ladder/
# TEACHERS.md); a failing check waits for answers that never come, up to about 30 s more.
ALLOWED = {12: 400}
ALLOWED_PER_RUNG = 60
STOPPING = threading.Event()  # the teacher pressed Ctrl-C: every learner's check stops


def add_options(parser: argparse.ArgumentParser) -> None:
    """The checker's options for a teacher."""
    teacher = parser.add_argument_group("for a teacher (tests/ladder/TEACHERS.md)")
    teacher.add_argument("--grade", type=Path, metavar="DIR",
                         help="check every learner in DIR (a .py file, or a folder holding a "
                              "tinyvpn.py, each), rungs 1 to N (default: all); write a table, "
                              "grades.csv and grades.json")
    teacher.add_argument("--out", type=Path, metavar="FOLDER",
                         help="where --grade writes grades.csv, grades.json and each learner's "
                              "log (default: DIR)")
    teacher.add_argument("--time-limit", type=float, metavar="SECONDS",
                         help=f"stop a learner's check after SECONDS (default: "
                              f"{ALLOWED_PER_RUNG} s per rung, {ALLOWED[12]} s for rung 12)")
    teacher.add_argument("--jobs", type=int, default=1, metavar="J",
                         help="grade J learners at a time (default 1: timing checks judge best "
                              "on a quiet machine)")
    teacher.add_argument("--student-copy", type=Path, metavar="DEST",
                         help="write the project to DEST without the reference solutions and "
                              "the tests that hold them")


# --- Grading ----------------------------------------------------------------------------------


@dataclass
class Grade:
    """One learner's result, as the table, grades.csv and grades.json give it."""
    learner: str
    file: str  # as found in DIR
    highest_passed: int  # the highest rung passed (0: none)
    failed_rung: Optional[int]  # the first rung that failed, or the one stopped by the limit
    outcome: str  # "passed", "failed", "timed out", "checker error", "not checked"
    first_failure: str  # the checker's "what happened", or the grader's own words
    should: str
    reread: str
    seconds: float
    namespaces: str  # how the names of this learner's namespaces began (all removed)


def learners(folder: Path, skip: list) -> list:
    """(name, the learner's file or folder) for each learner in `folder`, by name."""
    found: dict = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")) or entry.resolve() in skip:
            continue
        if entry.is_dir() or (entry.is_file() and entry.suffix == ".py"):
            name = entry.stem if entry.is_file() else entry.name
            found[entry.name if name in found else name] = entry  # alice.py beside alice/
    return list(found.items())


def fresh_prefixes(count: int) -> list:
    """A start of names for each learner's checks: "tvg" (no other run's names begin so) and
    three hex digits, none shared with another learner or with a namespace already there."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    taken = {line[:6] for line in listed.splitlines()}
    free = [f"tvg{number:03x}" for number in range(16**3) if f"tvg{number:03x}" not in taken]
    return secrets.SystemRandom().sample(free, count)


def grade(folder: Path, rungs: range, names: dict, out: Optional[Path],
          time_limit: Optional[float], jobs: int = 1) -> int:
    """Grade every learner in `folder` on `rungs`; names[rung] is the rung's name."""
    if not folder.is_dir():
        sys.exit(f"ladder: --grade {folder}: no such folder")
    out = out or folder
    logs = out / "grades-logs"
    found = learners(folder, [logs.resolve(), out.resolve()])
    if not found:
        sys.exit(f"ladder: --grade {folder}: no learner in it (a .py file, or a folder "
                 "holding a tinyvpn.py, per learner)")
    logs.mkdir(parents=True, exist_ok=True)
    limit = time_limit or sum(ALLOWED.get(rung, ALLOWED_PER_RUNG) for rung in rungs)
    asked = f"rung {rungs[0]}" if len(rungs) == 1 else f"rungs {rungs[0]} to {rungs[-1]}"
    print(f"Grading {len(found)} learners in {folder} against {asked} (at most {limit:.0f} s "
          "each)", file=sys.stderr, flush=True)
    grades = []
    with ThreadPoolExecutor(max(jobs, 1)) as pool:  # threads: each only waits on its checker
        graded = [pool.submit(grade_one, name, entry, rungs, limit, logs / f"{name}.txt",
                              prefix)
                  for (name, entry), prefix in zip(found, fresh_prefixes(len(found)))]
        try:
            for result in graded:
                grades.append(result.result())
                print(f"  {grades[-1].learner}: {grades[-1].outcome}, highest rung passed "
                      f"{grades[-1].highest_passed} ({grades[-1].seconds:.1f} s)",
                      file=sys.stderr, flush=True)
        except KeyboardInterrupt:  # Ctrl-C: stop the checks under way, start no more
            STOPPING.set()
            pool.shutdown(cancel_futures=True)
            raise
    print(table(grades, names))
    write_csv(out / "grades.csv", grades)
    (out / "grades.json").write_text(json.dumps([asdict(g) for g in grades], indent=2) + "\n")
    print(f"\nWritten: {out / 'grades.csv'}, {out / 'grades.json'}; each learner's checker "
          f"output in {logs}/")
    return 0


def grade_one(name: str, entry: Path, rungs: range, limit: float, log: Path,
              prefix: str) -> Grade:
    """Check one learner in a process of its own, and clean up after it whatever it did."""
    scratch = Path(tempfile.mkdtemp(prefix="tinyvpn-grade-"))
    started = time.monotonic()
    try:
        try:
            program = copy_learner(entry, scratch / "learner")
        except OSError as error:
            return not_checked(name, entry, f"the grader could not copy it: {error}", log,
                               prefix)
        if program is None:
            return not_checked(name, entry, f"{entry.name}/ holds no tinyvpn.py", log, prefix)
        results = scratch / "results.jsonl"
        done = run_check(program, rungs, results, log, prefix, limit)
        if done is None:
            with open(log, "a") as said:
                said.write(f"\n(the grader stopped this check after {limit:.0f} s)\n")
        return judged(name, entry.name, rungs, read_results(results), done, log, limit,
                      round(time.monotonic() - started, 1), prefix)
    finally:
        remove_namespaces(prefix)
        shutil.rmtree(scratch, ignore_errors=True)


def not_checked(name: str, entry: Path, why: str, log: Path, prefix: str) -> Grade:
    log.write_text(why + "\n")
    return Grade(name, entry.name, 0, None, "not checked", why, "one .py file, or one folder "
                 "holding a tinyvpn.py, per learner", "", 0.0, prefix)


def copy_learner(entry: Path, scratch: Path) -> Optional[Path]:
    """The learner's file, copied into `scratch` as tinyvpn.py (a folder: all of it)."""
    if entry.is_file():
        scratch.mkdir()
        shutil.copyfile(entry, scratch / "tinyvpn.py")
    else:
        shutil.copytree(entry, scratch, symlinks=True)
    program = scratch / "tinyvpn.py"
    return program if program.is_file() else None


def run_check(program: Path, rungs: range, results: Path, log: Path, prefix: str,
              limit: float) -> Optional[int]:
    """Run the checker on `program` in a process group of its own; its exit status, or None if
    it ran out of time (then it has been stopped)."""
    (program.parent.parent / "tmp").mkdir()
    environment = {**os.environ, "TINYVPN_NETNS_PREFIX": prefix,
                   "TMPDIR": str(program.parent.parent / "tmp")}
    environment.pop("TINYVPN_PROGRAM", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(program),
               str(rungs[0]), str(rungs[-1]), str(results)]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=program.parent, env=environment,
                                   stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + limit
        try:
            while time.monotonic() < deadline and not STOPPING.is_set():
                try:
                    return process.wait(min(0.5, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    continue
            return None
        finally:
            stop_group(process)


def stop_group(process: "subprocess.Popen[bytes]") -> None:
    """End the checker we started and all it started, by its process group (the checker's
    PID): SIGTERM, which lets the checker remove its namespaces, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # none of them is left
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.1)  # the others of the group, ended with it


def remove_namespaces(prefix: str) -> None:
    """End every process left in the namespaces named `prefix`..., by PID, and remove them."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for namespace in (line.split()[0] for line in listed.splitlines() if line.strip()):
        if not namespace.startswith(prefix):
            continue
        pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
    for control in WIREGUARD_SOCKETS.glob(f"{prefix}*.sock"):
        control.unlink(missing_ok=True)


def read_results(results: Path) -> list:
    """What the checker recorded, one rung per line, as far as it got."""
    if not results.exists():
        return []
    lines = results.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def judged(name: str, file: str, rungs: range, results: list, status: Optional[int],
           log: Path, limit: float, seconds: float, prefix: str) -> Grade:
    """A learner's grade from the rungs the checker recorded and how it ended."""
    passed = [result["rung"] for result in results if result["passed"]]
    highest = max(passed, default=0)
    failed = next((result for result in results if not result["passed"]), None)
    if failed:
        return Grade(name, file, highest, failed["rung"], "failed", failed["happened"],
                     failed["should"], failed["reread"], seconds, prefix)
    if len(results) == len(rungs) and status == 0:
        return Grade(name, file, highest, None, "passed", "", "", "", seconds, prefix)
    stopped = rungs[len(results)] if len(results) < len(rungs) else None
    if status is None:
        return Grade(name, file, highest, stopped, "timed out", f"the check of rung {stopped} "
                     f"was still running after {limit:.0f} s, and the grader stopped it",
                     "each check ends within the time limit: see the learner's log", "",
                     seconds, prefix)
    said = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return Grade(name, file, highest, stopped, "checker error", f"the checker itself ended "
                 f"(exit status {status}) during rung {stopped}: {said[-1] if said else ''}",
                 "the checker runs to the end: see the learner's log", "", seconds, prefix)


COLUMNS = ("learner", "passed", "failed", "time", "first failure")


def table(grades: list, names: dict) -> str:
    """The plain-text table: one line per learner, the first line of its first failure."""
    width = max(len(COLUMNS[0]), *(len(g.learner) for g in grades))
    lines = [f"{COLUMNS[0]:<{width}}  {'passed':>6}  {'failed':<16}  {'time':>7}  "
             f"{COLUMNS[4]}"]
    for g in grades:
        failed = f"{g.failed_rung} {names[g.failed_rung]}" if g.failed_rung else "-"
        said = [line.strip() for line in g.first_failure.splitlines()] or [""]
        words = said[0] + (f" {said[-1]}" if len(said) > 1 else "")  # a crash: its error too
        words = f"{g.outcome}: {words}" if g.outcome not in ("passed", "failed") else words
        lines.append(f"{g.learner:<{width}}  {g.highest_passed:>6}  {failed:<16}  "
                     f"{g.seconds:>5.1f} s  {shorten(words, 160)}".rstrip())
    return "\n".join(lines)


def shorten(words: str, length: int) -> str:
    return words if len(words) <= length else words[:length - 3] + "..."


def write_csv(path: Path, grades: list) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(asdict(grades[0])))
        writer.writeheader()
        writer.writerows(asdict(g) for g in grades)


# --- In the learner's own process: the checker, recording each rung ---------------------------


def check_one(program: Path, first: int, last: int, results: Path) -> int:
    """The checker's own run (its output, word for word, goes to the learner's log), with each
    rung's result also written to `results` as it comes: what the grader reads, even if it
    has to stop this process halfway."""
    import check  # the runner, which imports this module for --grade: here, not at the top

    def record(rung: "check.Rung", failure: "Optional[check.Failed]", seconds: float) -> None:
        result = {"rung": rung.number, "name": rung.name, "passed": failure is None,
                  "seconds": round(seconds, 1), "happened": "", "should": "", "reread": ""}
        if failure is not None:
            result.update(happened=failure.happened, should=failure.should,
                          reread=rung.reread(failure.section))
        with open(results, "a") as file:
            file.write(json.dumps(result) + "\n")

    # SIGTERM from the grader: unwind, so that each check removes its namespaces as it ends.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    argv = [str(last), "--program", str(program)] + (["--only"] if first == last > 1 else [])
    return check.main(argv, record)


# --- A student copy ---------------------------------------------------------------------------

SOLUTIONS = "tests/ladder/solutions"
# Tests that apply the reference solutions, or hold pieces of them (a wrong solution is a
# solution with one mistake in it), and CI, which lints the solved file. A test in
# tests/test_ladder_classroom.py finds every test that uses the solutions and checks that it
# is here.
WITH_SOLUTIONS = ("tests/test_ladder_part_one.py", "tests/test_ladder_part_two_primitives.py",
                  "tests/test_ladder_part_two_protocol.py", "tests/test_ladder_classroom.py",
                  "tests/test_ladder_part_three_routing.py",
                  "tests/test_ladder_part_three_cookies.py", "tests/test_ladder.py",
                  "tests/test_rootless.py", "tests/test_capture.py",
                  ".ci/run")
NOTE = """\
# The reference solutions are not in this copy

This copy of tinyvpn was made for coursework (`python3 tests/ladder/check.py --student-copy`):
the reference solutions, and the tests that hold them, were left out. Your teacher has them;
the checker, `python3 tests/ladder/check.py`, is all here.
"""


def student_copy(destination: Path) -> int:
    """Write the project's files (those git tracks, as they are now) to `destination`, less
    the reference solutions and the tests that hold them."""
    if destination.exists() and any(destination.iterdir()):
        sys.exit(f"ladder: --student-copy {destination}: not empty; give a new folder")
    listed = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-z"], capture_output=True)
    if listed.returncode != 0:
        sys.exit("ladder: --student-copy copies the files git tracks: run it in the "
                 "project's git checkout")
    left_out = 0
    for name in sorted(listed.stdout.decode().split("\0")):
        if not name or not (PROJECT / name).is_file():
            continue
        if name.startswith(SOLUTIONS + "/") or name in WITH_SOLUTIONS:
            left_out += 1
            continue
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, destination / name)
    (destination / SOLUTIONS).mkdir(parents=True, exist_ok=True)
    (destination / SOLUTIONS / "README.md").write_text(NOTE)
    print(f"Wrote a student copy of {PROJECT} to {destination}, without {left_out} files: the "
          f"reference solutions ({SOLUTIONS}/) and the files that hold them. Its checker: "
          f"python3 {destination / 'tests' / 'ladder' / 'check.py'}")
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--one"]:
    sys.exit(check_one(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                       Path(sys.argv[5])))
