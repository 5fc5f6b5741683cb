#!/usr/bin/env python3
"""tinyvpn: a tiny point-to-point VPN for Linux, written to be read (Python 3.9 or later).

A TUN interface is a network interface whose wire is a program: each IP packet the kernel sends out
of it, the program gets whole from one os.read(), and each packet the program writes arrives as if
from a wire. The command is tinyvpn [-d] INTERFACE PEER PORT: the TUN to create (or "stdio": stdin
and stdout, no root, like netcat), the other host's real address, and the UDP port both use. As
root on hosts A (real address 192.0.2.1) and B (192.0.2.2), addresses kept for examples (RFC 5737):

    A# tinyvpn testvpn 192.0.2.2 5000 & sleep 1   # sleep: time for it to create testvpn
    A# ip link set testvpn up && ip address add 198.51.100.1/30 dev testvpn   # A's tunnel end
    B# tinyvpn testvpn 192.0.2.1 5000 & sleep 1
    B# ip link set testvpn up && ip address add 198.51.100.2/30 dev testvpn   # B's

Each address adds a route: 198.51.100.0-3 (/30: 30 bits fixed, 2 bits free) go into testvpn. So a
ping to 198.51.100.2 goes into A's TUN; tinyvpn reads it and sends it, whole, in one UDP datagram
to 192.0.2.2, which leaves by A's real link (not in the /30, so it never loops into the TUN). B's
tinyvpn writes it into B's TUN; B's kernel answers it, and the answer comes back the same way:

    [IPv4 192.0.2.1 -> 192.0.2.2 | UDP 5000 -> 5000 | IPv4 198.51.100.1 -> .2 | ICMP echo request]
     added by A's kernel, removed by B's kernel     | the packet A's TUN gave, unchanged

The whole idea is one loop. A descriptor is the number the kernel gives a program for an open file
or socket; select() sleeps until one of those it is given can be read, and returns those:

    while True:
        ready, _, _ = select.select([tun, sock], [], [])  # to read; none to write, none urgent
        if tun in ready:  sock.sendto(os.read(tun, 65535), peer)  # one packet -> one datagram
        if sock in ready: os.write(tun, sock.recv(65535))         # one datagram -> one packet

One ping, in the file's order: main() sets up both ends and runs relay(), the loop. On A,
Local.read() reads the ping from the TUN, and Network.send() sends it (send_one(): one sendto()).
On B, Network.receive() gets it, and Local.write() writes it to B's TUN. With -d, A prints the
first line below (84 B: 20 IP header, 8 ICMP, 56 data), and B the second (one line, wrapped here
to fit); the reply (an echo-reply, .2 to .1) makes the same two lines the other way, B's then A's:

    tun->net     84 B  IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request id=7 seq=1
    net->tun     84 B  IPv4 198.51.100.1 -> 198.51.100.2  ICMP echo-request id=7 seq=1
        ... (from 192.0.2.1:5000)

After the set-up come topics a ping never meets: Going fast (bursts), Too big, stdio mode, and -d.

There is NO encryption and NO authentication: anyone who can reach the port can read the
traffic and inject packets. It is teaching material; use WireGuard for anything real.
"""

import argparse
import errno
import fcntl
import os
import platform
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, NoReturn, Optional

__version__ = "1.1.0"

# IP's length field is 16 bits: 65,535 at most. IPv4's counts its own 20-byte header; IPv6's
# leaves its 40-byte header out. A link's MTU is the longest packet it carries; a TUN's is 1500
# bytes unless set otherwise, and 65,535 at most.
MAX_PACKET = 65535
# So a UDP payload is at most 65,535 - 20 - 8 (UDP's header) over IPv4, 65,535 - 8 over IPv6.
UDP_PAYLOAD_IPV4, UDP_PAYLOAD_IPV6 = MAX_PACKET - 20 - 8, MAX_PACKET - 8  # 65,507 and 65,527 B
BATCH = 64  # the most reads one wake-up makes each way, so a flood one way never starves the other
Address = tuple[Any, ...]  # a socket address: (host, port), or (host, port, flow, scope) for IPv6
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58  # IP protocol numbers (IANA): the header's "what follows"


# --- main, and the loop it runs -----------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    """Set up both ends, relay until Ctrl-C or SIGTERM, return 0. fail() exits at once, with 1."""
    wakeup = stop_on_signals()  # so Ctrl-C stops even an idle tunnel: see "Setting up"
    args = parse_arguments(argv)
    stdio = args.interface == "stdio"  # stdin and stdout instead of a TUN: see "stdio mode"
    log = Log(stdio) if args.d else None  # -d: a line for every packet, on stderr
    try:
        tun = None if stdio else open_tun(args.interface)
        sock = open_udp_socket(args.port)
        peer = resolve_peer(args.peer, args.port, sock.family)
        largest = largest_payload(peer)  # a longer packet fits in no datagram: see "Too big"
        local = Local(tun, largest, log) if tun is not None else Stdio(largest, log)
        network = Network(sock, peer, log)
        relay(local, network, wakeup)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see stop_on_signals()): the normal stop
        for stop in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut -d's summary
            signal.signal(stop, signal.SIG_IGN)
    except OSError as error:  # what the ends cannot ride out: the TUN deleted, stdout closed
        if error.errno == errno.EBADFD and not stdio:  # "bad state": a read of a deleted TUN
            fail(f"interface {args.interface} was deleted (ip link delete?), so the tunnel ends")
        fail(error.strerror or str(error))
    if log:
        log.goodbye()  # -d's totals
    return 0


def relay(local: "Local", network: "Network", wakeup: int) -> None:
    """The VPN itself: wait until either end has something, move it across, repeat forever.
    A signal puts a byte in `wakeup`, so select() wakes; its handler raises KeyboardInterrupt."""
    # select() takes descriptors (wakeup) or objects with fileno(); it returns the ready ones.
    while True:
        ready, _, _ = select.select([local, network, wakeup], [], [])  # sleeps till one's ready
        if local in ready:
            network.send(local.read())  # the packets waiting -> a datagram each, to the peer
        if network in ready:
            for packet, sender in network.receive():  # each datagram, from anyone -> one packet
                local.write(packet, sender)


# --- The local end: the TUN interface ------------------------------------------------------

class Local:
    """This host's end of the tunnel: a TUN interface (Stdio, under "stdio mode", is one too)."""

    def __init__(self, tun: int, largest: int, log: Optional["Log"]) -> None:
        self.read_fd = self.write_fd = tun  # one descriptor, read and written (Stdio: two)
        self.largest, self.log = largest, log  # the most one datagram carries; -d's Log or None

    def fileno(self) -> int:  # what select() watches
        return self.read_fd

    def read(self) -> list[memoryview]:
        """The packets waiting in the TUN (BATCH at most), as memoryviews: our one packet type."""
        packets: list[memoryview] = []
        for _ in range(BATCH):  # BATCH reads at most, counting packets dropped as too big
            try:
                packet = memoryview(os.read(self.read_fd, MAX_PACKET))  # one read, one packet
            except BlockingIOError:  # the TUN is empty (open_tun() made reads not wait)
                break  # (a deleted TUN raises EBADFD instead, and main() says so)
            if self.log:  # -d prints its line now; Network counts it when it is sent
                self.log.outgoing(packet)
            if len(packet) > self.largest:  # too long for any datagram: see "Too big"
                answer_too_big(self, packet)
            else:
                packets.append(packet)
        return packets

    def write(self, packet: memoryview, sender: Address) -> None:
        """Hand one packet, from `sender`, to the kernel; if it is refused, drop it, go on."""
        try:
            os.write(self.write_fd, packet)  # one write, one whole packet
            dropped = ""
        except OSError as error:  # the kernel refused the packet (not IP, interface down)
            dropped = refused("write", error)  # for -d, 'write EIO (...)': see "What -d prints"
        if self.log:  # -d: the packet's line, as it arrived from `sender`, and if it was dropped
            self.log.received(packet, sender, dropped)


# --- The network end: one UDP socket, and the peer's address -------------------------------

class Network:
    """The UDP socket: each packet goes to the peer as one datagram. Datagrams come from anyone:
    nothing checks `sender` (-d prints it); a VPN that authenticates would, in receive()."""

    def __init__(self, sock: socket.socket, peer: Address, log: Optional["Log"]) -> None:
        self.sock, self.peer, self.log = sock, peer, log
        self.buffer = memoryview(bytearray(MAX_PACKET))  # receive() reads into it
        # If the kernel can, bursts take fewer system calls: Glue's sends (GSO), receive()'s (GRO).
        self.glue = Glue(self) if enable_batching(sock) else None

    def fileno(self) -> int:  # what select() watches
        return self.sock.fileno()

    def send(self, packets: list[memoryview]) -> None:
        """Send each packet to the peer as one datagram, in order."""
        if self.glue and len(packets) > 1:  # a burst: Glue, the same datagrams in fewer calls
            self.glue.send(packets)
            return
        for packet in packets:  # a lone packet, like a ping: one sendto()
            self.send_one(packet)

    def send_one(self, packet: memoryview) -> None:
        """Send one packet as one datagram; if that fails, drop it and go on. (A datagram longer
        than a link's MTU crosses it in pieces, IP fragments, that the peer's kernel joins.)"""
        try:
            self.sock.sendto(packet, self.peer)
        except OSError as error:  # no route yet, a firewall, ...: drop it, keep the tunnel
            if self.log:
                self.log.not_sent(packet, refused("send", error))
            return
        if self.log:
            self.log.sent(packet)

    def receive(self) -> Iterator[tuple[memoryview, Address]]:
        """The datagrams waiting (BATCH at most), with senders. Each is a view of our one buffer,
        which the next datagram overwrites; so receive() is a generator: it reads the next only
        when relay() has written this one. (A list of views would hold the last one many times.)"""
        for _ in range(BATCH):
            try:  # recv() into our buffer, with room for a "control message" (GRO's, if any)
                length, control, flags, sender = self.sock.recvmsg_into(
                    [self.buffer], GRO_SPACE, socket.MSG_DONTWAIT)  # don't wait: none left
            except BlockingIOError:  # none queued
                return
            if flags & socket.MSG_TRUNC:  # cut short (can't be: the buffer fits any): drop it
                if self.log:
                    self.log.received(self.buffer[:length], sender, "truncated (MSG_TRUNC)")
            elif control:  # only GRO adds one, when it glued datagrams (see "Going fast")
                yield from unglue(self.buffer[:length], control, sender)
            else:  # one datagram, like a ping's
                yield self.buffer[:length], sender


# --- Setting up: the signals, the TUN, the socket, the peer ---------------------------------

def stop_on_signals() -> int:
    """Make Ctrl-C (SIGINT) and SIGTERM end relay(), even an idle one; return `wakeup`, a pipe.
    Python runs a signal's handler (ours raise KeyboardInterrupt) between bytecodes, or at once if
    the signal interrupts select(). A signal just before select() would wait for select() to end:
    forever, on an idle tunnel. So a signal also puts a byte in this pipe, and select() wakes."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # raise KeyboardInterrupt, as ^C
    readable, written = os.pipe()  # never read: its first byte wakes select(), and we stop
    os.set_blocking(written, False)  # so a full pipe drops a byte instead of blocking us
    signal.set_wakeup_fd(written)
    return readable


IFF_TUN = 0x0001  # a layer-3 device: we read and write bare IP packets (IFF_TAP: Ethernet frames)
IFF_NO_PI = 0x1000  # no 4-byte "packet information" prefix: a read or write is the packet alone
IFNAMSIZ = 16  # an interface name is 16 bytes including its final NUL: 15 characters at most


def open_tun(name: str) -> int:
    """Create TUN interface `name` (or attach to a persistent one); return its descriptor."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)  # an empty read raises, not waits
        # /dev/net/tun opens blank. ioctl() sends a device its own commands: TUNSETIFF ("set
        # interface", a number computed in "Details of open_tun()", below) makes it `name`.
        # An interface we create lives as long as the descriptor; one made by ip tuntap stays.
        fcntl.ioctl(fd, TUNSETIFF, make_ifreq(name))
    except OSError as error:
        fail(tun_error(name, error))  # one line saying what to do: see "Details of open_tun()"
    return fd


# struct.pack() lays values out as C does. "!": network byte order (big-endian), as on the wire;
# "=" or none: this machine's (the kernel's structs). B, H, I: 1, 2, 4 bytes; 16s: 16; x: a zero.
def make_ifreq(name: str) -> bytes:
    """struct ifreq (40 bytes) for TUNSETIFF: 16 of NUL-padded name, 2 of flags, 22 unused."""
    return struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)  # no "!": native order


# How many bytes of datagrams we ask the kernel to queue for us (more are dropped). It grants at
# most sysctl net.core.rmem_max (often 208 KiB; it may be raised), doubled for its bookkeeping.
RECEIVE_BUFFER = 4 * 1024 * 1024


def open_udp_socket(port: int) -> socket.socket:
    """Bind one UDP socket to `port` on every local address, IPv4 and IPv6. Unlike the TUN, it
    blocks, so that sendto() waits for room; receive() alone asks not to wait (MSG_DONTWAIT)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        # Dual stack: IPv4 arrives too (as ::ffff:a.b.c.d), whatever net.ipv6.bindv6only says.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except OSError:  # this kernel has no IPv6: IPv4 only
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    everywhere = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    try:
        sock.bind((everywhere, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(f"UDP port {port} is already in use: stop the program using it or choose "
                 "another PORT")
        if error.errno == errno.EACCES:
            fail(f"UDP port {port} is below 1024 and needs root: choose a PORT from 1024 to 65535")
        fail(f"cannot bind UDP port {port}: {error.strerror}")
    return sock


def resolve_peer(peer: str, port: int, family: int) -> Address:
    """Look up `peer` once, and return the address every datagram will be sent to."""
    wanted = socket.AF_INET if family == socket.AF_INET else socket.AF_UNSPEC  # IPv6: any
    try:
        found = socket.getaddrinfo(peer, port, wanted, socket.SOCK_DGRAM)
    except socket.gaierror as error:
        fail(f"cannot resolve peer {peer!r}: {error.strerror}")
    peer_family, _, _, _, address = found[0]  # the first: the one the system prefers
    if family == socket.AF_INET6 and peer_family == socket.AF_INET:
        return (f"::ffff:{address[0]}", port, 0, 0)  # how an IPv6 socket spells an IPv4 address
    return address


def largest_payload(peer: Address) -> int:
    """The most bytes one UDP datagram to `peer` can carry."""
    ipv4 = len(peer) == 2 or peer[0].startswith("::ffff:")  # IPv4, maybe on an IPv6 socket
    return UDP_PAYLOAD_IPV4 if ipv4 else UDP_PAYLOAD_IPV6


def fail(message: str) -> NoReturn:
    """Stop with a one-line error on stderr and exit status 1."""
    sys.exit(f"tinyvpn: {message}")


# --- Details of open_tun(): the ioctl's request code, and why a TUN cannot be created -----

def ioctl_write_request(letter: str, number: int, size: int) -> int:
    """Linux's _IOW(letter, number, size): a request code that passes `size` bytes in."""
    # The code is 4 fields ORed (|): a "write" direction flag, size << 16, letter << 8, number.
    # Most CPUs put "write" at bit 30; MIPS, PowerPC, SPARC, Alpha and PA-RISC at bit 31.
    bit_31 = platform.machine().startswith(("mips", "ppc", "powerpc", "sparc", "alpha", "parisc"))
    write_flag = 0x80000000 if bit_31 else 0x40000000
    return write_flag | size << 16 | ord(letter) << 8 | number


# linux/if_tun.h: TUNSETIFF is _IOW('T', 202, int), 0x400454ca on x86 and ARM. It passes a
# struct ifreq, not an int: a slip in the header, kept since the kernel ignores that size.
TUNSETIFF = ioctl_write_request("T", 202, struct.calcsize("i"))


def tun_error(name: str, error: OSError) -> str:
    """Why open_tun() could not make interface `name`, and what to do about it."""
    no_permission = ("not allowed to create a TUN interface: run as root (or with CAP_NET_ADMIN), "
                     f"or first create one owned by your user: ip tuntap add dev {name} mode tun "
                     "user $USER")
    return {
        errno.ENOENT: "/dev/net/tun is missing: run 'modprobe tun'; in a container, pass the "
                      "device (docker run --device /dev/net/tun --cap-add NET_ADMIN ...)",
        errno.EPERM: no_permission, errno.EACCES: no_permission,
        errno.EBUSY: f"interface {name} is busy: another program has it open; stop it, or "
                     "choose another INTERFACE name",
        errno.EINVAL: f"cannot create TUN interface {name}: an interface of another type (veth, "
                      "TAP, ...) has that name; choose another INTERFACE name",  # not a TUN
    }.get(error.errno or 0, f"cannot create TUN interface {name}: {error.strerror}")


# --- Going fast: batching ------------------------------------------------------------------
# A ping takes the path above; a burst, on Linux 5.0 and later, goes this way instead. In Python a
# system call costs microseconds, whatever its size, and Linux passes many datagrams in one:
# - Sending (GSO, Generic Segmentation Offload): Glue passes a run of packets and their size to
#   one sendmsg(), and the kernel cuts it into datagrams of that size (runs: equal_size_runs()).
# - Receiving (GRO, Generic Receive Offload): one recvmsg() may return several datagrams of
#   one size from one sender, glued, and a control message with their size; unglue() cuts.
# The wire is the same: one datagram per packet, as if each had been sent alone.

UDP_SEGMENT = 103  # linux/udp.h (Python has no name for it): "cut into datagrams of N bytes"
UDP_GRO = 104  # linux/udp.h: a socket option, and the control message that gives N on receive
GRO_SPACE = socket.CMSG_SPACE(struct.calcsize("i"))  # room for it: its header, an int, padding
GSO_MAX_SEGMENTS = 64  # datagrams per sendmsg(): every kernel takes 64 (newer ones take 128)
# A lone datagram over the path MTU (the least MTU on the way) leaves as IP fragments, but the
# kernel will not fragment a glued run: it refuses it (EINVAL or EIO on some kernels and cards):
GLUED_REFUSED = (errno.EMSGSIZE, errno.EINVAL, errno.EIO)
RETRY_GLUED = 1.0  # seconds; then they are glued again, in case the path MTU grew


def enable_batching(sock: socket.socket) -> bool:
    """Turn GRO on for `sock`, and return True, if this kernel can batch (Linux 5.0 or later)."""
    try:
        sock.getsockopt(socket.SOL_UDP, UDP_SEGMENT)  # ENOPROTOOPT where GSO is unknown
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


def unglue(glued: memoryview, control: list[tuple[int, int, bytes]],
           sender: Address) -> Iterator[tuple[memoryview, Address]]:
    """Cut what GRO glued back into datagrams of one size (the last maybe shorter), one sender."""
    # control[0] is (level, type, data): the size, a C int in this machine's order (udp.h).
    size = struct.unpack("=i", control[0][2])[0]
    for start in range(0, len(glued), size):
        yield glued[start:start + size], sender


class Glue:
    """How Network sends a burst (GSO). A run the kernel refuses goes again one at a time."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.refused_size, self.retry_at = MAX_PACKET + 1, 0.0  # no run that long: none held back

    def send(self, packets: list[memoryview]) -> None:
        """Send each packet to the peer as one datagram, in order, gluing runs where we can."""
        for run in equal_size_runs(packets):
            if len(run) == 1 or not self.send_run(run):
                for packet in run:
                    self.network.send_one(packet)

    def send_run(self, run: list[memoryview]) -> bool:
        """Send `run` with one sendmsg(); False if it was not sent (nothing of it was)."""
        size = len(run[0])
        if size >= self.refused_size and time.monotonic() < self.retry_at:
            return False  # this size was refused just now, so any longer one would be too
        try:
            # The kernel cuts what the buffers hold, in order, into `size`-byte datagrams. It
            # takes the size as a __u16 in this machine's order (__udp_cmsg_send, net/ipv4/udp.c).
            control = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
            self.network.sock.sendmsg(run, control, 0, self.network.peer)
        except OSError as error:  # refused whole
            if error.errno in GLUED_REFUSED:
                self.refused_size, self.retry_at = size, time.monotonic() + RETRY_GLUED
            return False
        if self.network.log:
            self.network.log.sent(*run)
        return True


def equal_size_runs(packets: list[memoryview]) -> Iterator[list[memoryview]]:
    """Cut `packets`, in order, into runs for one sendmsg() each. The kernel cuts a run at its
    first packet's size, so only the last may be shorter: in 1400, 1400, 900, 1400, the 900 ends
    a run. We hand a run over as one big datagram: at most UDP_PAYLOAD_IPV4 (the lower limit)."""
    run: list[memoryview] = []
    size = total = 0  # the size of the run's first packet, and the run's bytes so far
    for packet in packets:
        still_open = bool(run) and len(run[-1]) == size  # no shorter packet has ended it yet
        room = len(run) < GSO_MAX_SEGMENTS and total + len(packet) <= UDP_PAYLOAD_IPV4
        joins = still_open and room and len(packet) <= size  # no longer than the run's first
        if not joins:  # this packet starts the next run
            if run:
                yield run
            run, size, total = [], len(packet), 0
        run.append(packet)
        total += len(packet)
    if run:
        yield run


# --- Too big for one datagram: path MTU discovery ------------------------------------------
# This happens only if the TUN's MTU is raised from 1500 (up to 65,535): then a packet read from
# it may be longer than any datagram can carry (UDP_PAYLOAD_IPV4, _IPV6). A router that cannot
# forward a packet drops it and tells its sender, in ICMP, what size fits; the sender's kernel
# remembers that size for the path for 10 minutes (sysctl mtu_expires), and its TCP sends less.
# tinyvpn answers as such a router would. It has no address of its own, so its answer comes from
# the packet's destination; the sender's kernel matches the answer by the packet it quotes: the
# packet's start, up to 576 B in all for IPv4 (RFC 1812 4.3.2.3), 1280 B for IPv6 (RFC 4443 2.4).
# (A router would fragment an IPv4 packet without DF, "don't fragment"; tinyvpn answers them all.)
ICMP_QUOTE, ICMPV6_QUOTE = 548, 1232  # + 8 (ICMP) + 20 (IPv4) = 576; + 8 + 40 (IPv6) = 1280


def answer_too_big(local: Local, packet: memoryview) -> None:
    """Drop `packet`, too big for one datagram, and tell its sender, in ICMP, what size fits."""
    # IPv4 "fragmentation needed" (RFC 1191): type 3, code 4, checksum 0, 0 unused, the size.
    # IPv6 "packet too big" (RFC 4443 3.2): type 2, code 0, checksum 0, the size in 4 bytes.
    answer = icmp_error(packet, struct.pack("!BBHHH", 3, 4, 0, 0, local.largest),
                        struct.pack("!BBHI", 2, 0, 0, local.largest))  # it picks by version
    if answer:  # into the TUN, as if a router had sent it (lost if the TUN is down)
        with suppress(OSError):
            os.write(local.write_fd, answer)
    if local.log:
        local.log.not_sent(packet, f"over {local.largest} B: answered 'too big'")


def icmp_error(packet: memoryview, icmpv4: bytes, icmpv6: bytes) -> Optional[bytes]:
    """An ICMP error about `packet`, to its sender, in an IP packet; None if `packet` is not IP.
    `icmpv4` or `icmpv6` is its 8-byte header. An IP header opens with its version in 4 bits;
    source and destination are bytes 12-15 and 16-19 of IPv4's 20, 8-23 and 24-39 of IPv6's 40."""
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        answer_from, answer_to = bytes(packet[16:20]), bytes(packet[12:16])
        message = icmpv4 + packet[:ICMP_QUOTE]
        return ip_packet(4, answer_from, answer_to, with_checksum(message))
    if version == 6 and len(packet) >= 40:
        answer_from, answer_to = bytes(packet[24:40]), bytes(packet[8:24])
        message = icmpv6 + packet[:ICMPV6_QUOTE]
        # ICMPv6's checksum, unlike ICMPv4's, also covers a "pseudo-header" (RFC 8200 8.1): both
        # addresses, then the length and the protocol, each in 32 bits (so 3 zero bytes, then 58).
        pseudo_header = answer_from + answer_to + struct.pack("!II", len(message), ICMPV6)
        return ip_packet(6, answer_from, answer_to, with_checksum(message, pseudo_header))
    return None


def ip_packet(version: int, source: bytes, destination: bytes, message: bytes) -> bytes:
    """An IP packet holding `message` (ICMP), from `source` to `destination`: TTL 64."""
    if version == 4:  # 0x45: version 4, header 5 words of 4 bytes; type of service 0, length,
        # identification 0, flags and fragment offset 0, TTL, protocol, checksum 0 (summed below)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(message), 0, 0, 64, ICMP, 0,
                             source, destination)
        return with_checksum(header, checksum_at=10) + message
    # IPv6 has no header checksum. Version 6 in 4 bits, 28 zero bits; length, protocol, hops
    return struct.pack("!IHBB16s16s", 6 << 28, len(message), ICMPV6, 64, source,
                       destination) + message


def with_checksum(data: bytes, pseudo_header: bytes = b"", checksum_at: int = 2) -> bytes:
    """`data` with its Internet checksum (RFC 1071) in its 2 zero bytes at `checksum_at`: the
    ones' complement of the ones' complement sum of its 16-bit words and the pseudo-header's."""
    summed = pseudo_header + data + b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(summed) // 2}H", summed))
    while total > 0xFFFF:  # ones' complement addition: each carry out of 16 bits is added back
        total = (total & 0xFFFF) + (total >> 16)
    return data[:checksum_at] + struct.pack("!H", ~total & 0xFFFF) + data[checksum_at + 2:]


# --- stdio mode: stdin and stdout instead of a TUN -----------------------------------------

class Stdio(Local):
    """The local end in stdio mode: a read of stdin is one datagram; a datagram goes to stdout."""

    def __init__(self, largest: int, log: Optional["Log"]) -> None:
        for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout)):
            if stream is None:  # started with <&- or >&-: Python has no stream for it
                fail(f"stdio mode needs {name}, but it is closed")
        super().__init__(sys.stdin.fileno(), largest, log)
        self.write_fd = sys.stdout.fileno()

    def read(self) -> list[memoryview]:
        """One read of stdin, as one packet: stdin is blocking, so one read per wake-up."""
        chunk = memoryview(os.read(self.read_fd, UDP_PAYLOAD_IPV4))  # fits either: never too big
        if not chunk:  # stdin ended; like netcat, go on receiving. So that select() stops waking
            # for it (an ended stdin is always readable), fileno() gives a pipe we never write.
            self.read_fd, self.never_written = os.pipe()  # kept open, or the pipe would end too
        elif self.log:
            self.log.outgoing(chunk)
        return [chunk] if chunk else []

    def write(self, packet: memoryview, sender: Address) -> None:
        """Write one datagram to stdout, whole: stdout, unlike a TUN, may take it in pieces."""
        written = 0
        while written < len(packet):  # if stdout's reader has gone, main() stops on the error
            written += os.write(self.write_fd, packet[written:])
        if self.log:
            self.log.received(packet, sender)


# --- The command line ----------------------------------------------------------------------

def interface_name(text: str) -> str:
    """argparse check: a name the kernel accepts, or 'stdio'."""
    if not 0 < len(text.encode()) < IFNAMSIZ:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 to {IFNAMSIZ - 1} bytes long")
    if text in (".", "..") or any(c in "/:" or c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} may not be '.' or '..', or contain '/', ':' or spaces")
    return text


def port_number(text: str) -> int:
    """argparse check: a UDP port from 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return int(text)


def parse_arguments(argv: Optional[list[str]]) -> argparse.Namespace:
    """The classic command line: tinyvpn [-d] INTERFACE PEER PORT; a mistake exits with 2."""
    parser = argparse.ArgumentParser(
        prog="tinyvpn",
        description="A tiny point-to-point VPN: IP packets from a TUN, one per UDP datagram.",
        epilog="example, on two hosts (as root):\n"
               "  host A:  tinyvpn -d testvpn hostB 5000\n"
               "  host B:  tinyvpn -d testvpn hostA 5000\n"
               "then on A:  ip link set testvpn up; ip address add 198.51.100.1/30 dev testvpn\n"
               "and on B:   ip link set testvpn up; ip address add 198.51.100.2/30 dev testvpn\n\n"
               "WARNING: no encryption and no authentication. Anyone who can reach PORT can\n"
               "read the traffic and inject packets. For learning only; use WireGuard for real.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", action="store_true",
                        help="print every packet sent and received, on stderr")
    parser.add_argument("--version", action="version", version=f"tinyvpn {__version__}")
    parser.add_argument("interface", metavar="INTERFACE", type=interface_name,
                        help="name of the TUN interface to create, or 'stdio' to relay "
                             "stdin/stdout (no root)")
    parser.add_argument("peer", metavar="PEER", help="host name, IPv4 or IPv6 address to send to")
    parser.add_argument("port", metavar="PORT", type=port_number,
                        help="UDP port, bound here and sent to there (the same on both sides)")
    return parser.parse_args(argv)


# --- What -d prints ------------------------------------------------------------------------

class Log:
    """-d: a line on stderr per packet, each way (two for one dropped on its way out); totals."""

    def __init__(self, stdio: bool) -> None:
        self.writing = sys.stderr is not None  # stderr closed (2>&- in a shell): nowhere to write
        self.decode = not stdio  # TUN packets are IP, and decoded; what stdin gives is not
        self.out, self.into = ("stdin->net", "net->stdout") if stdio else ("tun->net", "net->tun")
        self.sent_packets = self.sent_bytes = self.received_packets = self.received_bytes = 0
        self.dropped: dict[str, int] = {}  # reason -> count

    def outgoing(self, packet: memoryview) -> None:
        """A packet read from the local end, on its way to the peer."""
        self.show(self.out, packet, "", "")

    def sent(self, *packets: memoryview) -> None:
        """Packets the kernel took, to the peer: counted in the summary."""
        self.sent_packets += len(packets)
        self.sent_bytes += sum(len(packet) for packet in packets)

    def not_sent(self, packet: memoryview, dropped: str) -> None:
        """A packet the network end could not send after all: why it was dropped."""
        self.dropped[dropped] = self.dropped.get(dropped, 0) + 1
        self.show(self.out, packet, "", dropped)

    def received(self, packet: memoryview, sender: Address, dropped: str = "") -> None:
        """A datagram from `sender`: written to the local end, or dropped for the reason given."""
        self.received_packets += 1
        self.received_bytes += len(packet)
        if dropped:
            self.dropped[dropped] = self.dropped.get(dropped, 0) + 1
        self.show(self.into, packet, f"   (from {format_address(sender)})", dropped)

    def show(self, direction: str, packet: memoryview, origin: str, dropped: str) -> None:
        what = "  " + describe_packet(bytes(packet)) if self.decode else ""
        why = f"   DROPPED: {dropped}" if dropped else ""
        self.print_line(f"{direction}  {len(packet):5} B{what}{origin}{why}")

    def print_line(self, line: str) -> None:
        """Print `line` on stderr; if stderr fails, stop logging, and say so if it can."""
        if not self.writing:
            return
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError as error:
            with suppress(OSError):  # a full disk may let this line through; a broken pipe not
                print(f"tinyvpn: -d stops: stderr: {error.strerror}", file=sys.stderr, flush=True)
            self.stop_writing()

    def stop_writing(self) -> None:
        """Write no more: stderr becomes /dev/null, where Python's flush at exit cannot fail."""
        self.writing = False
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())

    def goodbye(self) -> None:
        """Print the summary; give up after 1 s: print() to a pipe nobody reads waits forever."""
        signal.signal(signal.SIGALRM, signal.default_int_handler)  # KeyboardInterrupt, as ^C
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        try:
            self.print_line(self.summary())
        except KeyboardInterrupt:  # 1 s passed, and the timer's SIGALRM raised this
            self.stop_writing()
        finally:  # the timer may still be running: its signal does nothing from now on
            signal.signal(signal.SIGALRM, signal.SIG_IGN)

    def summary(self) -> str:
        """Packets and bytes each way, and the packets dropped by reason."""
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(self.dropped.items()))
        return (f"tinyvpn: sent {self.sent_packets} packets ({self.sent_bytes} B), "
                f"received {self.received_packets} packets ({self.received_bytes} B), "
                f"dropped: {dropped or 'none'}")


def refused(what: str, error: OSError) -> str:
    """Why -d says the kernel refused a packet: 'write EIO (Input/output error)'."""
    return f"{what} {errno.errorcode.get(error.errno or 0, '?')} ({error.strerror})"


def format_address(address: Address) -> str:
    """'192.0.2.1:5000' or '[2001:db8::1]:5000'; an IPv4 sender on the IPv6 socket as IPv4."""
    host = address[0].removeprefix("::ffff:")
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


PROTOCOLS = {0: "hop-by-hop", ICMP: "ICMP", 2: "IGMP", TCP: "TCP", UDP: "UDP", ICMPV6: "ICMPv6"}
ICMP_TYPES = {0: "echo-reply", 3: "destination-unreachable", 8: "echo-request",
              11: "time-exceeded"}
ICMPV6_TYPES = {1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
                128: "echo-request", 129: "echo-reply", 133: "router-solicitation",
                134: "router-advertisement", 135: "neighbour-solicitation",
                136: "neighbour-advertisement"}
TCP_FLAGS = [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH")]


def describe_packet(packet: bytes) -> str:
    """One line saying what an IP packet is; never raises, whatever the bytes."""
    version = packet[0] >> 4 if packet else 0  # the first 4 bits of any IP header
    if version == 4:  # byte 0, low half: header length in 4-byte words; 6-7: fragment; 9: protocol
        header_length = (packet[0] & 0x0F) * 4
        if len(packet) < 20 or header_length < 20 or len(packet) < header_length:
            return "truncated IPv4 header"
        addresses = f"IPv4 {socket.inet_ntop(socket.AF_INET, packet[12:16])} -> " \
                    f"{socket.inet_ntop(socket.AF_INET, packet[16:20])}"
        if struct.unpack("!H", packet[6:8])[0] & 0x1FFF:  # a later fragment: no transport header
            return f"{addresses}  fragment"
        return f"{addresses}  {describe_transport(packet[9], packet[header_length:])}"
    if version == 6:  # IPv6: a fixed 40-byte header; byte 6 = next header (the protocol)
        if len(packet) < 40:
            return "truncated IPv6 header"
        addresses = f"IPv6 {socket.inet_ntop(socket.AF_INET6, packet[8:24])} -> " \
                    f"{socket.inet_ntop(socket.AF_INET6, packet[24:40])}"
        return f"{addresses}  {describe_transport(packet[6], packet[40:])}"
    return "not an IP packet"


def describe_transport(protocol: int, segment: bytes) -> str:
    """The transport header: ICMP type (id and sequence of echoes), TCP or UDP ports."""
    name = PROTOCOLS.get(protocol, f"protocol {protocol}")
    if protocol in (ICMP, ICMPV6) and len(segment) >= 8:
        # ICMP: byte 0 = type; in echoes, bytes 4-5 = identifier, 6-7 = sequence number.
        types, echoes = (ICMP_TYPES, (0, 8)) if protocol == ICMP else (ICMPV6_TYPES, (128, 129))
        kind = types.get(segment[0], f"type {segment[0]}")
        if segment[0] in echoes:  # a reply or request
            identifier, sequence = struct.unpack("!HH", segment[4:8])
            return f"{name} {kind} id={identifier} seq={sequence}"
        return f"{name} {kind}"
    if protocol == TCP and len(segment) >= 14:  # TCP: bytes 0-3 = ports, byte 13 = flags
        source_port, destination_port = struct.unpack("!HH", segment[:4])
        flags = ",".join(label for bit, label in TCP_FLAGS if segment[13] & bit)
        return f"TCP {source_port} -> {destination_port} [{flags}]"
    if protocol == UDP and len(segment) >= 8:  # UDP: bytes 0-3 = ports
        source_port, destination_port = struct.unpack("!HH", segment[:4])
        return f"UDP {source_port} -> {destination_port}"
    return f"{name}, truncated header" if protocol in (ICMP, TCP, UDP, ICMPV6) else name


if __name__ == "__main__":
    sys.exit(main())
