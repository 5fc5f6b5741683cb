#!/usr/bin/env python3
"""The one-machine demo: a real tinyvpn tunnel between two network namespaces. As root, or as
an ordinary user where the kernel gives users namespaces of their own (netns.become_root):

    python3 tests/lab/demo.py        set up, ping through the tunnel, show every packet, one
                                     datagram on the wire byte by byte, and an injected packet
    python3 tests/lab/demo.py --keep ... then keep the tunnel up until Ctrl-C, showing packets
    python3 tests/lab/demo.py --options "--key /tmp/tinyvpn.key"
                                     ... with these options for both tinyvpns (the ladder's)
    python3 tests/lab/demo.py --nat  ... with a behind a NAT that forgets an idle tunnel after
                                     3 s; --nat random: each new mapping gets a port of its own
    python3 tests/lab/demo.py --pcap FILE
                                     ... keeping the cable's capture in FILE (by default
                                     cable.pcap in a new folder of /tmp), for `wireshark FILE`

Two namespaces ("hosts" a and b) are joined by a veth cable; tinyvpn runs in each. A third,
mallory, is plugged into b's side and is no part of the tunnel. Everything is removed at the
end, also after Ctrl-C or an error. Every command printed is a command that was run.
"""

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
from contextlib import suppress

import netns
import wire
from netns import MALLORY, PORT, TINYVPN, TUNNEL, UNDERLAY, Hosts

sys.path.insert(0, str(TINYVPN.parent))
from tinyvpn import describe_packet  # noqa: E402  (the decoder -d uses)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(command: list) -> None:
    print(f"  {shlex.join(command)}", flush=True)


def show_new_lines(hosts: Hosts, seen: dict, sides: str = "ab") -> None:
    """Print what each tinyvpn wrote to stderr since the last call, marked with its side."""
    for side in sides:
        lines = netns.output(hosts, f"tinyvpn-{side}").splitlines()
        for line in lines[seen.get(side, 0):]:
            print(f"  [{side}] {line}", flush=True)
        seen[side] = len(lines)


NAT_FORGETS = 3  # seconds: a home router keeps a UDP mapping a minute or two; this one, 3 s


def new_pcap() -> str:
    """A capture file of this run's own: another user's, or an older run's, is never reused."""
    return os.path.join(tempfile.mkdtemp(prefix="tinyvpn-demo-"), "cable.pcap")


def demo(keep: bool, options: list, nat: str = "", pcap: str = "") -> None:
    pcap = pcap or new_pcap()
    if netns.in_user_namespace():
        say("Not root: the demo runs as root of a user namespace of its own (unshare), with its "
            "own network\n   and its own /run; nobody else on this machine sees what it builds.")
    with netns.two_hosts() as hosts:
        a, b = hosts.namespace("a"), hosts.namespace("b")
        say(f"Two hosts: namespaces {a} and {b}, joined by a veth cable "
            f"({UNDERLAY['a'][0]} <-> {UNDERLAY['b'][0]}).")
        if nat:
            netns.add_nat(hosts, NAT_FORGETS, random_ports=nat == "random")
            say(f"a sits behind a NAT: namespace {hosts.namespace('n')}, a home router between "
                f"a ({netns.NAT_INSIDE['a']}) and the cable,\n   where {UNDERLAY['a'][0]} is "
                f"now its address. It masquerades a's datagrams (nftables), and forgets\n"
                f"   a mapping after {NAT_FORGETS} s with no datagram either way"
                + (", giving each new one a port of its own." if nat == "random" else "."))
        say("Each starts tinyvpn:")
        for side in "ab":
            show(netns.tinyvpn_command(hosts, side, "-d", *options))
            netns.start_tinyvpn(hosts, side, "-d", *options)

        say("Each host gives its TUN interface addresses, as the README says")
        for side in "ab":
            for command in netns.tunnel_commands(hosts, side):
                show(command)
        netns.bring_up_tunnel(hosts)

        say(f"a pings b's tunnel address {TUNNEL['b'][0]}: the packets go through tinyvpn")
        netns.start(hosts, "b", sys.executable, wire.SCRIPT, "record", f"{hosts.prefix}v", pcap,
                    name="record")  # until the end: mallory's doing, too
        netns.wait_for(lambda: "listening" in netns.output(hosts, "record", "out"),
                       "the capture to start")
        result = netns.run(hosts, "a", "ping", "-c", "3", "-i", "0.5", TUNNEL["b"][0],
                           check=False)
        print("\n".join("  " + line for line in result.stdout.splitlines()))

        say("What the two tinyvpn processes printed (-d): every packet, each way")
        seen: dict = {}
        show_new_lines(hosts, seen)
        if result.returncode != 0:
            raise SystemExit("demo: the ping did not get through; see the lines above")

        show_on_the_wire(hosts)
        let_mallory_inject(hosts, seen)
        if keep:
            keep_up(hosts, seen, nat)

        say("Stopping tinyvpn (SIGTERM): each prints its summary")
        for process in hosts.processes:
            netns.stop(process)
        show_new_lines(hosts, seen)
    say("Namespaces, veth and TUN interfaces removed: nothing is left behind")
    show_capture(pcap)


def show_capture(pcap: str) -> None:
    """Where the cable's capture is, and how to open it."""
    say(f"Every packet on the cable at b's end is in {pcap} (pcap). Open it with\n"
        f"   wireshark -d udp.port=={PORT},ip {pcap}    (-d: decode UDP port {PORT} as IP, to "
        "see inside)\n"
        f"   tcpdump -nr {pcap}                          (add -X for every byte, in hex)")


def sent_caught(hosts: Hosts) -> list:
    """The datagrams from a to b that the recorder has printed so far (three pings: 3 at least)."""
    lines = netns.output(hosts, "record", "out").splitlines()[1:]
    caught = [bytes.fromhex(json.loads(line)["hex"]) for line in lines if line.endswith("}")]
    return [packet for packet in caught if packet[12:20] == socket.inet_aton(UNDERLAY["a"][0])
            + socket.inet_aton(UNDERLAY["b"][0]) and packet[9] == wire.UDP]


def show_on_the_wire(hosts: Hosts) -> None:
    """The first echo request as it crossed the cable: a packet inside a packet."""
    say(f"The first echo request on the cable, caught at b's end ({hosts.prefix}v) by a packet "
        "socket:\n   a packet inside a packet")
    with suppress(TimeoutError):  # a busy machine's recorder may print them a moment late
        netns.wait_for(lambda: len(sent_caught(hosts)) >= 3, "the capture of the pings", 5)
    sent = sent_caught(hosts)
    echoes = [packet for packet in sent if wire.carries_echo_request(packet)]
    if echoes:
        for line in wire.labelled(echoes[0]):
            print(f"  {line}")
        inner = echoes[0][(echoes[0][0] & 0x0F) * 4 + 8:]
        print(f"  -d decoded those inner bytes as: {describe_packet(inner)}")
    elif sent:  # with the exercises' options: the largest of a's datagrams, an echo request
        packet = max(sent, key=len)
        header = (packet[0] & 0x0F) * 4 + 8
        print(f"  outer IPv4 and UDP headers ({header} bytes), added by a's kernel:")
        print("\n".join("  " + row for row in wire.hex_rows(packet[:header])))
        print(f"  UDP payload ({len(packet) - header} bytes), as a's tinyvpn sent it:")
        print("\n".join("  " + row for row in wire.hex_rows(packet[header:])))
        inner = socket.inet_aton(TUNNEL["a"][0]) + socket.inet_aton(TUNNEL["b"][0])
        print("  The inner addresses 198.51.100.1 -> 198.51.100.2 (c6 33 64 01 c6 33 64 02) are "
              + ("in it, in the clear." if inner in packet else "nowhere in it."))


def let_mallory_inject(hosts: Hosts, seen: dict) -> None:
    """A host outside the tunnel sends b one datagram, pretending to be a."""
    netns.add_mallory(hosts)
    say(f"Mallory ({MALLORY}), plugged into b's side of the cable but no part of the tunnel,\n"
        f"   sends b's port {PORT} one datagram: an echo request 'from' a's tunnel address")
    forge = [*netns.in_namespace(hosts, "m"), sys.executable, wire.SCRIPT, "forge",
             UNDERLAY["b"][0], TUNNEL["a"][0], TUNNEL["b"][0]]
    show(forge)
    netns.sh(*forge)
    try:
        netns.wait_for(lambda: "id=28013" in netns.output(hosts, "tinyvpn-a"),
                       "b's answer to mallory's packet to reach a", timeout=3)
    except TimeoutError:  # with the exercises' --key, or behind a NAT that forgot a
        show_new_lines(hosts, seen, sides="ba")
        if "DROPPED" in "".join(line for line in netns.output(hosts, "tinyvpn-b").splitlines()
                                if f"(from {MALLORY}:" in line):
            print("\n  No answer reached a: b's tinyvpn dropped mallory's datagram (see its "
                  "line).")
        else:
            print("\n  b took mallory's datagram, but its answer did not reach a: a's NAT had "
                  "forgotten the tunnel.")
        return
    show_new_lines(hosts, seen, sides="ba")
    print(f"""
  b's tinyvpn took the datagram from {MALLORY}, as it takes any datagram, and wrote the packet
  inside into its TUN. b's kernel believed it came from {TUNNEL['a'][0]} and answered through
  the tunnel: a got a reply (id=28013) to a ping it never sent. Mallory could as well have
  sent TCP to any service on b that trusts the tunnel's addresses.
  A real VPN stops this: every packet carries a tag made with a key only the peers share, and
  one without a valid tag is dropped; the inner source address must be one that peer may use
  (WireGuard's cryptokey routing); and a counter in each packet stops replays.
  Build them yourself: the ladder in tests/ladder/README.md.""")


def keep_up(hosts: Hosts, seen: dict, nat: str = "") -> None:
    """Show packets as they come until Ctrl-C or SIGTERM, which may arrive from the first line
    printed on: the test that sends it waits for that line."""
    # As an ordinary user the namespaces are inside the demo's own: nsenter goes there first.
    enter = " ".join([*netns.from_another_terminal(), "ip", "netns", "exec"])
    a, b = f"{enter} {hosts.namespace('a')}", f"{enter} {hosts.namespace('b')}"
    try:
        say("The tunnel stays up until Ctrl-C. From another terminal, try:")
        print(f"  {a} ping {TUNNEL['b'][0]}\n"
              f"  {a} ping {TUNNEL['b'][1]}\n"
              f"  {b} python3 -m http.server --bind {TUNNEL['b'][0]} 8000\n"
              f"  {a} python3 -c \"import urllib.request as u; "
              f"print(u.urlopen('http://{TUNNEL['b'][0]}:8000/').status)\"", flush=True)
        if nat:
            print(f"  {b} ping -c 3 {TUNNEL['a'][0]}    # after {NAT_FORGETS + 2} s "
                  "of silence: no answer, unless a sends keep-alives", flush=True)
        while True:
            time.sleep(0.3)
            show_new_lines(hosts, seen)
    except KeyboardInterrupt:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description="A tinyvpn tunnel between two network namespaces, on one machine.")
    parser.add_argument("--keep", action="store_true", help="keep the tunnel up until Ctrl-C")
    parser.add_argument("--options", default="", metavar="'OPTIONS'",
                        help="more options for both tinyvpns, e.g. '--key FILE' (the exercises)")
    parser.add_argument("--nat", nargs="?", const="kept", choices=["kept", "random"],
                        help=f"put a behind a NAT that forgets an idle tunnel after {NAT_FORGETS}"
                        " s; 'random': each new mapping leaves from a port of its own")
    parser.add_argument("--pcap", default="", metavar="FILE",
                        help="where to write the cable's capture (default: cable.pcap in a new "
                             "folder of /tmp)")
    args = parser.parse_args()
    missing = netns.missing_tools("ip", "ping", *(["nft"] if args.nat else []))
    if missing:
        sys.exit(f"demo: {' and '.join(missing)} missing: apt-get install iproute2 iputils-ping"
                 + (" nftables" if args.nat else ""))
    netns.become_root("demo")  # it creates network namespaces and TUN interfaces
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM as on Ctrl-C
    try:
        demo(args.keep, shlex.split(args.options), args.nat or "", args.pcap)
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything was removed", file=sys.stderr)


if __name__ == "__main__":
    main()
