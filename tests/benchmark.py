#!/usr/bin/env python3
"""Benchmark tinyvpn against socat (TUN over UDP), OpenVPN without crypto, and the bare veth link.

As root, from the repository:

    python3 tests/benchmark.py                          # 3 rounds, every tunnel, MTU 1400 and 1500
    python3 tests/benchmark.py --rounds 5 --seconds 10  # longer, steadier
    python3 tests/benchmark.py --only tinyvpn socat     # some tunnels only
    python3 tests/benchmark.py --baseline HEAD~3        # and an older tinyvpn.py (rev or file)
    python3 tests/benchmark.py --mtu 9000               # other TUN MTUs
    python3 tests/benchmark.py --flood 30               # only tinyvpn's memory over a 30 s flood

Each measurement builds two fresh network namespaces joined by veth (tests/lab/netns.py),
brings up one tunnel between them, and measures from a to b: iperf3 TCP throughput, iperf3 UDP with
64-byte payloads (packets per second received, and loss), ping RTT, the CPU seconds the tunnel
processes used during the TCP run, and (for tinyvpn) peak RSS. The tunnels take turns, in a
rotated order each round, and each TUN MTU gets a table of medians: the machine is shared and
noisy, so only ratios measured side by side in one run mean anything.

At TUN MTU 1400 a packet and its 28 bytes of outer headers fit the 1500-byte link; at 1500
they do not, every full-size datagram is sent as two IPv4 fragments, and the kernel refuses
tinyvpn's batches of them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))  # netns

import netns  # noqa: E402
from netns import OTHER, PORT, TINYVPN, TUNNEL, TUNNEL_MTU, UNDERLAY, Hosts  # noqa: E402

TUNNELS = ["tinyvpn", "socat", "openvpn", "bare"]
TOOLS = {"tinyvpn": [], "socat": ["socat"], "openvpn": ["openvpn"], "bare": []}


def start_tinyvpn(hosts: Hosts, program: Path, mtu: int = TUNNEL_MTU) -> list:
    processes = [netns.start_tinyvpn(hosts, side, program=(sys.executable, str(program)))
                 for side in "ab"]
    netns.bring_up_tunnel(hosts, mtu)
    return processes


def start_socat(hosts: Hosts, mtu: int) -> list:
    processes = [netns.start_socat(hosts, side) for side in "ab"]
    netns.bring_up_tunnel(hosts, mtu)
    return processes


def start_openvpn(hosts: Hosts, mtu: int) -> list:
    # Point-to-point, no TLS, no cipher, no HMAC: OpenVPN's cheapest mode (gone in 2.7).
    processes = []
    for side in "ab":
        me, peer = UNDERLAY[side][0], UNDERLAY[OTHER[side]][0]
        processes.append(netns.start(
            hosts, side, "openvpn", "--dev", hosts.tun, "--dev-type", "tun", "--proto", "udp",
            "--tun-mtu", str(mtu), "--cipher", "none", "--data-ciphers", "none", "--auth", "none",
            "--disable-dco", "--local", me, "--lport", str(PORT), "--remote", peer,
            "--rport", str(PORT),
            "--ifconfig", TUNNEL[side][0], TUNNEL[OTHER[side]][0], name=f"openvpn-{side}"))
    for side in "ab":
        log = f"openvpn-{side}"
        netns.wait_for(
            lambda log=log: "Initialization Sequence Completed" in netns.output(hosts, log, "out"),
            f"openvpn in {side}", timeout=30)
    return processes


def cpu_seconds(processes: list) -> float:
    """User + system CPU time used so far by these processes together."""
    return sum(netns.cpu_seconds(process.pid) for process in processes)


def memory_kib(process: subprocess.Popen, field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of a process, in KiB."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def iperf3(hosts: Hosts, target: str, seconds: float, *options: str) -> dict:
    """One iperf3 test from a to `target` (a server in b); returns the client's JSON summary."""
    server = netns.start(hosts, "b", "iperf3", "-s", "-1", "-B", target, name="iperf3-server")
    netns.wait_for(lambda: netns.is_listening(hosts, "b", 5201), "iperf3 -s")
    result = netns.run(hosts, "a", "iperf3", "-c", target, "-t", str(seconds), "-J", *options,
                       check=False, timeout=seconds + 30)
    netns.stop(server)
    report = json.loads(result.stdout)
    if "error" in report:
        raise RuntimeError(f"iperf3: {report['error']}")
    return report["end"]


def measure(tunnel: str, seconds: float, program: Path, mtu: int) -> dict:
    """Bring up one tunnel between fresh namespaces and measure it."""
    with netns.two_hosts() as hosts:
        starts = {"tinyvpn": lambda: start_tinyvpn(hosts, program, mtu),
                  "socat": lambda: start_socat(hosts, mtu),
                  "openvpn": lambda: start_openvpn(hosts, mtu), "bare": lambda: []}
        processes = starts[tunnel]()
        target = UNDERLAY["b"][0] if tunnel == "bare" else TUNNEL["b"][0]
        ping = netns.run(hosts, "a", "ping", "-c", "40", "-i", "0.01", "-q", target)
        # The last line: rtt min/avg/max/mdev = a/b/c/d ms
        rtt_ms = float(ping.stdout.rsplit("=", 1)[1].split("/")[1])
        idle = cpu_seconds(processes)
        time.sleep(1)
        idle = cpu_seconds(processes) - idle
        rss_start = max((memory_kib(p, "VmRSS") for p in processes), default=0)
        before = cpu_seconds(processes)
        tcp = iperf3(hosts, target, seconds)
        cpu = cpu_seconds(processes) - before
        udp = iperf3(hosts, target, seconds, "-u", "-l", "64", "-b", "0")["sum"]
        return {
            "tcp_mbps": tcp["sum_received"]["bits_per_second"] / 1e6,
            "kpps": (udp["packets"] - udp["lost_packets"]) / udp["seconds"] / 1e3,
            "loss": udp["lost_percent"],
            "rtt_ms": rtt_ms,
            "cpu_s": cpu,
            "idle_cpu_s": idle,
            "rss_start_kib": rss_start,
            "rss_peak_kib": max((memory_kib(p, "VmHWM") for p in processes), default=0),
        }


def flood(seconds: float, program: Path) -> None:
    """tinyvpn's resident memory before and after `seconds` of 64-byte UDP at full rate."""
    with netns.two_hosts() as hosts:
        processes = start_tinyvpn(hosts, program)
        before = [memory_kib(p, "VmRSS") for p in processes]
        udp = iperf3(hosts, TUNNEL["b"][0], seconds, "-u", "-l", "64", "-b", "0")["sum"]
        after = [memory_kib(p, "VmRSS") for p in processes]
        peak = [memory_kib(p, "VmHWM") for p in processes]
    for side, b, a, p in zip("ab", before, after, peak):
        print(f"tinyvpn {side}: RSS {b} KiB before, {a} KiB after {seconds:g} s "
              f"({udp['packets']} packets sent), growth {a - b} KiB, peak {p} KiB")


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def table(results: dict) -> str:
    """Medians as a Markdown table, each figure also as a ratio to socat and to the bare link."""
    med = {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
           for name, runs in results.items()}
    socat, bare = med.get("socat", {}), med.get("bare", {})
    lines = ["| tunnel | TCP Mbit/s | vs socat | vs bare | 64 B kpps | vs socat | vs bare "
             "| UDP loss | RTT ms | vs socat | CPU s (TCP run) | peak RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in med.items():
        tinyvpn = name.startswith(("tinyvpn", "baseline"))
        rss = f"{m['rss_peak_kib'] / 1024:.1f} MiB" if tinyvpn else "-"
        lines.append(
            f"| {name} | {m['tcp_mbps']:.0f} | {ratio(m['tcp_mbps'], socat.get('tcp_mbps', 0))} "
            f"| {ratio(m['tcp_mbps'], bare.get('tcp_mbps', 0))} | {m['kpps']:.1f} "
            f"| {ratio(m['kpps'], socat.get('kpps', 0))} "
            f"| {ratio(m['kpps'], bare.get('kpps', 0))} | {m['loss']:.0f}% | {m['rtt_ms']:.3f} "
            f"| {ratio(m['rtt_ms'], socat.get('rtt_ms', 0))} "
            f"| {m['cpu_s']:.2f} | {rss} |")
    return "\n".join(lines)


def baseline_program(spec: str) -> Path:
    """A tinyvpn.py to compare with: a file, or the one at a git revision."""
    if Path(spec).is_file():
        return Path(spec)
    source = subprocess.run(["git", "-C", str(TINYVPN.parent), "show", f"{spec}:tinyvpn.py"],
                            check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "tinyvpn.py"
    path.write_bytes(source)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every tunnel (default 3)")
    parser.add_argument("--seconds", type=float, default=5,
                        help="length of each iperf3 test (default 5)")
    parser.add_argument("--only", nargs="+", choices=TUNNELS, default=TUNNELS,
                        help="tunnels to measure")
    parser.add_argument("--baseline", metavar="REV_OR_FILE",
                        help="also measure this tinyvpn.py, as 'baseline'")
    parser.add_argument("--mtu", type=int, nargs="+", default=[TUNNEL_MTU, 1500],
                        help=f"TUN MTUs, a table each (default {TUNNEL_MTU} 1500)")
    parser.add_argument("--flood", type=float, metavar="SECONDS",
                        help="only: tinyvpn's RSS over a UDP flood")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmark: run as root: it creates network namespaces and TUN interfaces")
    needed = ["ip", "ping", "iperf3", *(tool for name in args.only for tool in TOOLS[name])]
    missing = netns.missing_tools(*needed)
    if missing:
        sys.exit(f"benchmark: missing {', '.join(missing)}: "
                 "apt-get install iproute2 iputils-ping iperf3 socat openvpn")
    if args.flood:
        flood(args.flood, TINYVPN)
        return

    tunnels = {name: TINYVPN for name in args.only}
    if args.baseline:
        tunnels["baseline"] = baseline_program(args.baseline)
    runs = [(name, mtu) for mtu in args.mtu for name in tunnels]
    results: dict = {run: [] for run in runs}
    for round_number in range(args.rounds):
        turn = round_number % len(runs)
        for name, mtu in runs[turn:] + runs[:turn]:
            kind = "tinyvpn" if name == "baseline" else name
            results[name, mtu].append(measure(kind, args.seconds, tunnels[name], mtu))
            r = results[name, mtu][-1]
            print(f"round {round_number + 1} {name:9} MTU {mtu:5} TCP {r['tcp_mbps']:7.0f} Mbit/s"
                  f"  64 B {r['kpps']:6.1f} kpps ({r['loss']:.0f}% lost)"
                  f"  RTT {r['rtt_ms']:.3f} ms  CPU {r['cpu_s']:.2f} s"
                  f"  idle CPU {r['idle_cpu_s']:.2f} s", flush=True)

    uname = os.uname()
    print(f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Linux {uname.release}, "
          f"Python {sys.version.split()[0]}, {args.rounds} rounds of {args.seconds:g} s, medians")
    for mtu in args.mtu:
        print(f"\nTUN MTU {mtu}\n")
        print(table({name: results[name, mtu] for name in tunnels}))


if __name__ == "__main__":
    main()
