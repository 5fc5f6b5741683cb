"""Shared fixtures. Tests that need root and namespaces use the `hosts` fixture (or `root`).

Without root they skip and say why. CI sets TINYVPN_REQUIRE_ROOT_TESTS=1, which turns that skip
into a failure, so a CI run can never pass without having pushed traffic through a real tunnel.
`solved(n)` is tinyvpn.py with the ladder's reference solutions 1 to n applied (its table,
tests/ladder/rungs.py, names them); `tshark_read` reads a capture as Wireshark would. The lab
(tests/lab/) and the ladder (tests/ladder/) are put on sys.path, so that tests import their
modules by name.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# So that tests can `import netns` (the lab), `import rungs` (the ladder) and `import conftest`.
TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS / "lab"), str(TESTS / "ladder")]

import netns  # noqa: E402
from rungs import RUNGS  # noqa: E402


def pytest_collection_modifyitems(items: list) -> None:
    """The slowest tests (marked `minutes`) first: under `pytest -n`, others run beside them."""
    items.sort(key=lambda item: item.get_closest_marker("minutes") is None)


def skip_or_fail(reason: str) -> None:
    if os.environ.get("TINYVPN_REQUIRE_ROOT_TESTS") == "1":
        pytest.fail(f"{reason} (and TINYVPN_REQUIRE_ROOT_TESTS=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture
def root() -> None:
    """Skip unless we are root with `ip` and `ping` installed."""
    if not netns.is_root():
        skip_or_fail("needs root: it creates network namespaces and TUN interfaces")
    missing = netns.missing_tools("ip", "ping")
    if missing:
        skip_or_fail(f"needs {', '.join(missing)}: apt-get install iproute2 iputils-ping")


@pytest.fixture
def tshark() -> None:
    """Skip unless tshark is installed; in CI, fail."""
    if shutil.which("tshark"):
        return
    reason = "needs tshark: apt-get install tshark"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (and CI is set)")
    skip_or_fail(reason)


def tshark_read(pcap: Path, *options: str) -> list:
    """The lines tshark prints for `pcap`, each field asked for (-e) tab-separated."""
    shown = subprocess.run(["tshark", "-n", "-r", str(pcap), *options], capture_output=True,
                           text=True, timeout=60, check=True)
    return shown.stdout.splitlines()


# tshark's options to read part one's datagrams as UDP carrying IP, one line each.
INSIDE = ("-d", f"udp.port=={netns.PORT},ip", "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
          "-e", "udp.dstport", "-e", "icmp.type")


@pytest.fixture
def hosts(root: None) -> Iterator[netns.Hosts]:
    """Two namespaces joined by veth, removed after the test whatever happens."""
    with netns.two_hosts() as made:
        yield made


# The ladder's reference solutions, in rung order, as its table names them.
SOLUTIONS = [rung.solution for rung in RUNGS]


Solved = Callable[[int], Path]  # the type of the fixture below


@pytest.fixture(scope="session")
def solved(tmp_path_factory: pytest.TempPathFactory) -> Solved:
    """solved(n): a copy of tinyvpn.py with reference solutions 1 to n applied, as a learner
    would apply them: `git apply`, in order, to the tinyvpn.py of this commit."""
    folder = tmp_path_factory.mktemp("solved")
    made: dict = {}

    def make(n: int) -> Path:
        if n not in made:
            made[n] = folder / str(n) / "tinyvpn.py"
            made[n].parent.mkdir()
            made[n].write_bytes(netns.TINYVPN.read_bytes())
            for patch in SOLUTIONS[:n]:
                subprocess.run(["git", "apply", str(patch)], cwd=made[n].parent, check=True,
                               capture_output=True)
        return made[n]

    return make
