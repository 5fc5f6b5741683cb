"""Without root: the demo and the checker, run by user nobody (uid 65534), make a user namespace
of their own and work inside it (netns.become_root); where the kernel allows none, they say so
in one line. Root is needed only to become nobody, and to take user namespaces away."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import netns
import pytest
from conftest import Solved, skip_or_fail
from test_demo import namespaces, processes_in

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
TESTS = Path(__file__).resolve().parent


def as_nobody(*command: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *command], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A folder nobody may read (the checkout may be in /root): tinyvpn.py and tests/."""
    if not netns.is_root():
        skip_or_fail("needs root: to become user nobody")
    folder = Path(tempfile.mkdtemp(prefix="tinyvpn-rootless-"))
    shutil.copy(netns.TINYVPN, folder / "tinyvpn.py")
    shutil.copytree(TESTS, folder / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def python(scratch: Path) -> str:
    """A Python nobody may run, also as root of a user namespace: this one, or else the
    distribution's (a venv or pyenv in /root may be closed to nobody)."""
    candidates = (os.path.realpath(sys.executable), "/usr/bin/python3")
    for prefix in (["unshare", "--user", "--map-root-user"], []):
        for candidate in candidates:
            if as_nobody(*prefix, candidate, "-c", "").returncode == 0:
                return candidate
    skip_or_fail("no Python that user nobody may run (install python3 outside /root)")
    return ""


@pytest.fixture(scope="module")
def rootless(python: str) -> str:
    """Skip (fail in CI) unless the kernel gives nobody a user namespace of its own: asked of
    unshare itself, not of the code under test."""
    probe = as_nobody("unshare", "--user", "--map-root-user", "--net", "--mount", "true")
    if probe.returncode != 0:
        skip_or_fail(f"user nobody cannot make a user namespace: {probe.stderr.strip()}")
    return python


def test_the_demo_runs_without_root(scratch: Path, rootless: str) -> None:
    demo = subprocess.Popen([*NOBODY, rootless, "tests/lab/demo.py", "--keep"], cwd=scratch,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen, printed = "", re.compile(r"^  (nsenter .* ping) (198\.51\.100\.2)$", re.M)
        while not printed.search(seen):  # "The tunnel stays up ...", then the commands to try
            line = demo.stdout.readline()
            assert line, f"the demo ended early: {seen}{demo.communicate()[1]}"
            seen += line
        prefix = re.search(r"namespaces (tv\w+)-a", seen).group(1)
        # The demo and everything it started really run as nobody, outside the machine's /run.
        status = Path(f"/proc/{demo.pid}/status").read_text()
        assert re.search(r"^Uid:\t65534\t", status, re.M), status
        assert prefix not in namespaces()
        # "From another terminal" (as nobody too), the command the demo prints works.
        ping = printed.search(seen)
        assert ping
        result = as_nobody(*ping.group(1).split(), "-c", "1", ping.group(2))
        assert result.returncode == 0, result.stdout + result.stderr
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=30)
        seen += out
    finally:
        if demo.poll() is None:  # an assertion failed: SIGTERM lets the demo clean up
            demo.terminate()
            demo.wait(30)
    assert demo.returncode == 0, seen + err
    assert "Not root: the demo runs as root of a user namespace of its own" in seen
    assert "3 packets transmitted, 3 received" in seen
    assert re.search(r"\[a\] net->tun +56 B  IPv4 198.51.100.2 -> 198.51.100.1  "
                     r"ICMP echo-reply id=28013 seq=1", seen)  # mallory's packet, answered
    assert "nothing is left behind" in seen
    assert processes_in(prefix) == []


def check_as_nobody(scratch: Path, python: str, program: Path) -> subprocess.CompletedProcess:
    """tests/ladder/check.py --program PROGRAM 1, run by nobody."""
    return as_nobody(python, "tests/ladder/check.py", "--program", str(program), "1", cwd=scratch)


def test_the_checker_without_root_passes_a_solved_file(scratch: Path, rootless: str,
                                                       solved: Solved) -> None:
    program = scratch / "solved-1.py"
    shutil.copy(solved(1), program)
    program.chmod(0o644)
    result = check_as_nobody(scratch, rootless, program)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^  rung 1  keep-alive +passed ", result.stdout, re.M), result.stdout
    assert result.stdout.endswith("Rung 1 passed.\n")


def test_the_checker_without_root_fails_the_shipped_file(scratch: Path, rootless: str) -> None:
    result = check_as_nobody(scratch, rootless, scratch / "tinyvpn.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^  rung 1  keep-alive +FAILED ", result.stdout, re.M), result.stdout
    assert "what happened: tinyvpn has no --keepalive option yet" in result.stdout
    assert result.stderr == ""


NO_USER_NAMESPACES = ("not root, and this kernel allows no user namespaces "
                      "(user.max_user_namespaces = 0): run it with sudo, or allow them: "
                      "sudo sysctl user.max_user_namespaces=10000\n")


@pytest.mark.parametrize("script, who", [("lab/demo.py", "demo"),
                                         ("ladder/check.py", "ladder")])
def test_where_the_kernel_allows_no_user_namespace_it_says_so_in_one_line(
        scratch: Path, python: str, script: str, who: str) -> None:
    # A real refusal: inside a user namespace whose root set user.max_user_namespaces to 0,
    # nobody's `unshare --user` fails (ENOSPC) as on a kernel that allows none.
    refuse = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\""
    inside = subprocess.Popen(
        ["unshare", "--user", "sh", "-c", "read go && exec \"$@\"", "sh",
         "sh", "-c", refuse, "sh", *NOBODY, python, f"tests/{script}"],
        cwd=scratch, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        # Map ids 0 to 65535 to themselves (only real root may), then let it go on: its next
        # exec, as uid 0 of that namespace, gives it the right to set the limit.
        ours = os.readlink("/proc/self/ns/user")
        netns.wait_for(lambda: os.readlink(f"/proc/{inside.pid}/ns/user") != ours,
                       "unshare to make its user namespace")
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{inside.pid}/{name}").write_text("0 0 65536\n")
        out, err = inside.communicate("go\n", timeout=30)
    finally:
        if inside.poll() is None:
            inside.kill()
            inside.wait()
    assert (inside.returncode, out, err) == (1, "", f"{who}: {NO_USER_NAMESPACES}")


def test_where_dev_net_tun_is_closed_to_users_it_says_so_in_one_line(scratch: Path,
                                                                     python: str) -> None:
    # A private mount namespace gives this one command a /dev/net/tun of mode 0600, as some
    # machines have; the machine's own device is never changed.
    closed = "mount -t tmpfs tmpfs /dev/net && mknod -m 600 /dev/net/tun c 10 200 && exec \"$@\""
    result = subprocess.run(["unshare", "--mount", "sh", "-c", closed, "sh", *NOBODY, python,
                             "tests/lab/demo.py"], cwd=scratch, capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", (
        "demo: not root, and /dev/net/tun is not open to every user (ls -l /dev/net/tun; it "
        "needs mode 0666): run it with sudo\n"))
