#!/usr/bin/env python3
"""tinyvpn: a tiny point-to-point VPN, written to be read.

It copies packets between a TUN interface and a UDP socket: every IP packet the
kernel routes into the TUN goes to the peer as one UDP datagram, and every
datagram that arrives is handed back to the kernel as one IP packet.

There is NO encryption and NO authentication: anyone who can reach the port can
read the traffic and inject packets. It is teaching material; use WireGuard for
anything real.
"""

import argparse
import collections
import errno
import fcntl
import os
import platform
import select
import signal
import socket
import struct
import sys
from typing import Any, NoReturn, Optional

__version__ = "1.0.0"

# --- Kernel facts ------------------------------------------------------------

IFF_TUN = 0x0001  # a layer-3 device: we read and write bare IP packets (IFF_TAP would mean Ethernet frames)
IFF_NO_PI = 0x1000  # no 4-byte "packet information" prefix: each read or write is the IP packet alone
IFNAMSIZ = 16  # an interface name is 16 bytes including its final NUL, so 15 characters at most


def ioctl_write_request(letter: str, number: int, size: int) -> int:
    """Linux's _IOW(letter, number, size): a request code that passes `size` bytes to the kernel."""
    # The code packs: a "write" direction flag | the argument size << 16 | the letter << 8 | the number.
    # Most CPUs put "write" at bit 30; MIPS, PowerPC, SPARC and Alpha put it at bit 31.
    old_layout = platform.machine().startswith(("mips", "ppc", "powerpc", "sparc", "alpha"))
    write_flag = 0x80000000 if old_layout else 0x40000000
    return write_flag | size << 16 | ord(letter) << 8 | number


# linux/if_tun.h: #define TUNSETIFF _IOW('T', 202, int), which is 0x400454ca on x86 and ARM.
TUNSETIFF = ioctl_write_request("T", 202, struct.calcsize("i"))

MAX_PACKET = 65535  # an IP length field is 16 bits, so no packet (and no UDP datagram) is longer
MAX_STDIN_READ = 65507  # the largest UDP payload IPv4 can carry: 65535 - 20 (IPv4 header) - 8 (UDP header)
RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes of datagrams the kernel may queue for us (see open_udp_socket)
# Reading a ready descriptor until it is empty saves a select() per packet under load;
# stopping after BATCH packets keeps a flood one way from starving the other way.
BATCH = 64


def fail(message: str) -> NoReturn:
    """Stop with a one-line error on stderr and exit status 1."""
    sys.exit(f"tinyvpn: {message}")


# --- Setup: the TUN interface and the UDP socket -----------------------------


def make_ifreq(name: str) -> bytes:
    """struct ifreq, as TUNSETIFF reads it: the name, then the flags, padded to 40 bytes."""
    # 16 bytes of NUL-padded name, a 2-byte short of flags, 22 bytes for the rest of the union.
    return struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)


def open_tun(name: str) -> int:
    """Create TUN interface `name` (or attach to a persistent one) and return its file descriptor."""
    no_permission = (
        "not allowed to create a TUN interface: run as root (or with CAP_NET_ADMIN), "
        f"or first create one owned by your user: ip tuntap add dev {name} mode tun user $USER"
    )
    try:
        # Non-blocking, so that forward_out() can read until the queue is empty.
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    except FileNotFoundError:
        fail("/dev/net/tun is missing: run 'modprobe tun'; in a container, pass the device "
             "(docker run --device /dev/net/tun --cap-add NET_ADMIN ...)")
    except PermissionError:
        fail(no_permission)
    try:
        # Opening /dev/net/tun gives a blank descriptor; this ioctl turns it into interface `name`.
        # The interface lives as long as the descriptor: it disappears when we exit.
        fcntl.ioctl(fd, TUNSETIFF, make_ifreq(name))
    except OSError as error:
        os.close(fd)
        if error.errno == errno.EPERM:
            fail(no_permission)
        if error.errno == errno.EBUSY:
            fail(f"interface {name} is busy: another program has it open, or it is not a TUN device; "
                 "choose another INTERFACE name")
        fail(f"cannot create TUN interface {name}: {error.strerror}")
    return fd


def open_udp_socket(port: int) -> socket.socket:
    """Bind one UDP socket to `port` on every local address, IPv4 and IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        # Dual stack: the IPv6 socket also receives IPv4 (as ::ffff:a.b.c.d), whatever the sysctl default.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        everywhere = "::"
    except OSError:  # this kernel has no IPv6: IPv4 only
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        everywhere = "0.0.0.0"
    # Room for bursts: the default receive buffer (~208 KiB) holds ~90 full-size packets, and a datagram
    # that finds it full is dropped. The kernel caps this at sysctl net.core.rmem_max.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    try:
        sock.bind((everywhere, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(f"UDP port {port} is already in use: stop the program using it or choose another PORT")
        if error.errno == errno.EACCES:
            fail(f"UDP port {port} is below 1024 and needs root: choose a PORT from 1024 to 65535")
        fail(f"cannot bind UDP port {port}: {error.strerror}")
    return sock


Address = tuple[Any, ...]  # a socket address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6


def resolve_peer(peer: str, port: int, family: int) -> Address:
    """Look up `peer` once, and return the address every datagram will be sent to."""
    wanted = socket.AF_INET if family == socket.AF_INET else socket.AF_UNSPEC
    try:
        found = socket.getaddrinfo(peer, port, wanted, socket.SOCK_DGRAM)
    except socket.gaierror as error:
        fail(f"cannot resolve peer {peer!r}: {error.strerror}")
    peer_family, _, _, _, address = found[0]
    if family == socket.AF_INET6 and peer_family == socket.AF_INET:
        return (f"::ffff:{address[0]}", port, 0, 0)  # how an IPv6 socket spells an IPv4 address
    return address


# --- The loop ----------------------------------------------------------------


def relay(inside: int, outside: int, sock: socket.socket, peer: Address,
          counts: collections.Counter[str], debug: bool, is_tun: bool) -> None:
    """The VPN itself: wait until either side has data, move it across, repeat forever."""
    buffer = memoryview(bytearray(MAX_PACKET))  # one buffer reused for every packet: nothing allocated per packet
    if is_tun:  # the TUN is non-blocking, so it is read until empty
        reads, read_buffer, outgoing, incoming = BATCH, buffer, "tun->net", "net->tun"
    else:  # stdin is left blocking, so it is read once per select(), at most one datagram's worth
        reads, read_buffer, outgoing, incoming = 1, buffer[:MAX_STDIN_READ], "stdin->net", "net->stdout"
    network = sock.fileno()
    watched = [inside, network]
    while True:
        ready, _, _ = select.select(watched, [], [])  # sleeps, using no CPU, until a descriptor is readable
        if inside in ready and not forward_out(inside, sock, peer, read_buffer, counts, debug, outgoing, reads):
            watched.remove(inside)  # stdin ended: keep receiving, like netcat
        if network in ready:
            forward_in(sock, outside, buffer, counts, debug, incoming)


def forward_out(inside: int, sock: socket.socket, peer: Address, buffer: memoryview,
                counts: collections.Counter[str], debug: bool, direction: str, reads: int) -> bool:
    """Send up to `reads` packets read from `inside` to the peer; False once `inside` has ended."""
    for _ in range(reads):
        try:
            length = os.readv(inside, [buffer])  # one read returns exactly one packet, never two
        except BlockingIOError:  # the TUN queue is empty: back to select()
            return True
        if length == 0:  # only stdin ends; a TUN never does
            return False
        packet = buffer[:length]
        try:
            sock.sendto(packet, peer)
        except OSError as error:  # no route yet, too big, ...: drop this packet, keep the tunnel
            if debug:
                log_packet(counts, direction, packet, error=error)
            continue
        if debug:  # counting and printing cost time per packet: only -d pays for them
            log_packet(counts, direction, packet)
    return True


def forward_in(sock: socket.socket, outside: int, buffer: memoryview,
               counts: collections.Counter[str], debug: bool, direction: str) -> None:
    """Write datagrams received from anyone to `outside`, each as one packet."""
    origin = None
    for _ in range(BATCH):
        try:
            # MSG_DONTWAIT: this one call returns at once when nothing is queued; the socket stays blocking.
            if debug:  # asking who sent it costs ~1 us a packet: only -d, which prints it, pays for it
                length, origin = sock.recvfrom_into(buffer, MAX_PACKET, socket.MSG_DONTWAIT)
            else:
                length = sock.recv_into(buffer, MAX_PACKET, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        packet = buffer[:length]
        try:
            write_all(outside, packet)
        except BrokenPipeError:  # stdout was closed: nobody is left to read, so stop
            raise
        except OSError as error:  # the kernel refused the packet (not IP, interface down): drop it
            if debug:
                log_packet(counts, direction, packet, origin, error)
            continue
        if debug:
            log_packet(counts, direction, packet, origin)


def write_all(fd: int, data: memoryview) -> None:
    """Write all of `data`: a TUN takes a packet in one write, a pipe may take it in pieces."""
    while data:
        data = data[os.write(fd, data):]


# --- What -d prints ------------------------------------------------------------

PROTOCOLS = {0: "IPv6-hop-by-hop", 1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}
ICMP_TYPES = {0: "echo-reply", 3: "destination-unreachable", 8: "echo-request", 11: "time-exceeded"}
ICMPV6_TYPES = {
    1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
    128: "echo-request", 129: "echo-reply", 133: "router-solicitation", 134: "router-advertisement",
    135: "neighbour-solicitation", 136: "neighbour-advertisement", 143: "MLDv2-report",
}
TCP_FLAGS = [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH")]


def describe_packet(packet: bytes) -> str:
    """One line saying what an IP packet is; never raises, whatever the bytes."""
    version = packet[0] >> 4 if packet else 0
    if version == 4:
        header_length = (packet[0] & 0x0F) * 4  # IHL: the header's length in 4-byte words
        if len(packet) < 20 or header_length < 20 or len(packet) < header_length:
            return "truncated IPv4 header"
        addresses = f"IPv4 {socket.inet_ntop(socket.AF_INET, packet[12:16])} -> " \
                    f"{socket.inet_ntop(socket.AF_INET, packet[16:20])}"
        if struct.unpack("!H", packet[6:8])[0] & 0x1FFF:  # a non-zero fragment offset: no transport header
            return f"{addresses}  fragment"
        return f"{addresses}  {describe_transport(packet[9], packet[header_length:])}"
    if version == 6:
        if len(packet) < 40:
            return "truncated IPv6 header"
        addresses = f"IPv6 {socket.inet_ntop(socket.AF_INET6, packet[8:24])} -> " \
                    f"{socket.inet_ntop(socket.AF_INET6, packet[24:40])}"
        return f"{addresses}  {describe_transport(packet[6], packet[40:])}"
    return "not an IP packet"


def describe_transport(protocol: int, segment: bytes) -> str:
    """The transport header: ICMP type with echo id and sequence, TCP ports and flags, UDP ports."""
    name = PROTOCOLS.get(protocol, f"protocol {protocol}")
    if protocol in (1, 58) and len(segment) >= 8:
        kind = (ICMP_TYPES if protocol == 1 else ICMPV6_TYPES).get(segment[0], f"type {segment[0]}")
        if kind.startswith("echo"):
            identifier, sequence = struct.unpack("!HH", segment[4:8])
            return f"{name} {kind} id={identifier} seq={sequence}"
        return f"{name} {kind}"
    if protocol == 6 and len(segment) >= 14:
        source_port, destination_port = struct.unpack("!HH", segment[:4])
        flags = ",".join(label for bit, label in TCP_FLAGS if segment[13] & bit)
        return f"TCP {source_port} -> {destination_port} [{flags}]"
    if protocol == 17 and len(segment) >= 8:
        source_port, destination_port = struct.unpack("!HH", segment[:4])
        return f"UDP {source_port} -> {destination_port}"
    if protocol in (1, 6, 17, 58):
        return f"{name}, truncated header"
    return name


def format_address(address: Address) -> str:
    """'192.0.2.1:5000' or '[2001:db8::1]:5000', showing an IPv4 sender on the IPv6 socket as IPv4."""
    host = address[0].removeprefix("::ffff:")
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def log_packet(counts: collections.Counter[str], direction: str, packet: memoryview,
               origin: Optional[Address] = None, error: Optional[OSError] = None) -> None:
    """For -d: count the packet for the exit summary, and print its line: direction, length,
    contents (TUN only), sender (if received), and why it was dropped (if it was)."""
    sent = direction.endswith("->net")  # otherwise it came from the network
    if error is not None:
        counts[f"{'send' if sent else 'write'} {errno.errorcode.get(error.errno or 0, '?')}"] += 1
    else:  # counting costs ~0.5 us a packet (two Counter updates), which is why only -d does it
        counts["packets out" if sent else "packets in"] += 1
        counts["bytes out" if sent else "bytes in"] += len(packet)
    line = f"{direction}  {len(packet):5} B"
    if "tun" in direction:  # stdin data is not IP: only TUN packets are decoded
        line += "  " + describe_packet(bytes(packet))
    if origin is not None:
        line += f"   (from {format_address(origin)})"
    if error is not None:
        line += f"   DROPPED: {error.strerror}"
    print(line, file=sys.stderr, flush=True)


def summary(counts: collections.Counter[str]) -> str:
    """Packets and bytes each way, and the errors by kind."""
    errors = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()) if kind.startswith(("send ", "write ")))
    return (f"tinyvpn: sent {counts['packets out']} packets ({counts['bytes out']} B), "
            f"received {counts['packets in']} packets ({counts['bytes in']} B), "
            f"errors: {errors or 'none'}")


# --- The command line --------------------------------------------------------


def interface_name(text: str) -> str:
    """argparse check: a name the kernel accepts, or 'stdio'."""
    if not 0 < len(text.encode()) < IFNAMSIZ:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 to {IFNAMSIZ - 1} bytes long")
    if text in (".", "..") or any(c in "/:" or c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} may not be '.' or '..', or contain '/', ':' or spaces")
    return text


def port_number(text: str) -> int:
    """argparse check: a UDP port from 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return int(text)


def parse_arguments(argv: Optional[list[str]]) -> argparse.Namespace:
    """The classic command line: tinyvpn [-d] INTERFACE PEER PORT; exits with status 2 on a mistake."""
    parser = argparse.ArgumentParser(
        prog="tinyvpn",
        description="A tiny point-to-point VPN: IP packets from a TUN interface, one per UDP datagram.",
        epilog="example, on two hosts (as root):\n"
               "  host A:  tinyvpn -d testvpn hostB 5000\n"
               "  host B:  tinyvpn -d testvpn hostA 5000\n"
               "then on each: ip link set testvpn up; ip address add ... (see README)\n\n"
               "WARNING: no encryption and no authentication. Anyone who can reach PORT can\n"
               "read the traffic and inject packets. For learning only; use WireGuard for real.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-d", action="store_true", help="print every packet sent and received, on stderr")
    parser.add_argument("--version", action="version", version=f"tinyvpn {__version__}")
    parser.add_argument("interface", metavar="INTERFACE", type=interface_name,
                        help="name of the TUN interface to create, or 'stdio' to relay stdin/stdout (no root)")
    parser.add_argument("peer", metavar="PEER", help="host name, IPv4 or IPv6 address to send to")
    parser.add_argument("port", metavar="PORT", type=port_number,
                        help="UDP port, bound here and sent to there (the same on both sides)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Set up the TUN (or stdio) and the socket, then relay until Ctrl-C or SIGTERM; exit status 0."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends us like Ctrl-C: cleanly
    args = parse_arguments(argv)
    counts: collections.Counter[str] = collections.Counter()
    try:
        tun = None if args.interface == "stdio" else open_tun(args.interface)
        sock = open_udp_socket(args.port)
        peer = resolve_peer(args.peer, args.port, sock.family)
        if tun is None:
            relay(sys.stdin.fileno(), sys.stdout.fileno(), sock, peer, counts, args.d, is_tun=False)
        else:
            relay(tun, tun, sock, peer, counts, args.d, is_tun=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the normal way to stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the goodbye short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except OSError as error:  # what is left: stdout closed, stdin not readable, ...
        fail(error.strerror or str(error))
    if args.d:
        print(summary(counts), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
