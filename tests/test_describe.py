"""What -d says about a packet. The packets are built here by hand, field by field, so each test
also shows where an IP, ICMP, TCP or UDP header keeps the fields tinyvpn prints."""

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from tinyvpn import describe_packet

ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58


def ipv4(protocol: int, payload: bytes, source: str = "198.51.100.1", destination: str = "198.51.100.2",
         fragment_offset: int = 0) -> bytes:
    """A 20-byte IPv4 header (version 4, IHL 5 words) followed by `payload`."""
    addresses = socket.inet_pton(socket.AF_INET, source) + socket.inet_pton(socket.AF_INET, destination)
    return struct.pack("!BBHHHBBH8s", 0x45, 0, 20 + len(payload), 1, fragment_offset, 64, protocol, 0,
                       addresses) + payload


def ipv6(next_header: int, payload: bytes, source: str = "2001:db8:2::1", destination: str = "2001:db8:2::2") -> bytes:
    """A 40-byte IPv6 header (version 6) followed by `payload`."""
    addresses = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, destination)
    return struct.pack("!IHBB32s", 6 << 28, len(payload), next_header, 64, addresses) + payload


def icmp_echo(kind: int, identifier: int, sequence: int) -> bytes:
    """Type, code, checksum, then (for echo) identifier and sequence number, then data."""
    return struct.pack("!BBHHH", kind, 0, 0, identifier, sequence) + bytes(56)


def tcp(source_port: int, destination_port: int, flags: int) -> bytes:
    """Ports, sequence and acknowledgement numbers, header length (5 words), flags, window, ..."""
    return struct.pack("!HHIIBBHHH", source_port, destination_port, 1000, 0, 5 << 4, flags, 65535, 0, 0)


def test_ipv4_echo_request() -> None:
    assert describe_packet(ipv4(ICMP, icmp_echo(8, 7, 1))) == \
        "IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request id=7 seq=1"


def test_ipv6_echo_reply() -> None:
    assert describe_packet(ipv6(ICMPV6, icmp_echo(129, 7, 2))) == \
        "IPv6 2001:db8:2::1 -> 2001:db8:2::2  ICMPv6 echo-reply id=7 seq=2"


def test_icmpv6_neighbour_solicitation_has_no_id() -> None:
    assert describe_packet(ipv6(ICMPV6, struct.pack("!BBHI", 135, 0, 0, 0) + bytes(16))).endswith(
        "ICMPv6 neighbour-solicitation")


def test_tcp_ports_and_flags() -> None:
    syn_ack = 0x02 | 0x10
    assert describe_packet(ipv4(TCP, tcp(443, 51000, syn_ack))) == \
        "IPv4 198.51.100.1 -> 198.51.100.2  TCP 443 -> 51000 [SYN,ACK]"
    fin_psh_ack = 0x01 | 0x08 | 0x10
    assert describe_packet(ipv6(TCP, tcp(51000, 22, fin_psh_ack))).endswith("TCP 51000 -> 22 [ACK,FIN,PSH]")
    assert describe_packet(ipv4(TCP, tcp(1, 2, 0x04))).endswith("[RST]")


def test_udp_ports() -> None:
    assert describe_packet(ipv4(UDP, struct.pack("!HHHH", 53, 5353, 8, 0))).endswith("UDP 53 -> 5353")


def test_unknown_protocol_is_named_by_number() -> None:
    assert describe_packet(ipv4(47, b"gre")).endswith("protocol 47")


def test_a_later_fragment_has_no_transport_header() -> None:
    assert describe_packet(ipv4(UDP, b"middle of a datagram", fragment_offset=185)).endswith("  fragment")


def test_damaged_packets_are_named_not_raised() -> None:
    assert describe_packet(b"") == "not an IP packet"
    assert describe_packet(b"This is not IP!!") == "not an IP packet"  # 'T' = 0x54: version 5
    assert describe_packet(ipv4(ICMP, b"")[:12]) == "truncated IPv4 header"
    assert describe_packet(b"\x43" + bytes(30)) == "truncated IPv4 header"  # IHL 3: shorter than 20 bytes
    assert describe_packet(ipv6(ICMPV6, b"")[:39]) == "truncated IPv6 header"
    assert describe_packet(ipv4(TCP, tcp(1, 2, 0)[:10])).endswith("TCP, truncated header")
    assert describe_packet(ipv6(ICMPV6, b"\x80\x00")).endswith("ICMPv6, truncated header")


@given(st.binary(max_size=200))
def test_any_bytes_at_all_get_a_description(data: bytes) -> None:
    assert describe_packet(data)


@given(st.sampled_from([0x45, 0x46, 0x4F, 0x60]), st.sampled_from([0, 1, 6, 17, 58, 47, 255]), st.binary(max_size=80))
def test_any_payload_behind_a_plausible_header_gets_a_description(first: int, protocol: int, rest: bytes) -> None:
    packet = bytes([first]) + bytes(5) + bytes([protocol]) + bytes(2) + bytes([protocol]) + rest
    assert describe_packet(packet)
