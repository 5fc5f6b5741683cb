"""Part three's rung 13 (tests/ladder/part-three.md, "13. many peers") keeps its promise to
a learner, as parts one and two do (test_ladder_part_one.py, test_ladder_part_two_protocol.py):

- its reference solution is one patch, applied after 1 to 12;
- the file solved to rung 12 fails the check, for want of --config; the reference passes;
- plausible wrong solutions are caught, each with words that name the mistake, a crash first;
- the reference reads wg's configuration format, and says in one line which line it cannot
  use; without --config it still passes the tunnel tests (run on the solved file).

The check runs a hub (the learner's tinyvpn) and two wireguard-go spokes, and takes under 10 s;
the tests marked `ladder` take about a minute with `-n 2`.
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import part_three_routing as checker
import part_two_protocol
import pytest
import rungs
from conftest import SOLUTIONS, Solved, skip_or_fail
from reference_crypto import x25519
from rungs import changed_lines

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def wireguard(root: None) -> None:
    """Skip (fail in CI) unless wireguard-go and wg are installed."""
    lacking = part_two_protocol.missing()
    if lacking:
        skip_or_fail(f"needs {lacking}")


def test_part_three_begins_with_one_reference_solution_for_rung_13() -> None:
    thirteen = rungs.rung(13)
    assert SOLUTIONS[12] == thirteen.solution and thirteen.solution.name == "13-routing.patch"
    assert (thirteen.check, thirteen.reread()) == (checker.check_routing, checker.SECTION)
    # A config reader and routing: part two's WireGuard already holds a list of peers.
    assert changed_lines(SOLUTIONS[12]) <= 150


def run_solved(program: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(program), *arguments], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=10)


KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
GOOD = f"""\
[Interface]
PrivateKey = {KEY}
ListenPort = 5000

[Peer]
PublicKey = {KEY}
AllowedIPs = 198.51.100.64/26, 2001:db8:2:a::/64
"""


@pytest.mark.parametrize("change, words", [
    (("AllowedIPs = 198.51.100.64/26", "AllowedIPs = 198.51.100.64/33"),
     "line 7: '198.51.100.64/33' does not appear to be an IPv4 or IPv6 network"),
    ((f"PublicKey = {KEY}", "PublicKey = not-a-key"),
     "line 6: PublicKey is not a key in base64"),
    (("ListenPort = 5000", "ListenPort = 70000"),
     "line 3: '70000' is not a port number from 1 to 65535"),
    (("ListenPort = 5000", "Address = 198.51.100.1/24"),
     "line 3: 'Address = 198.51.100.1/24' is no setting tinyvpn knows there"),
    ((f"PublicKey = {KEY}\n", ""), "line 5: [Peer] has no PublicKey"),
    (("[Peer]", "[Peers]"), "line 5: '[Peers]' is no setting tinyvpn knows there"),
    ((f"PublicKey = {KEY}", "PublicKey = \xff"),  # written as Latin-1: a byte not UTF-8
     "line 6: PublicKey is not a key in base64"),
])
def test_a_file_tinyvpn_cannot_use_is_named_by_its_line(
        solved: Solved, tmp_path: Path, change: tuple, words: str) -> None:
    config = tmp_path / "hub.conf"
    config.write_text(GOOD.replace(*change), encoding="latin-1")
    result = run_solved(solved(13), "--config", str(config), "stdio")
    assert result.returncode == 1
    assert result.stderr.startswith(f"tinyvpn: {config}, {words}"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_config_takes_interface_alone(solved: Solved, tmp_path: Path) -> None:
    config = tmp_path / "hub.conf"
    config.write_text(GOOD)
    result = run_solved(solved(13), "--config", str(config), "--keepalive", "5", "stdio")
    assert result.returncode == 2
    assert "--config takes -d and INTERFACE alone" in result.stderr


def test_a_keepalive_for_a_peer_not_heard_yet_never_makes_the_hub_spin(solved: Solved) -> None:
    # A peer with PersistentKeepalive and no Endpoint: nowhere to send its keep-alive until it
    # speaks. The hub must still sleep until the next is due, not wake at once forever.
    spec = importlib.util.spec_from_file_location("solved13", solved(13))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    peer = {"publickey": x25519(os.urandom(32)), "allowedips": [],
            "persistentkeepalive": 25}
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:  # never bound: no traffic
        network = module.Network(sock, module.NOBODY, None)
        hub = module.WireGuard(network, os.urandom(32), None, None)
        hub.add(peer)
        sent: list = []
        hub.peers[0].network.send_one = sent.append
        assert hub.tick() > 20 and hub.tick() > 20
    assert sent == []  # nothing sent to nobody


@pytest.mark.ladder
def test_the_solved_file_still_passes_the_tunnel_tests_without_config(
        root: None, solved: Solved) -> None:
    # As test_ladder.py does for part one and two's solved files: about 20 s.
    environment = {**os.environ, "TINYVPN_PROGRAM": str(solved(13))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *(str(TESTS / name) for name in (
                              "test_tunnel.py", "test_interop.py", "test_stdio.py",
                              "test_command_line.py"))],
                         env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout.splitlines()[-1] and "skipped" not in run.stdout


@pytest.mark.ladder
def test_rung_13_fails_solution_12_and_passes_solution_13(
        wireguard: None, solved: Solved) -> None:
    twelve = rungs.check(13, solved(12))
    assert twelve is not None
    assert twelve.happened == "tinyvpn has no --config option yet: --help does not list it"
    assert rungs.check(13, solved(13)) is None


# The reference solution with one plausible mistake: (mistake, the text it replaces, what
# replaces it, words the checker's "what happened" must hold).
LOOKUP = "        held = [prefix for prefix in self.routes if address and address in prefix]\n"
WRONG = [
    ("a crash on a packet for no peer (named first)",
     "            if peer and peer.network.peer != NOBODY:",
     "            if peer.network.peer != NOBODY:",
     "the hub's tinyvpn died during the check (exit status 1); the last lines it printed on "
     "stderr:"),
    ("a prefix matched 8 bits short (a /24 as a /16)", LOOKUP,
     LOOKUP.replace("address in prefix", "address in prefix.supernet(8)"),
     "spoke a's ping to the hub (198.51.100.1) got no reply; the hub's last -d line for a "
     "datagram from it: "),
    ("a /26 matched as a /24 (the bits after the last whole byte ignored)", LOOKUP,
     LOOKUP.replace("address in prefix", "address in prefix.supernet(new_prefix=prefix."
                    "prefixlen // 8 * 8)"),
     "spoke c's ping to the hub (198.51.100.1) got no reply; the hub's last -d line for a "
     "datagram from it: "),
    ("the longest prefix not preferred (the first that holds it)",
     "return self.routes[max(held, key=lambda prefix: prefix.prefixlen)] if held else None",
     "return self.routes[held[0]] if held else None",
     "spoke a's ping to 198.51.100.100 (C's by its /32, inside A's 198.51.100.64/26) got no "
     "reply; the hub sent it back to spoke a"),
    ("the shortest prefix preferred",
     "max(held, key=lambda prefix: prefix.prefixlen)",
     "min(held, key=lambda prefix: prefix.prefixlen)",
     "spoke a's ping to 198.51.100.100 (C's by its /32, inside A's 198.51.100.64/26) got no "
     "reply; the hub sent it back to spoke a"),
    ("the source checked against any peer's AllowedIPs",
     "if source and self.lookup(source) is not peer:",
     "if source and self.lookup(source) is None:",
     "spoke a sent a ping from 198.51.100.150, an address in C's AllowedIPs, not A's; the hub "
     "wrote it to its TUN"),
    ("no source check", "if source and self.lookup(source) is not peer:", "if False:",
     "spoke a sent a ping from 198.51.100.150, an address in C's AllowedIPs, not A's; the hub "
     "wrote it to its TUN"),
    ("the source checked before decryption (the outer sender's address)",
     "            source = addresses(packet)[0] if packet else None  # a keep-alive has none\n",
     "            source = ipaddress.ip_address(sender[0].removeprefix(\"::ffff:\"))  # outer\n",
     "spoke a's ping to the hub (198.51.100.1) got no reply; the hub's last -d line for a "
     "datagram from it: "),
    ("no unreachable answer",
     "                os.write(self.local.write_fd, icmp_error(packet, HOST_UNREACHABLE,\n"
     "                                                         ADDRESS_UNREACHABLE) or b\"\")\n",
     "                pass\n",
     "spoke a's ping to 198.51.100.200, an address in no peer's AllowedIPs, got no answer at "
     "all, not 'Destination Host Unreachable'"),
    ("an ICMP port unreachable, not host unreachable",
     "HOST_UNREACHABLE = struct.pack(\"!BBHI\", 3, 1, 0, 0)",
     "HOST_UNREACHABLE = struct.pack(\"!BBHI\", 3, 3, 0, 0)",
     "got 'From 198.51.100.200 icmp_seq=1 Destination Port Unreachable', not 'Destination Host "
     "Unreachable'"),
    ("one endpoint for every peer",
     "own = Network(self.network.sock, endpoint, self.network.log)",
     "own = self.network  # one socket, one endpoint",
     "the hub's ping to spoke a (198.51.100.65) got no reply; it sent it to spoke c"),
    ("an unknown key taken as the first [Peer]'s",
     "        peer = next((peer for peer in self.peers if peer.peer == static), None)\n"
     "        if peer is None:\n"
     "            return \"initiation from the key of no peer of ours\"\n",
     "        peer = next((peer for peer in self.peers if peer.peer == static), self.peers[0])\n"
     "        peer.peer = static or peer.peer  # whoever it decrypts to\n"
     "        return peer.answer(message, sender, noise)\n",
     "mallory sent the hub an initiation from her own key, in no [Peer]; it answered her with a "
     "response (type 2) of 92 bytes"),
    ("a replayed initiation answered (its timestamp not compared)",
     "if stamp is None or stamp <= self.stamp:", "if stamp is None:",
     "mallory sent the hub spoke a's latest initiation again, from her address (replayed); it "
     "answered her with a response (type 2) of 92 bytes"),
    ("a peer's new handshake clearing every peer's sessions",
     "        peer = next((peer for peer in self.peers if peer.peer == static), None)\n",
     "        peer = next((peer for peer in self.peers if peer.peer == static), None)\n"
     "        if peer and peer.current:  # it starts afresh: its old sessions go (and others')\n"
     "            for other in self.peers:\n"
     "                other.sessions.clear()\n",
     "while spoke a restarted, spoke c's pings to the hub"),
    # FILE: read as wg reads it, or refused by the line that shows the mistake.
    ("names read in one case only (no .lower())", "name.strip().lower(), value.strip()",
     "name.strip(), value.strip()",
     "tinyvpn -d --config hub.conf stdio refused a good hub.conf (# comments, names in any "
     "case, AllowedIPs on two lines, Endpoints by name and in brackets): exit status 1, on "
     "stderr: tinyvpn: hub.conf, line 1: '[Interface]' is no setting tinyvpn knows there"),
    ("a comment only at the start of a line", 'line.split("#", 1)[0].partition("=")',
     '("" if line.lstrip().startswith("#") else line).partition("=")',
     "tinyvpn -d --config hub.conf stdio refused a good hub.conf (# comments, names in any "
     "case, AllowedIPs on two lines, Endpoints by name and in brackets): exit status 1, on "
     "stderr: tinyvpn: hub.conf, line 6: PublicKey is not a key in base64"),
    ("an Endpoint split at its first ':' (an IPv6 address in brackets)",
     '(text.rpartition(":")[0].strip("[]"),\n                                          '
     'port_number(text.rpartition(":")[2]))',
     '(text.partition(":")[0].strip("[]"),\n                                          '
     'port_number(text.partition(":")[2]))',
     "tinyvpn -d --config hub.conf stdio refused a good hub.conf (# comments, names in any "
     "case, AllowedIPs on two lines, Endpoints by name and in brackets): exit status 1, on "
     "stderr: tinyvpn: hub.conf, line 15: "),
    ("an Endpoint's brackets kept", '(text.rpartition(":")[0].strip("[]"),',
     '(text.rpartition(":")[0],',
     "tinyvpn -d --config hub.conf stdio refused a good hub.conf (# comments, names in any "
     "case, AllowedIPs on two lines, Endpoints by name and in brackets): exit status 1, on "
     "stderr: tinyvpn: cannot resolve peer '[::1]'"),
    ("a second AllowedIPs line replacing the first, not added to it",
     'sections[-1][name] + read if name == "allowedips" else read', "read",
     "spoke a's ping to the hub (198.51.100.1) got no reply; the hub's last -d line for a "
     "datagram from it: "),
    ("lines counted from 0", "enumerate(lines, 1)", "enumerate(lines)",
     "tinyvpn --config hub.conf stdio, on a hub.conf with a prefix /33 on line 7 ('AllowedIPs "
     "= 198.51.100.64/33'), ended with exit status 1; on stderr: tinyvpn: hub.conf, line 6: "),
    ("the line after named", "enumerate(lines, 1)", "enumerate(lines, 2)",
     "tinyvpn --config hub.conf stdio, on a hub.conf with a prefix /33 on line 7 ('AllowedIPs "
     "= 198.51.100.64/33'), ended with exit status 1; on stderr: tinyvpn: hub.conf, line 8: "),
    ("a missing PublicKey named by the file's last line, not its section's header",
     "line {section['line']}:", "line {number}:",
     "tinyvpn --config hub.conf stdio, on a hub.conf with a [Peer] with no PublicKey on line 12 "
     "('# its PublicKey forgotten'), ended with exit status 1; on stderr: tinyvpn: hub.conf, "
     "line 15: [Peer] has no PublicKey"),
    ("a [Peer] with no PublicKey let through (a crash, later)",
     "if key.lower() not in section:", "if False:",
     "tinyvpn --config hub.conf stdio died reading a hub.conf with a [Peer] with no PublicKey "
     "on line 12 ('# its PublicKey forgotten') (exit status 1); the last lines it printed on "
     "stderr:"),
    ("a traceback on a setting of no section",
     "except LookupError:  # no section above it, or not a setting of this one",
     "except IndexError:  # no section above it",
     "tinyvpn --config hub.conf stdio died reading a hub.conf with wg-quick's Address (no "
     "setting of wg's) on line 2 ('Address = 198.51.100.1/24') (exit status 1); the last lines "
     "it printed on stderr:"),
    ("a setting of no section ignored",
     "        except LookupError:  # no section above it, or not a setting of this one\n"
     "            fail(f\"{path}, line {number}: {line.strip()!r} is no setting tinyvpn knows "
     "there\")\n",
     "        except LookupError:  # not a setting of wg's: ignored\n"
     "            continue\n",
     "tinyvpn --config hub.conf stdio, on a hub.conf with wg-quick's Address (no setting of "
     "wg's) on line 2 ('Address = 198.51.100.1/24'), still ran after "),
    ("a key's length not checked",
     '("[interface]", "privatekey"): lambda text: wireguard_key(text.encode(), "PrivateKey")',
     '("[interface]", "privatekey"): lambda text: base64.b64decode(text)',
     "tinyvpn --config hub.conf stdio, on a hub.conf with a PrivateKey of 31 bytes on line 3 "
     "('PrivateKey = "),
    ("a ListenPort out of range taken (a crash at bind)",
     "lambda text: port_number(text)", "lambda text: int(text)",
     "tinyvpn --config hub.conf stdio died reading a hub.conf with a ListenPort out of range on "
     "line 4 ('ListenPort = 70000') (exit status 1); the last lines it printed on stderr:"),
    ("PEER taken with --config", "if alone and (args.peer or args.key",
     "if alone and (args.key",
     "tinyvpn --config hub.conf stdio 127.0.0.1 5000 (a good hub.conf) still ran after "),
    ("--keepalive taken with --config", "args.peer_key or args.keepalive):", "args.peer_key):",
     "tinyvpn --config hub.conf --keepalive 5 stdio (a good hub.conf) still ran after "),
]


@pytest.mark.ladder
@pytest.mark.parametrize("mistake, text, wrong, words", WRONG,
                         ids=[mistake for mistake, *_ in WRONG])
def test_a_plausible_wrong_solution_is_caught(wireguard: None, solved: Solved, tmp_path: Path,
                                             mistake: str, text: str, wrong: str,
                                             words: str) -> None:
    solution = solved(13).read_text()
    assert solution.count(text) == 1, "the mistake no longer fits solution 13"
    program = tmp_path / "tinyvpn.py"
    program.write_text(solution.replace(text, wrong))
    failure = rungs.check(13, program)
    assert failure is not None, f"{mistake}: passed rung 13"
    assert words in failure.happened, failure.happened
    assert (failure.section or checker.SECTION) == checker.SECTION
