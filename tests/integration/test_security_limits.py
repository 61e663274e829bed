# SPDX-License-Identifier: MIT
"""
Admission and time limits: the per-source cap (per_source_max), the global
cap (max_connections), the handshake timeout (connect -> TLS done and first
request) and the idle timeout (between requests), on plaintext and TLS
listeners. Connections are held with the `hold` command (a worker stays
busy until the client leaves); the only timing assertions are liveness
bounds.
"""

import time

import pytest

from secfix import (BUSY, EXIT_CLIENT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, LIVE, Framed,
                    closed_without_data, connect, error_frame, framed_run, hello_frame, hold,
                    request_frame, second_source, wait_for)
from secfix import certs, rig  # noqa: F401  (fixtures)

needs_second_source = pytest.mark.skipif(not second_source(),
                                         reason="cannot bind a socket to 127.0.0.2")

POOL = dict(workers=6, min_spare=2, max_spare=8, max_workers=10)


def busy_answer(addr, source=None):
    """What a refused framed client reads: exactly one ERROR frame, then EOF."""
    c = Framed.open(addr, source)
    try:
        c.send(hello_frame() + request_frame(["mark"]))
        return error_frame(c.read_to_eof())
    finally:
        c.close()


# ---------------------------------------------------------------- caps

@needs_second_source
def test_per_source_cap(rig):
    """per_source_max = 2: a third concurrent connection from 127.0.0.1 gets
    ERROR BUSY and nothing runs, while 127.0.0.2 is served; once one of the
    two leaves, 127.0.0.1 is served again."""
    d = rig.daemon(per_source_max=2, **POOL)
    held = [rig.sock(hold(d.addr()).sock) for _ in range(2)]
    m = d.mark()
    code, msg = busy_answer(d.addr())
    assert (code, msg) == (BUSY, "too many connections from this address")
    d.wait_log(r"refused 127\.0\.0\.1: too many connections from this address", m)
    r = rig.client(d, ["mark"])
    assert r.returncode == EXIT_CLIENT and "busy" in r.stderr, r
    assert not rig.marker.exists()
    assert framed_run(d.addr(), ["echo", "other"], source="127.0.0.2")[::2] == \
        (b"other\n", ("exit", 0))
    held[0].close()
    d.wait_log(r'allow peer=127\.0\.0\.1:\d+ (?:identity=\S+ )?command=hold ', m)
    wait_for(lambda: d.status()["busy"] == 1, LIVE, "the released worker to be idle")
    r = rig.client(d, ["mark"])
    assert r.returncode == 0, r
    assert rig.marker.exists()


def test_per_source_cap_on_tls_listener(rig, certs):
    """On a TLS listener the refusal is a plain close (a TLS client could not
    read a plaintext frame): no bytes, nothing run."""
    d = rig.daemon(per_source_max=1, listen=["127.0.0.1:0 tls"],
                   **certs.server_keys(ca=False), **POOL)
    rig.sock(hold(d.addr(), tls=certs.ssl_context()).sock)
    m = d.mark()
    with connect(d.addr()) as s:
        s.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        closed_without_data(s)
    r = rig.client(d, ["mark"], ["--psk-file", str(certs.bob_psk)])
    assert r.returncode == EXIT_CLIENT and r.stdout == "", r
    assert not rig.marker.exists()
    d.assert_log_count(r"refused 127\.0\.0\.1: too many connections from this address", 2, m)


@needs_second_source
def test_global_cap(rig):
    """max_connections = 2 (per_source_max at its default): with one
    connection from each source held, a third from either gets ERROR BUSY."""
    d = rig.daemon(max_connections=2, **POOL)
    held = [rig.sock(hold(d.addr(), source=src).sock) for src in ("127.0.0.1", "127.0.0.2")]
    m = d.mark()
    for src in ("127.0.0.2", "127.0.0.1"):
        assert busy_answer(d.addr(), src) == (BUSY, "server busy"), src
        d.wait_log(rf"refused {src.replace('.', '[.]')}: server busy", m)
    r = rig.client(d, ["mark"])
    assert r.returncode == EXIT_CLIENT and "busy" in r.stderr, r
    assert not rig.marker.exists()
    held[1].close()
    d.wait_log(r'allow peer=127\.0\.0\.2:\d+ (?:identity=\S+ )?command=hold ', m)
    wait_for(lambda: d.status()["busy"] == 1, LIVE, "the released worker to be idle")
    assert framed_run(d.addr(), ["mark"], source="127.0.0.2")[2] == ("exit", 0)
    assert rig.marker.exists()


# ---------------------------------------------------------------- handshake timeout

def test_handshake_timeout_plaintext(rig):
    """handshake_timeout = 1s: a connection that sends nothing, or a HELLO
    but no REQUEST, or half a frame header, is closed (with ERROR
    HANDSHAKE_TIMEOUT once the client is known to be framed)."""
    d = rig.daemon(handshake_timeout="1s")
    silent = rig.sock(connect(d.addr()))
    hello_only = rig.sock(connect(d.addr()))
    hello_only.sendall(hello_frame())
    partial = rig.sock(connect(d.addr()))
    partial.sendall(hello_frame()[:3])
    start = time.monotonic()
    closed_without_data(silent, LIVE)
    c = Framed(hello_only)
    f = c.frame()
    assert f and f[0] == 0x81, f"no HELLO_OK: {f}"
    assert error_frame(c.read_to_eof())[0] == HANDSHAKE_TIMEOUT
    assert error_frame(Framed(partial).read_to_eof())[0] == HANDSHAKE_TIMEOUT
    assert time.monotonic() - start < LIVE
    d.wait_log(r"closing 127\.0\.0\.1:\d+: handshake timeout")
    assert framed_run(d.addr(), ["echo", "alive"])[0] == b"alive\n"


def test_handshake_timeout_tls(rig, certs):
    """On a TLS listener: no ClientHello at all, half a ClientHello, and a
    finished TLS handshake with no request after it are all closed."""
    d = rig.daemon(handshake_timeout="1s", listen=["127.0.0.1:0 tls"],
                   **certs.server_keys(ca=False))
    m = d.mark()
    silent = rig.sock(connect(d.addr()))
    half = rig.sock(connect(d.addr()))
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    tls_idle = rig.sock(certs.ssl_context().wrap_socket(connect(d.addr()),
                                                        server_hostname="127.0.0.1"))
    tls_hello = rig.sock(certs.ssl_context().wrap_socket(connect(d.addr()),
                                                         server_hostname="127.0.0.1"))
    tls_hello.sendall(hello_frame())
    closed_without_data(silent, LIVE)
    closed_without_data(half, LIVE)
    d.wait_log(r"closing 127\.0\.0\.1:\d+: no TLS handshake before handshake_timeout", m)
    assert Framed(tls_idle).read_to_eof() == b""
    c = Framed(tls_hello)
    f = c.frame()
    assert f and f[0] == 0x81, f"no HELLO_OK: {f}"
    assert error_frame(c.read_to_eof())[0] == HANDSHAKE_TIMEOUT
    assert framed_run(d.addr(), ["echo", "alive"], tls=certs.ssl_context())[0] == b"alive\n"


# ---------------------------------------------------------------- idle timeout

@pytest.mark.parametrize("transport", ["plaintext", "tls"])
def test_idle_timeout(rig, certs, transport):
    """idle_timeout = 1s: after HELLO and one request, a client that sends
    nothing more gets ERROR IDLE_TIMEOUT and the connection is closed."""
    tls = certs.ssl_context() if transport == "tls" else None
    listen = "127.0.0.1:0 tls" if tls else "127.0.0.1:0"
    d = rig.daemon(idle_timeout="1s", listen=[listen], **certs.server_keys(ca=False))
    m = d.mark()
    c = Framed.open(d.addr(), tls=tls)
    rig.sock(c.sock)
    c.hello()
    assert c.run(["echo", "one"]) == (b"one\n", b"", ("exit", 0))
    start = time.monotonic()
    code, _ = error_frame(c.read_to_eof(LIVE))
    assert code == IDLE_TIMEOUT
    assert time.monotonic() - start < LIVE
    d.wait_log(r"closing 127\.0\.0\.1:\d+: idle timeout", m)
