# SPDX-License-Identifier: MIT
"""
Who may run what: identity-restricted [command] entries (PSK identity,
certificate identity, `unix:<user>` from SO_PEERCRED on a Unix listener),
network rules per listener (refused before any handshake) and per command
(longest prefix wins, deny wins ties), over IPv4 (sources 127.0.0.1 and
127.0.0.2) and IPv6 (::1).
"""

import os
import pwd
import re
import subprocess
import time

import pytest

from secfix import (EXIT_CLIENT, LIVE, NOT_ALLOWED, TCPEXEC, UNKNOWN_COMMAND, clean_env,
                    closed_without_data, connect, framed_run, ipv6_loopback, second_source)
from secfix import certs, rig  # noqa: F401  (fixtures)

needs_second_source = pytest.mark.skipif(not second_source(),
                                         reason="cannot bind a socket to 127.0.0.2")
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1)")


def echo_cmd(**rules):
    return dict({"path": "/bin/echo", "args": "any"}, **rules)


# ---------------------------------------------------------------- identities

def test_identity_restricted_command(rig, certs):
    """identity = bob: bob's PSK runs it; alice (certificate, or her own
    PSK) and unauthenticated plaintext clients are refused, nothing runs."""
    d = rig.daemon({"bob-only": {"path": "/usr/bin/touch", "arg": str(rig.marker),
                                 "identity": "bob"}},
                   listen=["127.0.0.1:0 tls", "127.0.0.1:0"], **certs.server_keys())
    m = d.mark()
    refused = {
        "alice's certificate": (certs.cert_opts(certs.alice), 0),
        "alice's PSK": (["--psk-file", str(certs.alice_psk)], 0),
        "plaintext": ([], 1),
    }
    for what, (opts, i) in refused.items():
        r = rig.client(d, ["bob-only"], opts, i=i)
        assert r.returncode == EXIT_CLIENT, f"{what}: {r}"
        assert "not allowed" in r.stderr, f"{what}: {r.stderr!r}"
        assert not rig.marker.exists(), f"{what}: the command ran"
    d.assert_log_count(r'deny peer=127\.0\.0\.1:\d+ (?:identity=\S+ )?command=bob-only ', 3, m)
    r = rig.client(d, ["bob-only"], ["--psk-file", str(certs.bob_psk)])
    assert r.returncode == 0, r
    assert rig.marker.exists(), "bob's command did not run"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (identity unix:root)")
def test_unix_socket_identity(rig):
    """On a Unix listener the identity is unix:<user> from SO_PEERCRED: root
    runs the root-only entry, not the nobody-only one; and, when the client
    can run as nobody, the other way round."""
    sock = rig.dir / "s"
    d = rig.daemon({
        "root-only": {"path": "/usr/bin/touch", "arg": str(rig.marker), "identity": "unix:root"},
        "nobody-only": {"path": "/bin/echo", "args": "any", "identity": "unix:nobody"},
    }, listen=[str(sock)])
    r = rig.client(d, ["root-only"])
    assert r.returncode == 0, r
    assert rig.marker.exists()
    rig.marker.unlink()
    r = rig.client(d, ["nobody-only", "x"])
    assert r.returncode == EXIT_CLIENT and "not allowed" in r.stderr, r
    d.wait_log(r'deny peer=\S+ (?:identity=\S+ )?command=nobody-only .*not allowed for this identity')

    # The same socket, with the client running as nobody.
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return
    os.chmod(rig.dir, 0o711)
    os.chmod(sock, 0o666)
    probe = subprocess.run([TCPEXEC, "-V"], capture_output=True, timeout=LIVE,
                           user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    if probe.returncode != 0:
        pytest.skip("nobody cannot run the tcpexec binary in this tree")

    def as_nobody(args):
        return subprocess.run([TCPEXEC, "-n", str(sock), *args], capture_output=True,
                              text=True, timeout=LIVE * 2, env=clean_env(),
                              user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    r = as_nobody(["nobody-only", "hi"])
    assert (r.returncode, r.stdout) == (0, "hi\n"), r
    r = as_nobody(["root-only"])
    assert r.returncode == EXIT_CLIENT and "not allowed" in r.stderr, r
    assert not rig.marker.exists()


# ---------------------------------------------------------------- listener rules

@needs_second_source
def test_listener_allow_rule(rig):
    """allow=127.0.0.2/32: a client from 127.0.0.1 is closed before anything
    is read or sent; one from 127.0.0.2 is served."""
    d = rig.daemon(listen=["127.0.0.1:0 allow=127.0.0.2/32"])
    m = d.mark()
    with connect(d.addr()) as s:
        s.sendall(b"mark\n")
        closed_without_data(s)
    d.wait_log(r"refused 127\.0\.0\.1: listener rules", m)
    r = rig.client(d, ["mark"])
    assert r.returncode == EXIT_CLIENT and r.stdout == "", r
    assert not rig.marker.exists()
    assert framed_run(d.addr(), ["mark"], source="127.0.0.2")[2] == ("exit", 0)
    assert rig.marker.exists()


@needs_second_source
@pytest.mark.parametrize("rules,served,refused", [
    ("allow=127.0.0.0/8 deny=127.0.0.2/32", "127.0.0.1", "127.0.0.2"),
    ("deny=127.0.0.0/8 allow=127.0.0.2/32", "127.0.0.2", "127.0.0.1"),
    ("deny=127.0.0.2", "127.0.0.1", "127.0.0.2"),
    ("allow=127.0.0.2/32 deny=127.0.0.2/32", None, "127.0.0.2"),
])
def test_listener_rules_longest_prefix(rig, rules, served, refused):
    d = rig.daemon(listen=[f"127.0.0.1:0 {rules}"])
    m = d.mark()
    with connect(d.addr(), source=refused) as s:
        s.sendall(b"mark\n")
        closed_without_data(s)
    d.wait_log(rf"refused {re.escape(refused)}: listener rules", m)
    assert not rig.marker.exists()
    if served:
        assert framed_run(d.addr(), ["echo", "in"], source=served)[:3] == \
            (b"in\n", b"", ("exit", 0))


@needs_second_source
def test_listener_rules_on_tls_listener(rig, certs):
    """The rules apply before the TLS handshake: a refused client gets no
    ServerHello, just a close."""
    d = rig.daemon(listen=["127.0.0.1:0 tls allow=127.0.0.2/32"],
                   **certs.server_keys(ca=False))
    m = d.mark()
    r = rig.client(d, ["mark"], ["--psk-file", str(certs.bob_psk)])
    assert r.returncode == EXIT_CLIENT and r.stdout == "", r
    assert not rig.marker.exists()
    with connect(d.addr()) as s:
        # A ClientHello record header and a little more: no answer at all.
        s.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        closed_without_data(s)
    d.assert_log_count(r"refused 127\.0\.0\.1: listener rules", 2, m)
    tls = certs.ssl_context()
    assert framed_run(d.addr(), ["mark"], source="127.0.0.2", tls=tls)[2] == ("exit", 0)
    assert rig.marker.exists()


# ---------------------------------------------------------------- command rules

@needs_second_source
def test_command_rules_longest_prefix(rig):
    """[command] allow/deny: longest prefix wins, deny wins a tie, and with
    allow rules an address that matches none is refused."""
    d = rig.daemon({
        "deny-one": echo_cmd(allow="127.0.0.0/8", deny="127.0.0.2/32"),
        "allow-one": echo_cmd(allow="127.0.0.2/32", deny="127.0.0.0/8"),
        "tie": echo_cmd(allow="127.0.0.2/32", deny="127.0.0.2/32"),
        "allow-only": echo_cmd(allow="127.0.0.2/32"),
        "deny-only": echo_cmd(deny="127.0.0.2"),
        "two-lists": echo_cmd(allow="10.0.0.0/8,127.0.0.1/32", deny="127.0.0.0/24"),
    })
    expect = {
        ("deny-one", "127.0.0.1"): True, ("deny-one", "127.0.0.2"): False,
        ("allow-one", "127.0.0.1"): False, ("allow-one", "127.0.0.2"): True,
        ("tie", "127.0.0.1"): False, ("tie", "127.0.0.2"): False,
        ("allow-only", "127.0.0.1"): False, ("allow-only", "127.0.0.2"): True,
        ("deny-only", "127.0.0.1"): True, ("deny-only", "127.0.0.2"): False,
        ("two-lists", "127.0.0.1"): True, ("two-lists", "127.0.0.2"): False,
    }
    m = d.mark()
    for (cmd, src), allowed in expect.items():
        out, err, status = framed_run(d.addr(), [cmd, "ok"], source=src)
        if allowed:
            assert (out, status) == (b"ok\n", ("exit", 0)), f"{cmd} from {src}: {status}"
        else:
            assert out == b"" and status[:2] == ("error", NOT_ALLOWED), \
                f"{cmd} from {src}: {out!r} {status}"
            assert "not allowed from this address" in status[2], status
            d.wait_log(rf'deny peer={re.escape(src)}:\d+ (?:identity=\S+ )?command={cmd} .*'
                       r'reason=\S+ is not allowed from this address', m)
    d.assert_log_count(r"\bdeny peer=", sum(not a for a in expect.values()), m)


@needs_ipv6
def test_ipv6_rules(rig):
    """On [::1] listeners: an IPv6 allow rule admits ::1, an IPv6 deny rule
    refuses it, and an IPv4-only allow list does not match an IPv6 peer (at
    the listener or at the command)."""
    d = rig.daemon({"v6": echo_cmd(allow="::1/128"),
                    "v4": echo_cmd(allow="127.0.0.0/8"),
                    "v6-deny": echo_cmd(allow="::/0", deny="::1")},
                   listen=["[::1]:0 allow=::1/128", "[::1]:0 deny=::1/128",
                           "[::1]:0 allow=127.0.0.0/8"])
    m = d.mark()
    for i in (1, 2):
        with connect(d.addr(i)) as s:
            s.sendall(b"mark\n")
            closed_without_data(s)
    d.assert_log_count(r"refused ::1: listener rules", 2, m)
    assert not rig.marker.exists()
    assert framed_run(d.addr(0), ["v6", "six"])[::2] == (b"six\n", ("exit", 0))
    for cmd in ("v4", "v6-deny"):
        out, _, status = framed_run(d.addr(0), [cmd, "x"])
        assert out == b"" and status[:2] == ("error", NOT_ALLOWED), (cmd, status)
    d.wait_log(r'deny peer=::1:\d+ (?:identity=\S+ )?command=v4 ', m)
    # The real client over IPv6, by address.
    r = rig.client(d, ["v6", "client"], host="::1")
    assert (r.returncode, r.stdout) == (0, "client\n"), r


def test_ipv4_mapped_peer_matches_ipv4_rules():
    pytest.skip("not reachable here: the daemon sets IPV6_V6ONLY on its IPv6 listeners, and "
                "binding [::] would need insecure = yes (non-loopback), so no peer can "
                "arrive as ::ffff:127.0.0.1 on loopback; addr_cidr_match() on mapped "
                "addresses belongs in the unit tests (tests/unit)")


# ---------------------------------------------------------------- hostile names

def test_hostile_command_name_cannot_forge_or_corrupt_the_log(rig):
    """A client-chosen command name with a newline, a terminal escape and
    bytes that are not UTF-8: the deny record stays one line, every field of
    it escaped (the `reason` too), and the ERROR text stays UTF-8 as the
    protocol requires (docs/protocol.md 7.3)."""
    d = rig.daemon()
    m = d.mark()
    name = b'nope\nFORGED allow peer=10.0.0.1:1 command="mark"\r\x1b[2J\xff\xfe\x85'
    out, _, status = framed_run(d.addr(), [name])
    assert out == b"" and status[:2] == ("error", UNKNOWN_COMMAND), status
    assert not rig.marker.exists()
    d.wait_log(r'deny peer=127\.0\.0\.1:\d+ (?:identity=\S+ )?command=', m)
    time.sleep(0.3)
    lines = d.log()[m:]
    assert all(line.startswith("tcpexecd[") for line in lines), \
        "a client byte started a log line of its own:\n" + "\n".join(lines)
    problems = []
    if "\ufffd" in status[2]:
        problems.append(f"ERROR text is not UTF-8: {status[2]!r}")
    bad = [line for line in lines if "\ufffd" in line or "\x1b" in line or "\r" in line]
    if bad:
        problems.append("raw client bytes in the log: " + "; ".join(map(repr, bad)))
    forged = [line for line in lines if 'command="mark"' in line]
    if forged:
        problems.append("an unescaped quote lets the name forge a field: " +
                        "; ".join(map(repr, forged)))
    assert not problems, "\n".join(problems)
