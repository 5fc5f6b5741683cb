"""A class of learners (tests/ladder/classroom.py): `check.py --grade DIR` grades every learner's
file in DIR, whatever each does, and leaves nothing behind; `--student-copy DEST` writes the
project without the reference solutions, and its checker still runs.

The grading test applies the solutions (marked `ladder`) and needs root, as the checker does.
"""

import ast
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import classroom
import netns
import pytest
from conftest import SOLUTIONS, Solved, skip_or_fail

TESTS = Path(__file__).resolve().parent
CHECK = TESTS / "ladder" / "check.py"

# A learner's file that dies on a datagram too short for what it reads (mallory's empty one).
CRASH_AT = "            packet, tag = datagram[:-TAG], datagram[-TAG:]\n"
CRASH = CRASH_AT + "            struct.unpack(\"!BB\", datagram[:2])  # the IP version, to show\n"


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def grade(folder: Path, *options: str) -> tuple:
    """Run the grader as a teacher would; (its stdout, grades.json by learner, grades.csv)."""
    run = subprocess.run([sys.executable, str(CHECK), "--grade", str(folder), *options],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    grades = {g["learner"]: g for g in json.loads((folder / "grades.json").read_text())}
    with open(folder / "grades.csv", newline="") as file:
        rows = {row["learner"]: row for row in csv.DictReader(file)}
    for name, g in grades.items():  # the same in both files
        assert rows[name]["first_failure"] == g["first_failure"]
        assert rows[name]["highest_passed"] == str(g["highest_passed"])
        assert not any(line.startswith(g["namespaces"]) for line in namespaces().splitlines())
        assert (folder / "grades-logs" / f"{name}.txt").is_file()
    return run.stdout, grades


@pytest.mark.ladder
@pytest.mark.minutes
def test_a_teacher_grades_a_class_of_five(root: None, solved: Solved, tmp_path: Path) -> None:
    missing = netns.missing_tools("wg")
    if missing:  # rung 8's check makes keys with wg
        skip_or_fail("needs wg: apt-get install wireguard-tools")
    (tmp_path / "shipped.py").write_bytes(netns.TINYVPN.read_bytes())
    (tmp_path / "two.py").write_bytes(solved(2).read_bytes())
    (tmp_path / "five").mkdir()  # a learner's folder
    (tmp_path / "five" / "tinyvpn.py").write_bytes(solved(5).read_bytes())
    (tmp_path / "eight.py").write_bytes(solved(8).read_bytes())
    solution = solved(2).read_text()
    assert solution.count(CRASH_AT) == 1
    (tmp_path / "crash.py").write_text(solution.replace(CRASH_AT, CRASH))
    table, grades = grade(tmp_path, "8", "--jobs", "3")
    expected = {  # learner: (highest rung passed, first rung failed, words of its failure)
        "crash": (1, 2, ("b's tinyvpn died during the check", "struct.error")),
        "eight": (8, None, ("",)),
        "five": (5, 6, ("tinyvpn.py has no function chacha20 yet",)),
        "shipped": (0, 1, ("tinyvpn has no --keepalive option yet",)),
        "two": (2, 3, ("a's datagrams began with the numbers",)),
    }
    assert sorted(grades) == sorted(expected)
    for name, (highest, failed, words) in expected.items():
        g = grades[name]
        assert (g["highest_passed"], g["failed_rung"]) == (highest, failed), g
        assert g["outcome"] == ("passed" if failed is None else "failed")
        assert all(word in g["first_failure"] for word in words), g
    assert grades["five"]["file"] == "five" and grades["two"]["file"] == "two.py"
    assert grades["five"]["reread"] == 'tests/ladder/part-two.md, "6. ChaCha20"'
    lines = table.splitlines()
    assert lines[0].split() == ["learner", "passed", "failed", "time", "first", "failure"]
    assert lines[1].split()[:4] == ["crash", "1", "2", "authenticate"]
    assert lines[1].endswith("struct.error: unpack requires a buffer of 2 bytes")
    assert lines[2].split()[:3] == ["eight", "8", "-"]


# Never ends, and ignores SIGTERM: only SIGKILL stops it.
ENDLESS = ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n"
           "    pass\n\n\n")


def test_a_learner_that_never_ends_is_stopped_and_leaves_nothing(root: None,
                                                                 tmp_path: Path) -> None:
    program = netns.TINYVPN.read_text()
    assert program.count("\ndef main(") == 1
    (tmp_path / "endless.py").write_text(program.replace("\ndef main(", "\n" + ENDLESS +
                                                         "def main("))
    (tmp_path / "shipped.py").write_text(program)
    (tmp_path / "empty").mkdir()  # a folder without a tinyvpn.py
    _, grades = grade(tmp_path, "3", "--time-limit", "4")
    endless = grades["endless"]
    assert (endless["outcome"], endless["highest_passed"], endless["failed_rung"]) == (
        "timed out", 0, 1)
    assert endless["first_failure"] == ("the check of rung 1 was still running after 4 s, and "
                                        "the grader stopped it")
    assert grades["shipped"]["first_failure"].startswith("tinyvpn has no --keepalive option")
    assert grades["empty"]["outcome"] == "not checked"
    assert grades["empty"]["first_failure"] == "empty/ holds no tinyvpn.py"
    log = (tmp_path / "grades-logs" / "endless.txt").read_text()
    assert log.endswith("(the grader stopped this check after 4 s)\n")
    scratch = log.split()[1].rsplit("/learner/", 1)[0]  # "Checking /tmp/.../learner/tinyvpn.py"
    assert not Path(scratch).exists()
    for command_line in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert scratch.encode() not in command_line.read_bytes()
        except OSError:  # a process that has just ended
            continue


def test_the_student_copy_has_no_solutions_and_its_checker_runs(root: None,
                                                                tmp_path: Path) -> None:
    copy = tmp_path / "student"
    made = subprocess.run([sys.executable, str(CHECK), "--student-copy", str(copy)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert not list(copy.rglob("*.patch"))
    assert [path for path in classroom.WITH_SOLUTIONS if (copy / path).exists()] == []
    assert (copy / "tinyvpn.py").read_bytes() == netns.TINYVPN.read_bytes()
    check_no_solution_lines(copy)
    run = subprocess.run([sys.executable, str(copy / "tests" / "ladder" / "check.py"), "--program",
                          str(copy / "tinyvpn.py"), "1"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "rung 1  keep-alive    FAILED" in run.stdout
    assert "tinyvpn has no --keepalive option yet" in run.stdout
    again = subprocess.run([sys.executable, str(CHECK), "--student-copy", str(copy)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "not empty" in again.stderr


# The checker's own crypto and WireGuard peer compute what rungs 6 to 12 must give, and the
# guide gives the protocol's constants: lines of theirs that a solution has too.
CHECKER_KNOWS = ("tests/ladder/reference_crypto.py", "tests/ladder/part_two_protocol.py",
                 "tests/ladder/part-two.md")


def check_no_solution_lines(copy: Path) -> None:
    """No line a solution adds (of 40 characters or more, and not in the shipped file) is in
    the copy, but in the checker's own crypto."""
    shipped = netns.TINYVPN.read_text()
    added = {line[1:].strip() for patch in SOLUTIONS for line in patch.read_text().splitlines()
             if line.startswith("+") and not line.startswith("+++")}
    added = {line for line in added if len(line) >= 40 and line not in shipped}
    for path in copy.rglob("*"):
        if path.is_file() and str(path.relative_to(copy)) not in CHECKER_KNOWS:
            text = path.read_text(errors="replace")
            assert [line for line in added if line in text] == [], path


def test_every_test_that_uses_the_solutions_is_left_out_of_the_student_copy() -> None:
    """A test that takes the `solved` fixture or reads SOLUTIONS must not reach students."""
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        uses = any(isinstance(node, ast.arg) and node.arg == "solved"
                   or isinstance(node, ast.Name) and node.id == "SOLUTIONS"
                   for node in ast.walk(tree))
        if uses:
            assert f"tests/{path.name}" in classroom.WITH_SOLUTIONS, path.name


def test_the_grader_refuses_a_folder_without_learners(root: None, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(CHECK), "--grade", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "no learner in it" in run.stderr
    assert not os.listdir(tmp_path)
