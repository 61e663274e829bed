# SPDX-License-Identifier: MIT
"""
TLS 1.3 on tcpexecd's listeners, end to end with the real daemon and the
real client: pre-shared keys, client certificates (identity from the CN or
the first SAN), every way a client certificate can be bad, plaintext and TLS
on the wrong kind of listener, server-certificate checks in the client (fail
closed), key files readable by others, and session resumption.

Certificates and keys are made with the openssl CLI when the tests run (see
secfix.Certs). A command that would create a marker file (`mark`) tells
whether anything ran.
"""

import os
import re
import socket
import stat

import pytest

from secfix import (AUTH_FAILED, EXIT, EXIT_CLIENT, EXIT_CONFIG, STDOUT, Framed, connect,
                    error_frame, framed_run, hello_frame, request_frame, write_private)
from secfix import certs, rig  # noqa: F401  (fixtures)

PEER = r"127\.0\.0\.1:\d+"


def tls_daemon(rig, certs, commands=None, **keys):
    server = dict(listen=["127.0.0.1:0 tls"], log_level="debug")
    server.update(certs.server_keys(**{k: keys.pop(k) for k in ("ca", "psk", "crl", "cert")
                                       if k in keys}))
    server.update(keys)
    return rig.daemon(commands, **server)


def assert_clean_failure(r, rig, what):
    """A client failure as the user should see it: exit 255, one `tcpexec:`
    message, no output, and nothing run on the server."""
    assert r.returncode == EXIT_CLIENT, \
        f"{what}: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}"
    assert r.stdout == "", f"{what}: output {r.stdout!r}"
    assert re.fullmatch(r"tcpexec: [^\n]+\n", r.stderr), f"{what}: stderr {r.stderr!r}"
    assert not rig.marker.exists(), f"{what}: the command ran"


def assert_ran(r, rig, what):
    assert r.returncode == 0, f"{what}: exit {r.returncode}, stderr {r.stderr!r}"
    assert rig.marker.exists(), f"{what}: the command did not run"
    rig.marker.unlink()


# ---------------------------------------------------------------- PSK

def test_psk_success(rig, certs):
    """A client with a pre-shared key runs a command; tls_ca is set, and a
    PSK client needs no certificate. Both key-file forms work."""
    d = tls_daemon(rig, certs)
    r = rig.client(d, ["mark"], ["--psk-file", str(certs.bob_psk)])
    assert_ran(r, rig, "identity:hexkey file")
    r = rig.client(d, ["mark"], ["--psk-file", str(certs.bob_bare), "--psk-identity", "bob"])
    assert_ran(r, rig, "bare key with --psk-identity")
    r = rig.client(d, ["echo", "over", "psk"], ["--psk-file", str(certs.bob_psk)])
    assert (r.returncode, r.stdout) == (0, "over psk\n"), r
    d.wait_log(rf'{PEER}: TLS .*identity "bob"')
    d.wait_log(rf'allow peer={PEER} (?:identity=\S+ )?command=echo .*status=exit:0')


def test_psk_wrong_key_and_unknown_identity_look_alike(rig, certs):
    """A wrong key and an unknown identity fail the same way for the client
    (no probing of which identities exist); only the server log tells which."""
    d = tls_daemon(rig, certs)
    m = d.mark()
    wrong = rig.client(d, ["mark"], ["--psk-file", str(certs.bob_wrong)])
    unknown = rig.client(d, ["mark"], ["--psk-file", str(certs.eve_psk)])
    assert_clean_failure(wrong, rig, "wrong key for bob")
    assert_clean_failure(unknown, rig, "unknown identity eve")
    assert wrong.stderr == unknown.stderr, \
        f"the client can tell the two apart:\n{wrong.stderr!r}\n{unknown.stderr!r}"
    d.wait_log(rf'closing {PEER}: TLS handshake failed: wrong key for PSK identity "bob"', m)
    d.wait_log(rf'closing {PEER}: TLS handshake failed: unknown PSK identity "eve"', m)
    d.assert_no_log(r"\ballow peer=", m)
    # Still serving, with the right key.
    assert_ran(rig.client(d, ["mark"], ["--psk-file", str(certs.bob_psk)]), rig, "bob")


# ---------------------------------------------------------------- certificates

def test_client_certificate_identity_from_cn(rig, certs):
    """alice's certificate has no SAN: her identity is the CN."""
    d = tls_daemon(rig, certs, {
        "for-alice": {"path": "/usr/bin/touch", "arg": str(rig.marker), "identity": "alice"},
        "for-bob": {"path": "/usr/bin/touch", "arg": str(rig.marker), "identity": "bob"},
    })
    opts = certs.cert_opts(certs.alice)
    assert_ran(rig.client(d, ["for-alice"], opts), rig, "alice, identity = alice")
    d.wait_log(rf'{PEER}: TLS full handshake, identity "alice"')
    r = rig.client(d, ["for-bob"], opts)
    assert_clean_failure(r, rig, "alice, identity = bob")
    assert "not allowed" in r.stderr, r.stderr


def test_client_certificate_identity_from_san(rig, certs):
    """carol's certificate says CN=carol-cn, SAN email:carol@example.org then
    DNS:carol.example.org: the first DNS/email SAN is the identity, the CN
    and later SANs are not."""
    touch = {"path": "/usr/bin/touch", "arg": str(rig.marker)}
    d = tls_daemon(rig, certs, {
        "by-san": dict(touch, identity="carol@example.org"),
        "by-cn": dict(touch, identity="carol-cn"),
        "by-second-san": dict(touch, identity="carol.example.org"),
    })
    opts = certs.cert_opts(certs.carol)
    assert_ran(rig.client(d, ["by-san"], opts), rig, "first SAN")
    d.wait_log(rf'{PEER}: TLS full handshake, identity "carol@example\.org"')
    for cmd in ("by-cn", "by-second-san"):
        r = rig.client(d, [cmd], opts)
        assert_clean_failure(r, rig, cmd)
        assert "not allowed" in r.stderr, r.stderr


BAD_CERTS = {
    # name: (certificate attribute or None for no certificate, server log reason)
    "expired": ("expired", r"client certificate: certificate has expired"),
    "revoked": ("revoked", r"client certificate: certificate revoked"),
    "untrusted": ("foreign", r"client certificate: unable to get local issuer certificate"),
    "server-only": ("unsuitable", r"client certificate: unsuitable certificate purpose"),
    "none": (None, r"peer did not return a certificate"),
}


@pytest.mark.parametrize("case", BAD_CERTS)
def test_bad_client_certificate_is_refused(rig, certs, case):
    """With tls_ca (and a CRL) set, a client certificate that is expired,
    revoked, from another CA, not for client use, or missing ends the
    connection before anything runs. A good certificate passes on the same
    daemon, so the refusal is about the certificate."""
    attr, reason = BAD_CERTS[case]
    d = tls_daemon(rig, certs, crl=True)
    m = d.mark()
    r = rig.client(d, ["mark"], certs.cert_opts(getattr(certs, attr) if attr else None))
    assert_clean_failure(r, rig, case)
    d.wait_log(rf"closing {PEER}: TLS handshake(?: failed)?: {reason}", m)
    d.assert_no_log(r"\ballow peer=", m)
    assert_ran(rig.client(d, ["mark"], certs.cert_opts(certs.alice)), rig, "alice (good)")


def test_client_explains_a_rejected_certificate(rig, certs):
    """When the server rejects our certificate (TLS 1.3 tells the client in
    an alert after its side of the handshake is done), the client's message
    should say so, not report a meaningless errno ("connection lost:
    Success")."""
    d = tls_daemon(rig, certs, crl=True)
    r = rig.client(d, ["mark"], certs.cert_opts(certs.expired))
    assert_clean_failure(r, rig, "expired")
    assert "Success" not in r.stderr, f"errno 0 reported as the reason: {r.stderr!r}"
    assert re.search(r"certificate|alert", r.stderr), r.stderr


# ---------------------------------------------------------------- wrong listener

def test_plaintext_client_on_tls_listener(rig, certs):
    d = tls_daemon(rig, certs)
    m = d.mark()
    r = rig.client(d, ["mark"])
    assert_clean_failure(r, rig, "plaintext client")
    assert "authentication failed" in r.stderr and "requires TLS" in r.stderr, r.stderr
    d.wait_log(rf"closing {PEER}: plaintext on a TLS listener", m)
    # The framed answer: ERROR AUTH_FAILED, then close.
    with connect(d.addr()) as s:
        s.sendall(hello_frame() + request_frame(["mark"]))
        c = Framed(s)
        code, msg = error_frame(c.read_to_eof())
    assert code == AUTH_FAILED and "requires TLS" in msg, (code, msg)
    # A line-mode client gets nothing run either.
    with connect(d.addr()) as s:
        s.sendall(b"mark\n")
        Framed(s).read_to_eof()
    assert not rig.marker.exists()
    d.assert_no_log(r"\ballow peer=", m)


def test_tls_client_on_plaintext_listener(rig, certs):
    d = rig.daemon(**certs.server_keys())          # plaintext listener, TLS configured
    m = d.mark()
    for opts in (certs.cert_opts(certs.alice), ["--psk-file", str(certs.bob_psk)]):
        r = rig.client(d, ["mark"], opts)
        assert_clean_failure(r, rig, f"TLS client {opts[:2]}")
    d.wait_log(rf"closing {PEER}: TLS on a plaintext listener", m)
    d.assert_no_log(r"\ballow peer=", m)
    assert_ran(rig.client(d, ["mark"]), rig, "plaintext client on the plaintext listener")


# ---------------------------------------------------------------- server certificate

def test_server_certificate_verified(rig, certs):
    """Control for the fail-closed cases below: the right server certificate
    is accepted by address and by name."""
    d = tls_daemon(rig, certs, psk=False)
    for host in ("127.0.0.1", "localhost"):
        assert_ran(rig.client(d, ["mark"], certs.cert_opts(certs.alice), host=host), rig, host)


def test_server_certificate_for_another_host_is_refused(rig, certs):
    d = tls_daemon(rig, certs, psk=False, cert=certs.wrong_host)
    m = d.mark()
    for host in ("127.0.0.1", "localhost"):
        r = rig.client(d, ["mark"], certs.cert_opts(certs.alice), host=host)
        assert_clean_failure(r, rig, f"wrong host, {host}")
        assert "server certificate" in r.stderr, r.stderr
    d.assert_no_log(r"\ballow peer=", m)


def test_server_certificate_from_unknown_ca_is_refused(rig, certs):
    """Without --ca the client trusts only the system CAs, which do not
    include our test CA: fail closed. So does a --ca of another authority."""
    d = tls_daemon(rig, certs, ca=False, psk=False)
    r = rig.client(d, ["mark"], ["--tls"])
    assert_clean_failure(r, rig, "--tls without --ca")
    assert "server certificate" in r.stderr, r.stderr
    r = rig.client(d, ["mark"], ["--ca", str(certs.other.ca)])
    assert_clean_failure(r, rig, "--ca of another CA")
    assert "server certificate" in r.stderr, r.stderr


# ---------------------------------------------------------------- key files

KEY_MODES = [("tls_key", 0o644), ("tls_key", 0o604), ("tls_key", 0o660),
             ("tls_psk_file", 0o644), ("tls_psk_file", 0o606)]


@pytest.mark.parametrize("key,mode", KEY_MODES, ids=[f"{k}-{m:04o}" for k, m in KEY_MODES])
def test_key_file_readable_by_others_is_refused(rig, certs, key, mode):
    keys = certs.server_keys()
    src = keys[key]
    copy = rig.dir / os.path.basename(src)
    write_private(copy, open(src).read(), mode)
    keys[key] = str(copy)
    d = rig.daemon(start=False, listen=["127.0.0.1:0 tls"], **keys)
    status, err = d.run_to_exit()
    assert status == EXIT_CONFIG, f"mode {mode:03o}: exit {status}\n{err}"
    assert "chmod 600" in err and str(copy) in err, err
    # The same file with mode 0600 is accepted.
    os.chmod(copy, 0o600)
    rig.daemon(listen=["127.0.0.1:0 tls"], **keys)


# ---------------------------------------------------------------- resumption

def test_session_resumption(rig, certs):
    """--session FILE keeps the ticket (private to the user); the next run
    resumes, and the resumed session keeps the certificate's identity."""
    d = tls_daemon(rig, certs, {
        "for-alice": {"path": "/usr/bin/touch", "arg": str(rig.marker), "identity": "alice"}})
    session = rig.dir / "alice.session"
    opts = certs.cert_opts(certs.alice) + ["--session", str(session)]
    m = d.mark()
    assert_ran(rig.client(d, ["for-alice"], opts), rig, "first run")
    d.wait_log(rf'{PEER}: TLS full handshake, identity "alice"', m)
    assert session.exists(), "no session file written"
    assert stat.S_IMODE(session.stat().st_mode) & 0o077 == 0, \
        f"session file mode {stat.S_IMODE(session.stat().st_mode):03o}"
    assert "SSL SESSION PARAMETERS" in session.read_text()
    m = d.mark()
    assert_ran(rig.client(d, ["for-alice"], opts), rig, "second run")
    d.wait_log(rf'{PEER}: TLS resumed, identity "alice"', m)


def test_anonymous_session_resumption(rig, certs):
    """A client with no certificate of its own (the server asks for none)
    resumes its ticket too, and stays without an identity: the ticket of an
    anonymous session carries an empty one (under UBSan, copying it once
    passed a null pointer to memcpy)."""
    d = tls_daemon(rig, certs, ca=False, psk=False)
    opts = certs.cert_opts() + ["--session", str(rig.dir / "anon.session")]
    m = d.mark()
    assert_ran(rig.client(d, ["mark"], opts), rig, "first run")
    d.wait_log(rf'{PEER}: TLS full handshake, identity ""', m)
    m = d.mark()
    assert_ran(rig.client(d, ["mark"], opts), rig, "second run")
    d.wait_log(rf'{PEER}: TLS resumed, identity ""', m)


def test_psk_session_resumption_keeps_identity(rig, certs):
    """A PSK client with --session: the second run resumes from the ticket
    and must still be bob, so a command restricted to bob keeps working."""
    d = tls_daemon(rig, certs, {
        "for-bob": {"path": "/usr/bin/touch", "arg": str(rig.marker), "identity": "bob"}})
    opts = ["--psk-file", str(certs.bob_psk), "--session", str(rig.dir / "bob.session")]
    assert_ran(rig.client(d, ["for-bob"], opts), rig, "first run")
    m = d.mark()
    r = rig.client(d, ["for-bob"], opts)
    assert r.returncode == 0, \
        f"resumed PSK session lost its identity: {r.stderr!r}\n" + "\n".join(d.log()[m:])
    assert_ran(r, rig, "second run")


def test_psk_handshake_not_logged_as_resumed(rig, certs):
    """A fresh PSK connection (no ticket, no --session) is a full handshake;
    the debug log must not call it a resumption."""
    d = tls_daemon(rig, certs)
    m = d.mark()
    assert_ran(rig.client(d, ["mark"], ["--psk-file", str(certs.bob_psk)]), rig, "bob")
    line = d.wait_log(rf'{PEER}: TLS \S+( handshake)?, identity "bob"', m)[0].group(0)
    assert "full handshake" in line, f"fresh PSK handshake logged as {line!r}"


# ---------------------------------------------------------------- LAST over TLS

def test_last_request_over_tls_closes_with_close_notify(rig, certs):
    """REQUEST flag LAST over TLS, no other connection waiting: the worker
    sends close_notify and its FIN right after EXIT, while the client still
    holds its socket, and then lets go of the connection. What follows EXIT
    on the wire is read raw: exactly one TLS 1.3 record of 19 bytes (an
    encrypted alert: 2 bytes, its type, a 16-byte tag), then EOF; a bare
    FIN, or no close at all, fails."""
    d = tls_daemon(rig, certs, ca=False, psk=False)
    for i in range(3):
        c = Framed.open(d.addr(), tls=certs.ssl_context())
        try:
            c.hello()
            c.send(request_frame(["echo", f"last{i}"], last=True))
            assert c.frame() == (STDOUT, f"last{i}\n".encode())
            assert c.frame()[0] == EXIT
            assert c.buf == b"", f"bytes after EXIT: {c.buf!r}"
            # OpenSSL reads record by record: the rest is still in the kernel.
            with socket.socket(fileno=os.dup(c.sock.fileno())) as raw:
                raw.settimeout(5)
                rest = b""
                for _ in range(100):
                    data = raw.recv(4096)
                    if not data:
                        break
                    rest += data
            assert rest[:5] == b"\x17\x03\x03\x00\x13" and len(rest) == 24, \
                f"not one close_notify then EOF after EXIT: {rest!r}"
        finally:
            c.close()
    assert framed_run(d.addr(), ["echo", "alive"], tls=certs.ssl_context())[0] == b"alive\n"
