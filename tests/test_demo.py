"""The README's first command: the one-machine demo must work, and leave nothing behind."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent / "demo.py"


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_the_demo_pings_through_the_tunnel_and_cleans_up(root: None) -> None:
    result = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 packets transmitted, 3 received" in result.stdout
    assert re.search(r"\[b\] net->tun +84 B  IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request", result.stdout)
    assert re.search(r"\[a\] net->tun +84 B  IPv4 198.51.100.2 -> 198.51.100.1  ICMP echo-reply", result.stdout)
    prefix = re.search(r"namespaces (tv\w+)-a", result.stdout).group(1)
    assert prefix not in namespaces()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_the_kept_demo_stops_on_ctrl_c_or_sigterm_and_cleans_up(root: None, how: int) -> None:
    demo = subprocess.Popen([sys.executable, str(DEMO), "--keep"], stdout=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "stays up until Ctrl-C" not in seen:
            line = demo.stdout.readline()
            assert line, f"the demo ended early: {seen}"
            seen += line
        prefix = re.search(r"namespaces (tv\w+)-a", seen).group(1)
        assert prefix in namespaces()
        demo.send_signal(how)
        seen += demo.communicate(timeout=30)[0]
    finally:
        if demo.poll() is None:  # a failed assertion above: SIGTERM lets the demo remove its namespaces
            demo.terminate()
            demo.wait(30)
    assert demo.returncode == 0
    assert "nothing is left behind" in seen
    assert prefix not in namespaces()
