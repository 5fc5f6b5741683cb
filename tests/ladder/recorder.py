"""What a check sees: tests/lab/wire.py record, run in a host's namespace, as a Recorder that
hands the check every packet an interface carried (the cable, or a TUN), decoded as far as
the checks need. The checks of all three parts use it alike. Standard library only.
"""

import json
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Optional

import netns
import wire
from netns import Hosts


@dataclass
class Seen:
    """One IP packet a recorder saw: when, whether its host was sending it, and its bytes."""
    time: float
    out: bool
    packet: bytes

    @property
    def udp(self) -> Optional[tuple]:
        """(source address, destination address, UDP payload) of an IPv4 UDP datagram."""
        header = (self.packet[0] & 0x0F) * 4
        if self.packet[0] >> 4 != 4 or self.packet[9] != 17:
            return None
        return (socket.inet_ntoa(self.packet[12:16]), socket.inet_ntoa(self.packet[16:20]),
                self.packet[header + 8:])

    @property
    def ports(self) -> tuple:
        """(source port, destination port) of a UDP datagram."""
        header = (self.packet[0] & 0x0F) * 4
        return struct.unpack("!HH", self.packet[header:header + 4])


class Recorder:
    """tests/wire.py record, in a host's namespace: every packet an interface carries."""

    def __init__(self, hosts: Hosts, side: str, interface: str) -> None:
        self.hosts, self.name = hosts, f"record-{side}-{interface}"
        self.process = netns.start(hosts, side, sys.executable, wire.SCRIPT, "record", interface,
                                   name=self.name)
        netns.wait_for(lambda: "listening" in netns.output(hosts, self.name, "out")
                       or self.process.poll() is not None, f"the recorder on {interface}")

    def seen(self, since: float = 0, until: float = float("inf")) -> list:
        """What it has seen so far, from time `since` to `until`."""
        if self.process.poll() is not None:  # the check would see nothing, and pass
            raise RuntimeError(f"{self.name} failed: {netns.output(self.hosts, self.name)}")
        seen = []
        for line in netns.output(self.hosts, self.name, "out").splitlines()[1:]:
            if line.endswith("}"):  # not a line still being written
                d = json.loads(line)
                seen.append(Seen(d["time"], d["out"], bytes.fromhex(d["hex"])))
        return [s for s in seen if since <= s.time < until]

    def packets(self) -> list:
        """(time, packet) of each packet seen, as wire.write_pcap takes them."""
        return [(s.time, s.packet) for s in self.seen()]

    def datagrams(self, source: str, destination: str = "", since: float = 0,
                  until: float = float("inf")) -> list:
        """The UDP payloads sent from `source` (to `destination`), oldest first."""
        return [payload for _, payload in self.timed(source, destination, since, until)]

    def timed(self, source: str, destination: str = "", since: float = 0,
              until: float = float("inf")) -> list:
        """The same, each as (the time it was seen, the payload)."""
        return [(s.time, s.udp[2]) for s in self.seen(since, until)
                if s.udp and s.udp[0] == source and destination in ("", s.udp[1])]

    def ports(self, source: str, destination: str) -> list:
        """(source port, destination port) of each datagram from `source` to `destination`."""
        return [s.ports for s in self.seen() if s.udp and s.udp[:2] == (source, destination)]

    def written(self, since: float = 0) -> list:
        """On a TUN: the packets tinyvpn wrote into it (its kernel received them)."""
        return [s.packet for s in self.seen(since) if not s.out]

    def read(self, since: float = 0, until: float = float("inf")) -> list:
        """On a TUN: the packets its kernel sent into it, for tinyvpn to read."""
        return [s.packet for s in self.seen(since, until) if s.out]
