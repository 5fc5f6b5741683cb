"""Real traffic through a tunnel between test hosts a and b (see netns.py): ping, a TCP transfer
checked by hash, and bursts of UDP datagrams of chosen sizes. Each helper returns what arrived,
so that a test can assert on the bytes that crossed."""

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Optional

from netns import TUNNEL, Hosts, is_listening, output, run, start, udp_port_bound, wait_for


def ping(hosts: Hosts, address: str, count: int = 3, side: str = "a") -> str:
    """Ping `address` from `side`; fails the test if any echo is lost. Returns ping's output."""
    result = run(hosts, side, "ping", "-c", str(count), "-i", "0.2", "-W", "2", address,
                 check=False)
    assert f"{count} packets transmitted, {count} received" in result.stdout, \
        result.stdout + result.stderr
    return result.stdout


TCP_SINK = """
import hashlib, socket, sys
with socket.create_server((sys.argv[1], 7000)) as server:
    connection, _ = server.accept()
    digest, size = hashlib.sha256(), 0
    chunk = connection.recv(65536)
    while chunk:
        digest.update(chunk)
        size += len(chunk)
        chunk = connection.recv(65536)
    print(size, digest.hexdigest())
"""

TCP_SOURCE = """
import hashlib, os, socket, sys, time
data = os.urandom(int(sys.argv[2]))
started = time.monotonic()
with socket.create_connection((sys.argv[1], 7000), timeout=30) as connection:
    connection.sendall(data)
    connection.shutdown(socket.SHUT_WR)
    connection.recv(1)  # returns when the sink has read everything and closed
print(len(data), hashlib.sha256(data).hexdigest(), time.monotonic() - started)
"""


def tcp_transfer(hosts: Hosts, size: int, source: str = "a", sink: str = "b") -> tuple:
    """Send `size` random bytes over TCP from `source` to `sink`'s tunnel address.
    Returns ((size, sha256) sent, (size, sha256) received, seconds)."""
    target = TUNNEL[sink][0]
    receiver = start(hosts, sink, sys.executable, "-c", TCP_SINK, target, name=f"sink-{sink}")
    wait_for(lambda: is_listening(hosts, sink, 7000), "the TCP sink to listen")
    sent = run(hosts, source, sys.executable, "-c", TCP_SOURCE, target, str(size)).stdout.split()
    assert receiver.wait(30) == 0
    received = output(hosts, f"sink-{sink}", "out").split()
    print(f"{size} bytes {source} -> {sink} in {float(sent[2]):.2f} s: "
          f"{size * 8 / float(sent[2]) / 1e6:.0f} Mbit/s")
    return tuple(sent[:2]), tuple(received), float(sent[2])


UDP_RECEIVER = """
import json, socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
    receiver.bind((sys.argv[1], 7001))
    receiver.settimeout(3)
    got = []
    try:
        while len(got) < int(sys.argv[2]):
            data = receiver.recv(65535)
            got.append([len(data), data[0], data == bytes([data[0]]) * len(data)])
    except socket.timeout:
        pass
    print(json.dumps(got))
"""

UDP_SENDER = """
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
    for i, size in enumerate(sys.argv[2:]):
        sender.sendto(bytes([i]) * int(size), (sys.argv[1], 7001))
"""


def udp_burst(hosts: Hosts, sizes: Sequence[int],
              paused: Optional[subprocess.Popen] = None) -> list:
    """Send datagrams of `sizes` bytes from a to b's tunnel address, datagram i filled with
    byte i. With `paused` (a's tinyvpn), it is stopped while they are sent, so that they wait
    in the TUN's queue and leave in one wake-up: one batch. Returns what b's receiver got, in
    order of arrival: [length, first byte, whether every byte equals the first], one per
    datagram."""
    target = TUNNEL["b"][0]
    receiver = start(hosts, "b", sys.executable, "-c", UDP_RECEIVER, target, str(len(sizes)),
                     name="receiver")
    wait_for(lambda: udp_port_bound(receiver.pid, 7001), "the UDP receiver to bind")
    if paused:
        paused.send_signal(signal.SIGSTOP)
    try:
        run(hosts, "a", sys.executable, "-c", UDP_SENDER, target, *map(str, sizes))
    finally:
        if paused:
            paused.send_signal(signal.SIGCONT)
    assert receiver.wait(10) == 0
    return list(json.loads(output(hosts, "receiver", "out")))
