"""The ladder as a whole (tests/ladder/) keeps its promise to a learner:

- its table (tests/ladder/rungs.py) is whole: every rung has a check, a section that its guide
  has, and a reference solution, numbered so that a plain sort gives rung order;
- with the reference solutions 1 to N applied in order, rungs 1 to N pass (from the first rung
  of N's stretch), and rung N + 1 does not: every rung asks for something new;
- a solved tinyvpn.py still passes the tunnel tests, socat's interop included, without the new
  options.

Each part's own promises are in test_ladder_part_one.py, test_ladder_part_two_primitives.py,
test_ladder_part_two_protocol.py, test_ladder_part_three_routing.py and
test_ladder_part_three_cookies.py; the grader's in test_ladder_classroom.py.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import netns
import pytest
import rungs
from conftest import SOLUTIONS, Solved, skip_or_fail
from rungs import RUNGS

TESTS = Path(__file__).resolve().parent
PROJECT = TESTS.parent


def test_the_table_numbers_every_rung_in_order_and_names_each_once() -> None:
    assert [rung.number for rung in RUNGS] == list(range(1, len(RUNGS) + 1))
    assert len({rung.name for rung in RUNGS}) == len(RUNGS)
    assert [rungs.rung(rung.number) for rung in RUNGS] == list(RUNGS)
    with pytest.raises(ValueError, match="no rung 0"):
        rungs.rung(0)


def test_every_rung_has_a_check_and_a_section_its_guide_has() -> None:
    for rung in RUNGS:
        assert callable(rung.check), rung.name
        guide = (PROJECT / rung.guide).read_text()
        assert re.search(rf"^## {re.escape(rung.section)}$", guide, re.M), rung
        assert rung.reread() == f'{rung.guide}, "{rung.section}"'


def test_every_rung_has_a_patch_and_the_patches_sort_in_rung_order() -> None:
    patches = sorted(rungs.SOLUTIONS.glob("*.patch"))
    assert [rung.solution for rung in RUNGS] == SOLUTIONS == patches
    for rung in RUNGS:
        assert rung.patch.startswith(f"{rung.number:02}-"), rung.patch


def test_every_stretch_starts_at_a_rung_of_its_own_guide() -> None:
    for rung in RUNGS:
        first = rungs.rung(rung.stretch)
        assert first.stretch == first.number <= rung.number, rung
        assert first.guide == rung.guide, rung
        assert all(between.stretch == rung.stretch for between in RUNGS
                   if rung.stretch <= between.number <= rung.number), rung


def test_the_index_links_every_guide() -> None:
    index = (TESTS / "ladder" / "README.md").read_text()
    for guide in dict.fromkeys(rung.guide for rung in RUNGS):
        assert f"]({Path(guide).name})" in index, guide


def test_the_teachers_table_gives_each_patchs_true_size() -> None:
    sizes = dict(re.findall(r"^\| (\d+)\. [^\n]*\| (\d+) \|$",
                            (PROJECT / "tests/ladder/TEACHERS.md").read_text(), re.M))
    assert {int(rung): int(size) for rung, size in sizes.items()} == {
        rung.number: rungs.changed_lines(rung.solution) for rung in RUNGS}


def test_the_readme_counts_the_wrong_solutions_the_ladders_tests_catch() -> None:
    import test_ladder_part_one as one
    import test_ladder_part_three_cookies as cookies
    import test_ladder_part_three_routing as routing
    import test_ladder_part_two_primitives as primitives
    import test_ladder_part_two_protocol as protocol
    parts = (len(one.WRONG), len(primitives.WRONG) + len(protocol.WRONG),
             len(routing.WRONG) + len(cookies.WRONG))
    readme = " ".join((PROJECT / "README.md").read_text().split())
    assert (f"{sum(parts)} plausible wrong solutions are caught ({parts[0]} in part one, "
            f"{parts[1]} in part two, {parts[2]} in part three)") in readme


# Rung 12's check takes a minute: test_ladder_part_two_protocol.py proves that it fails on the
# solution before it and passes with its own; test_ladder_part_three_routing.py, rung 13's.
TIMERS = 12


@pytest.mark.ladder
@pytest.mark.parametrize("n", range(1, TIMERS))
def test_solutions_1_to_n_pass_rungs_up_to_n_and_not_the_next(
        root: None, solved: Solved, n: int) -> None:
    missing = netns.missing_tools("wg", "wireguard-go") if n >= 7 else []
    if missing:
        skip_or_fail(f"needs {' and '.join(missing)}: apt-get install wireguard-tools "
                     "wireguard-go")
    program = solved(n)
    for rung in range(rungs.rung(n).stretch, n + 1):
        failure = rungs.check(rung, program)
        assert failure is None, f"rung {rung}: {failure and failure.happened}"
    if n + 1 < TIMERS:
        assert rungs.check(n + 1, program) is not None



@pytest.mark.ladder
@pytest.mark.parametrize("n", [5, 12])  # part one solved, and part two
def test_a_solved_file_still_passes_the_tunnel_tests_without_the_new_options(
        root: None, solved: Solved, n: int) -> None:
    environment = {**os.environ, "TINYVPN_PROGRAM": str(solved(n))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(TESTS / "test_tunnel.py"), str(TESTS / "test_interop.py"),
                          str(TESTS / "test_stdio.py"), str(TESTS / "test_command_line.py")],
                         env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout.splitlines()[-1] and "skipped" not in run.stdout
