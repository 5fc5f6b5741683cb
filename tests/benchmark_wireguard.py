#!/usr/bin/env python3
"""Part two's reference WireGuard (tinyvpn.py with every reference solution applied) against
wireguard-go, side by side in one run. As root, from the repository:

    python3 tests/benchmark_wireguard.py               # 3 rounds, 4 MiB of TCP each
    python3 tests/benchmark_wireguard.py --rounds 5 --size 16

Each round builds two fresh namespaces (tests/lab/netns.py) twice: wireguard-go in b both times,
and in a the reference, then wireguard-go. It measures, on the cable, the handshake: from a's
initiation to a's first transport message, b's response and a's work on it included; then the
TCP throughput of a transfer from a to b (tests/lab/traffic.py). The machine is shared and noisy:
only the ratios of one run mean anything.
"""

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent / folder) for folder in ("lab", "ladder")]

import netns  # noqa: E402
import part_two_protocol as wireguard  # noqa: E402
from netns import UNDERLAY, Hosts  # noqa: E402
from part_two_protocol import INITIATION, TRANSPORT, b64  # noqa: E402
from recorder import Recorder  # noqa: E402
from rungs import RUNGS  # noqa: E402
from traffic import tcp_transfer  # noqa: E402

A = UNDERLAY["a"][0]


def solved(folder: Path) -> Path:
    """tinyvpn.py with every reference solution applied, as a learner applies them."""
    program = folder / "tinyvpn.py"
    program.write_bytes(netns.TINYVPN.read_bytes())
    program.chmod(0o755)  # as in the repository: the patches say so
    for rung in RUNGS:
        subprocess.run(["git", "apply", str(rung.solution)], cwd=folder, check=True)
    return program


def start_a(hosts: Hosts, keys: wireguard.Keys, program: "Path | None") -> list:
    """In a: the reference (`program`), or wireguard-go (None), b as its peer. What to pass
    to netns.stop_wireguard_go at the end: the wireguard-go and its interface, if one."""
    if program is None:  # another interface name: wireguard-go's sockets are not per namespace
        interface = f"{hosts.prefix}w"
        return [netns.start_wireguard_go(hosts, "a", keys.a_file, b64(keys.b_public),
                                         UNDERLAY["b"][0], interface=interface), interface]
    netns.start_tinyvpn(hosts, "a", "--private-key", str(keys.a_file), "--peer-key",
                        b64(keys.b_public), program=(sys.executable, str(program)))
    for command in netns.tunnel_commands(hosts, "a"):
        netns.sh(*command)
    return []


def measure(program: "Path | None", size: int) -> tuple:
    """(handshake seconds, TCP Mbit/s) of one pair: a's end as asked, wireguard-go in b."""
    with netns.two_hosts() as hosts:
        keys = wireguard.make_keys(hosts.logs)
        cable = Recorder(hosts, "b", f"{hosts.prefix}v")
        peer = netns.start_wireguard_go(hosts, "b", keys.b_file, b64(keys.a_public))
        wireguard_go_in_a = start_a(hosts, keys, program)
        netns.run(hosts, "a", "ping", "-c", "1", "-W", "5", netns.TUNNEL["b"][0])
        sent = cable.timed(A)
        first = next(when for when, message in sent if message[:4] == TRANSPORT)
        began = max(when for when, message in sent if message[:4] == INITIATION and
                    when < first)
        netns.stop(cable.process)  # it would take CPU from the transfer
        with redirect_stdout(io.StringIO()):
            _, _, seconds = tcp_transfer(hosts, size, "a", "b")
        for wireguard_go in ([peer, hosts.tun], wireguard_go_in_a):
            if wireguard_go:
                netns.stop_wireguard_go(*wireguard_go)
        return first - began, size * 8 / seconds / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=4, help="MiB of TCP per transfer")
    args = parser.parse_args()
    if not netns.is_root() or netns.missing_tools("wireguard-go", "wg"):
        sys.exit("benchmark_wireguard: run as root, with wireguard-go and wg installed")
    results: dict = {"reference": [], "wireguard-go": []}
    with tempfile.TemporaryDirectory() as folder:
        reference = solved(Path(folder))
        for round_ in range(args.rounds):
            for name, program in (("reference", reference), ("wireguard-go", None)):
                results[name].append(measure(program, args.size * 2**20))
                handshake, throughput = results[name][-1]
                print(f"round {round_ + 1}: {name:<12} handshake {handshake * 1000:7.1f} ms, "
                      f"TCP {throughput:7.1f} Mbit/s", flush=True)
    medians = {name: [statistics.median(column) for column in zip(*rows)]
               for name, rows in results.items()}
    print(f"\nmedians of {args.rounds} rounds, a -> b, wireguard-go in b:")
    print(f"{'a is':<14}{'handshake':>12}{'TCP':>16}")
    for name, (handshake, throughput) in medians.items():
        print(f"{name:<14}{handshake * 1000:9.1f} ms{throughput:10.1f} Mbit/s")
    ours, theirs = medians["reference"], medians["wireguard-go"]
    print(f"{'ratio':<14}{ours[0] / theirs[0]:10.1f} x{ours[1] / theirs[1]:12.3f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
