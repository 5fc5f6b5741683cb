#!/usr/bin/env python3
"""What crosses the cable, for the demo, the tests and the ladder's checks: record datagrams,
label their bytes, and forge or replay them as an attacker would. Standard library only.

    python3 tests/lab/wire.py forge HOST SOURCE DESTINATION
                                        send HOST:5000 one datagram holding an echo request
                                        from SOURCE to DESTINATION
    python3 tests/lab/wire.py record INTERFACE [PCAP]
                                        print every IP packet the interface carries, either
                                        way, one JSON line each, until ended; and, given PCAP,
                                        write them to that file too, for `wireshark PCAP` or
                                        `tcpdump -r PCAP`
    python3 tests/lab/wire.py send HOST HEX...
                                        send HOST:5000 one datagram per HEX: its bytes

Each runs inside a test host's namespace:
`ip netns exec NAMESPACE python3 tests/lab/wire.py ...`.
"""

import errno
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Optional

PORT = 5000
SCRIPT = str(Path(__file__).resolve())  # to run in a namespace: python3 SCRIPT record ...
UDP, ICMP, ECHO_REQUEST = 17, 1, 8  # IP protocol numbers, ICMP type


def carries_echo_request(packet: bytes) -> bool:
    """IPv4, UDP to PORT, and inside: an IPv4 packet holding an ICMP echo request."""
    outer = (packet[0] & 0x0F) * 4  # the outer IP header's length
    if len(packet) < outer + 8 + 21 or packet[9] != UDP:
        return False
    destination_port = struct.unpack("!H", packet[outer + 2:outer + 4])[0]
    inner = packet[outer + 8:]
    inner_length = (inner[0] & 0x0F) * 4
    return destination_port == PORT and inner[0] >> 4 == 4 and inner[9] == ICMP and \
        len(inner) > inner_length and inner[inner_length] == ECHO_REQUEST


def labelled(packet: bytes) -> list:
    """The datagram's bytes in hex, cut where its parts begin, each part with what it says."""
    outer_length = (packet[0] & 0x0F) * 4
    total, protocol = struct.unpack("!H", packet[2:4])[0], packet[9]
    udp = packet[outer_length:outer_length + 8]
    source_port, destination_port, udp_length = struct.unpack("!HHH", udp[:6])
    inner = packet[outer_length + 8:]
    inner_length = (inner[0] & 0x0F) * 4
    return [
        f"outer IPv4 header ({outer_length} bytes), added by a's kernel:",
        *hex_rows(packet[:outer_length]),
        f"    version 4, header {outer_length} bytes, total length {total}, "
        f"protocol {protocol} (UDP), {address(packet[12:16])} -> {address(packet[16:20])}",
        "UDP header (8 bytes), added by a's kernel:",
        *hex_rows(udp),
        f"    port {source_port} -> {destination_port}, length {udp_length} "
        f"(8 + {udp_length - 8})",
        f"inner packet ({len(inner)} bytes), exactly as a's tinyvpn read it from its TUN:",
        f"  its IPv4 header ({inner_length} bytes), added by a's kernel for ping:",
        *hex_rows(inner[:inner_length]),
        f"    {address(inner[12:16])} -> {address(inner[16:20])}, protocol {inner[9]} (ICMP)",
        f"  the ICMP echo request ({len(inner) - inner_length} bytes) that ping wrote:",
        *hex_rows(inner[inner_length:]),
    ]


def hex_rows(data: bytes, width: int = 20) -> list:
    return ["    " + data[i:i + width].hex(" ") for i in range(0, len(data), width)]


def address(four: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, four)


def forge(host: str, source: str, destination: str) -> None:
    """Send `host`:PORT one datagram: an ICMP echo request from `source` to `destination`."""
    packet = echo_request(source, destination, 0x6D6D, 1, b"not from a, but from mallory")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(packet, (host, PORT))


def echo_request(source: str, destination: str, identifier: int, sequence: int,
                 payload: bytes) -> bytes:
    """An IPv4 packet holding an ICMP echo request, both checksums right."""
    echo = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, identifier, sequence) + payload
    echo = echo[:2] + struct.pack("!H", checksum(echo)) + echo[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(echo), 0, 0, 64, ICMP, 0,
                         socket.inet_aton(source), socket.inet_aton(destination))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + echo


def echo(packet: bytes) -> Optional[tuple]:
    """(type, id, seq) of an IPv4 ICMP echo request (8) or reply (0); None for any other."""
    header = (packet[0] & 0x0F) * 4 if packet else 0
    if not packet or packet[0] >> 4 != 4 or len(packet) < header + 8 or packet[9] != ICMP:
        return None
    kind, _, _, identifier, sequence = struct.unpack("!BBHHH", packet[header:header + 8])
    return (kind, identifier, sequence) if kind in (0, ECHO_REQUEST) else None


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) that IP and ICMP headers carry: the one's complement of
    the one's complement sum of 16-bit words. The receiving kernel drops a packet without it."""
    total = sum(struct.unpack(f"!{len(data) // 2}H", data[:len(data) // 2 * 2]))
    if len(data) % 2:
        total += data[-1] << 8
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


ALL = 0x0003  # ETH_P_ALL: every protocol
SOL_PACKET, PACKET_VNET_HDR = 263, 15  # linux/if_packet.h
OUTGOING = socket.PACKET_OUTGOING
GSO_UDP_L4 = 5  # linux/virtio_net.h: a UDP GSO train, cut into gso_size datagrams
ETHERNET = 1  # ARPHRD_ETHER: a veth; a TUN (ARPHRD_NONE) has no link header


def record(interface: str, pcap: str = "") -> None:
    """Print each IP packet `interface` carries as a JSON line: its time, whether it was
    going out, and its bytes in hex; and write it to the file `pcap`, if named. Glued UDP
    datagrams (GSO) are cut apart first."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ALL)) as tap, \
            open(pcap or os.devnull, "wb") as capture:
        capture.write(pcap_header())
        # A virtio header before each frame says whether it is a GSO train, and its size.
        tap.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        tap.bind((interface, ALL))
        print("listening", flush=True)
        while True:
            try:
                frame, (_, _, kind, link, _) = tap.recvfrom(70000)
            except OSError as error:  # ENETDOWN, once, if the interface was down
                if error.errno == errno.ENETDOWN:
                    continue
                raise
            gso_type, gso_size = struct.unpack("=xBxxHxxxx", frame[:10])
            # After the 10-byte virtio header: a veth's 14-byte Ethernet header, then IP.
            packet = frame[10 + 14:] if link == ETHERNET else frame[10:]
            if packet[:1] and packet[0] >> 4 in (4, 6):
                for part in cut(packet, gso_size if gso_type == GSO_UDP_L4 else 0):
                    now = time.time()
                    capture.write(pcap_record(now, part))
                    capture.flush()  # whole packets on disk: SIGTERM ends this loop
                    print(json.dumps({"time": now, "out": kind == OUTGOING,
                                      "hex": part.hex()}), flush=True)


def cut(packet: bytes, size: int) -> list:
    """A GSO train of IPv4 UDP datagrams of `size` bytes, as the separate packets of the
    wire, their length fields and IP checksum as the kernel writes them; any other packet as
    itself. (The UDP checksum, which the NIC would fill in, stays as it is.)"""
    header = (packet[0] & 0x0F) * 4
    if not size or packet[0] >> 4 != 4:
        return [packet]
    return [datagram(packet[:header], packet[header:header + 8], packet[start:start + size])
            for start in range(header + 8, len(packet), size)]


def datagram(ip: bytes, udp: bytes, payload: bytes) -> bytes:
    """An IPv4 UDP datagram from these headers and `payload`, its lengths set to fit."""
    ip = ip[:2] + struct.pack("!H", len(ip) + 8 + len(payload)) + ip[4:10] + bytes(2) + ip[12:]
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + udp[:4] + struct.pack("!H", 8 + len(payload)) + udp[6:] + payload


# Classic libpcap files, which tcpdump and Wireshark read (pcap-savefile(5); the IETF's
# draft-ietf-opsawg-pcap): a 24-byte file header, then a 16-byte header before each packet.
PCAP_MAGIC = 0xA1B2C3D4  # written in the machine's byte order: readers learn it from this
PCAP_VERSION = (2, 4)
SNAPLEN = 262144  # the longest packet a record may hold
LINKTYPE_RAW = 101  # tcpdump.org/linktypes.html: each packet is bare IPv4 or IPv6, no link header


def pcap_header() -> bytes:
    return struct.pack("=IHHiIII", PCAP_MAGIC, *PCAP_VERSION, 0, 0, SNAPLEN, LINKTYPE_RAW)


def pcap_record(when: float, packet: bytes) -> bytes:
    """One packet, seen at `when` (seconds since 1970), as a pcap record."""
    seconds, microseconds = divmod(round(when * 1_000_000), 1_000_000)
    return struct.pack("=IIII", seconds, microseconds, len(packet), len(packet)) + packet


def write_pcap(path: str, packets: list) -> None:
    """Write (time, packet) pairs, IP packets with no link header, as a pcap file."""
    with open(path, "wb") as capture:
        capture.write(pcap_header() + b"".join(pcap_record(*seen) for seen in packets))


def send(host: str, *payloads: str) -> None:
    """Send `host`:PORT one datagram for each of `payloads` (hex), in order."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for payload in payloads:
            sock.sendto(bytes.fromhex(payload), (host, PORT))


if __name__ == "__main__":
    {"forge": forge, "record": record, "send": send}[sys.argv[1]](*sys.argv[2:])
