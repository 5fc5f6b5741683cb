#!/usr/bin/env python3
"""The one-machine demo: a real tinyvpn tunnel between two network namespaces. As root:

    python3 tests/demo.py           set up, ping through the tunnel, show every packet, clean up
    python3 tests/demo.py --keep    ... then keep the tunnel up until Ctrl-C, showing packets live

Two namespaces ("hosts" a and b) are joined by a veth cable; tinyvpn runs in each. Everything
is removed at the end, also after Ctrl-C or an error.
"""

import argparse
import os
import signal
import sys
import time

import netns
from netns import PORT, TUNNEL, UNDERLAY, Hosts


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show_new_lines(hosts: Hosts, seen: dict) -> None:
    """Print what each tinyvpn wrote to stderr since the last call, marked with its side."""
    for side in "ab":
        lines = netns.output(hosts, f"tinyvpn-{side}").splitlines()
        for line in lines[seen.get(side, 0):]:
            print(f"  [{side}] {line}", flush=True)
        seen[side] = len(lines)


def demo(keep: bool) -> None:
    with netns.two_hosts() as hosts:
        a, b = hosts.namespace("a"), hosts.namespace("b")
        say(f"Two hosts: namespaces {a} and {b}, joined by a veth cable "
            f"({UNDERLAY['a'][0]} <-> {UNDERLAY['b'][0]})")
        for side in "ab":
            peer = UNDERLAY[netns.OTHER[side]][0]
            print(f"  ip netns exec {hosts.namespace(side)} ./tinyvpn.py -d {hosts.tun} {peer} {PORT}")
            netns.start_tinyvpn(hosts, side, "-d")

        say("Each host gives its TUN interface an address, as the README says")
        for side in "ab":
            print(f"  on {side}: ip link set {hosts.tun} mtu {netns.TUNNEL_MTU} up; "
                  f"ip address add {TUNNEL[side][0]}/30 dev {hosts.tun}")
        netns.bring_up_tunnel(hosts)

        say(f"a pings b's tunnel address {TUNNEL['b'][0]}: the packets go through tinyvpn")
        result = netns.run(hosts, "a", "ping", "-c", "3", "-i", "0.5", TUNNEL["b"][0], check=False)
        print("\n".join("  " + line for line in result.stdout.splitlines()))

        say("What the two tinyvpn processes printed (-d): every packet, each way")
        seen: dict = {}
        show_new_lines(hosts, seen)
        if result.returncode != 0:
            raise SystemExit("demo: the ping did not get through; see the lines above")

        if keep:
            say("The tunnel stays up until Ctrl-C. From another terminal, try:")
            print(f"  ip netns exec {a} ping {TUNNEL['b'][0]}\n"
                  f"  ip netns exec {a} ping -6 {TUNNEL['b'][1]}      (after: ip netns exec {a} "
                  f"ip address add {TUNNEL['a'][1]}/64 dev {hosts.tun}; the same on b)\n"
                  f"  ip netns exec {b} python3 -m http.server --bind {TUNNEL['b'][0]} 8000\n"
                  f"  ip netns exec {a} python3 -c \"import urllib.request as u; "
                  f"print(u.urlopen('http://{TUNNEL['b'][0]}:8000/').status)\"")
            try:
                while True:
                    time.sleep(0.3)
                    show_new_lines(hosts, seen)
            except KeyboardInterrupt:
                pass

        say("Stopping tinyvpn (SIGTERM): each prints its summary")
        for process in hosts.processes:
            netns.stop(process)
        show_new_lines(hosts, seen)
    say("Namespaces, veth and TUN interfaces removed: nothing is left behind")


def main() -> None:
    parser = argparse.ArgumentParser(description="A tinyvpn tunnel between two network namespaces, on one machine.")
    parser.add_argument("--keep", action="store_true", help="keep the tunnel up until Ctrl-C")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("demo: run as root: it creates network namespaces and TUN interfaces")
    missing = netns.missing_tools("ip", "ping")
    if missing:
        sys.exit(f"demo: {' and '.join(missing)} missing: apt-get install iproute2 iputils-ping")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM as on Ctrl-C
    try:
        demo(args.keep)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything was removed", file=sys.stderr)


if __name__ == "__main__":
    main()
