"""What -d says about a packet. The packets are built here by hand, field by field, so each test
also shows where an IP, ICMP, TCP or UDP header keeps the fields tinyvpn prints."""

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvpn
from tinyvpn import PROTOCOLS, Log, describe_packet

ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58


def ipv4(protocol: int, payload: bytes, fragment_offset: int = 0, options: bytes = b"") -> bytes:
    """An IPv4 header, 198.51.100.1 -> 198.51.100.2, followed by `payload`. Its first byte holds
    the version (4) and the header's length in 4-byte words: 5, more with `options`."""
    words = 5 + len(options) // 4
    addresses = socket.inet_pton(socket.AF_INET, "198.51.100.1") + \
        socket.inet_pton(socket.AF_INET, "198.51.100.2")
    # version/length, type of service, total length, id, flags/fragment offset, TTL, protocol,
    # header checksum (not checked by the decoder), addresses
    return struct.pack("!BBHHHBBH8s", 4 << 4 | words, 0, words * 4 + len(payload), 1,
                       fragment_offset, 64, protocol, 0, addresses) + options + payload


def ipv6(next_header: int, payload: bytes) -> bytes:
    """A 40-byte IPv6 header, 2001:db8:2::1 -> 2001:db8:2::2, followed by `payload`."""
    addresses = socket.inet_pton(socket.AF_INET6, "2001:db8:2::1") + \
        socket.inet_pton(socket.AF_INET6, "2001:db8:2::2")
    # version (and traffic class, flow label), payload length, next header, hop limit, addresses
    return struct.pack("!IHBB32s", 6 << 28, len(payload), next_header, 64, addresses) + payload


def icmp_echo(kind: int, identifier: int, sequence: int) -> bytes:
    """Type, code, checksum, then (for echo) identifier and sequence number, then data."""
    return struct.pack("!BBHHH", kind, 0, 0, identifier, sequence) + bytes(56)


def tcp(source_port: int, destination_port: int, flags: int) -> bytes:
    """Ports, sequence and acknowledgement numbers, header length (5 words), flags, window, ..."""
    return struct.pack("!HHIIBBHHH", source_port, destination_port, 1000, 0, 5 << 4, flags, 65535,
                       0, 0)


def test_ipv4_echo_request() -> None:
    assert describe_packet(ipv4(ICMP, icmp_echo(8, 7, 1))) == \
        "IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request id=7 seq=1"


def test_the_lines_for_a_ping_are_the_ones_the_docstring_shows(
        capsys: pytest.CaptureFixture[str]) -> None:
    """tinyvpn.py's docstring teaches the lines -d prints for its ping: A's, then B's."""
    ping = memoryview(ipv4(ICMP, icmp_echo(8, 7, 1)))  # 84 B, like ping's
    Log(stdio=False).outgoing(ping)  # on A, in Local.read()
    Log(stdio=False).received(ping, ("::ffff:192.0.2.1", 5000, 0, 0))  # on B, in Local.write()
    lines = [line.strip() for line in (tinyvpn.__doc__ or "").splitlines()]
    a = next(i for i, line in enumerate(lines) if line.startswith("tun->net "))  # A's line
    shown = [lines[a], lines[a + 1] + "   " + lines[a + 2].removeprefix("... ")]  # B's, in two
    assert capsys.readouterr().err.splitlines() == shown


def test_an_echo_type_of_the_other_icmp_shows_no_id() -> None:
    """Echo is types 8 and 0 in ICMP, 128 and 129 in ICMPv6: the other's numbers are not echoes."""
    assert describe_packet(ipv4(ICMP, icmp_echo(128, 7, 1))).endswith("ICMP type 128")
    assert describe_packet(ipv6(ICMPV6, icmp_echo(8, 7, 1))).endswith("ICMPv6 type 8")


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
    assert describe_packet(ipv6(TCP, tcp(51000, 22, fin_psh_ack))).endswith(
        "TCP 51000 -> 22 [ACK,FIN,PSH]")
    assert describe_packet(ipv4(TCP, tcp(1, 2, 0x04))).endswith("[RST]")


def test_udp_ports() -> None:
    udp_header = struct.pack("!HHHH", 53, 5353, 8, 0)  # ports, length, checksum
    assert describe_packet(ipv4(UDP, udp_header)).endswith("UDP 53 -> 5353")


def test_unknown_protocol_is_named_by_number() -> None:
    assert describe_packet(ipv4(47, b"gre")).endswith("protocol 47")


def test_a_later_fragment_has_no_transport_header() -> None:
    middle = ipv4(UDP, b"middle of a datagram", fragment_offset=185)
    assert describe_packet(middle).endswith("  fragment")


def test_damaged_packets_are_named_not_raised() -> None:
    assert describe_packet(b"") == "not an IP packet"
    assert describe_packet(b"This is not IP!!") == "not an IP packet"  # 'T' = 0x54: version 5
    assert describe_packet(ipv4(ICMP, b"")[:12]) == "truncated IPv4 header"
    assert describe_packet(b"\x43" + bytes(30)) == "truncated IPv4 header"  # IHL 3: < 20 bytes
    assert describe_packet(ipv6(ICMPV6, b"")[:39]) == "truncated IPv6 header"
    assert describe_packet(ipv4(TCP, tcp(1, 2, 0)[:10])).endswith("TCP, truncated header")
    assert describe_packet(ipv6(ICMPV6, b"\x80\x00")).endswith("ICMPv6, truncated header")


@given(st.binary(max_size=200))
def test_any_bytes_at_all_get_a_description(data: bytes) -> None:
    assert describe_packet(data)


@given(st.sampled_from(["IPv4", "IPv4 with options", "IPv6"]),
       st.sampled_from([ICMP, TCP, UDP, ICMPV6, 0, 47, 255]), st.binary(max_size=80))
def test_any_payload_behind_a_real_header_is_described_by_its_protocol(
        header: str, protocol: int, payload: bytes) -> None:
    packet = {"IPv4": lambda: ipv4(protocol, payload),
              "IPv4 with options": lambda: ipv4(protocol, payload, options=bytes(40)),
              "IPv6": lambda: ipv6(protocol, payload)}[header]()
    description = describe_packet(packet)
    assert description.startswith(header[:4] + " ")
    # The decoder found the transport header where the IP header says it starts.
    assert f"  {PROTOCOLS.get(protocol, f'protocol {protocol}')}" in description
