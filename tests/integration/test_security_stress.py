# SPDX-License-Identifier: MIT
"""
Hostile load at the network level, against the real daemon on loopback:

- slow clients (slowloris): 500 connections from 127.0.0.1 that never send
  a byte must not keep another source (127.0.0.2) from being served;
- garbage: 200 connections of random bytes (and of truncated or corrupted
  framed and TLS openings) to a plaintext and a TLS listener; afterwards the
  daemon still serves, no worker crashed, and no surviving worker holds more
  descriptors or noticeably more memory than before.

Bounded everywhere: connection counts, thread counts, waits. The only timing
assertions are generous liveness bounds.
"""

import errno
import os
import random
import resource
import select
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from secfix import (LIVE, connect, fd_count, framed_run, hello_frame, raise_nofile,
                    second_source, anon_rss_kib, wait_for)
from secfix import certs, rig  # noqa: F401  (fixtures)

needs_second_source = pytest.mark.skipif(not second_source(),
                                         reason="cannot bind a socket to 127.0.0.2")

CRASH = r"worker \d+ (killed by signal|exited with status [1-9])|worker \d+ hung"


def open_silent(addr, n, timeout=LIVE):
    """n TCP connections to addr that send nothing. Non-blocking connects,
    then a bounded wait until each has completed (or failed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(addr[0], socket.SOCK_STREAM)
            socks.append(s)
            s.setblocking(False)
            err = s.connect_ex(addr[1])
            assert err in (0, errno.EINPROGRESS), f"connect: {os.strerror(err)}"
        pending = set(socks)
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            if not pending or time.monotonic() >= deadline:
                break
            _, w, _ = select.select([], list(pending)[:1000], [], 0.2)
            pending -= set(w)
        assert not pending, f"{len(pending)} of {n} connections did not complete"
        failed = [s for s in socks if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)]
        assert not failed, f"{len(failed)} of {n} connections failed"
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


SLOW_CASES = {
    # The configuration under test: 8 workers, per_source_max 16, default
    # max_startups (10:30:60).
    "defaults": dict(workers=8),
    # Diagnostics that separate the two ways the above can fail. A pool that
    # already holds per_source_max + min_spare workers, so the slow source
    # cannot occupy all of them while the master's spawn rate ramps up...
    "big-pool": dict(workers=24, max_spare=24),
    # ... and also a max_startups start above per_source_max, so that one
    # source's handshaking connections alone do not start the random early
    # drop for everyone. Here the per-source cap alone has to do the work.
    "big-pool-startups-above-cap": dict(workers=24, max_spare=24, max_startups="17:30:60"),
}


@needs_second_source
@pytest.mark.parametrize("case", SLOW_CASES)
def test_slow_clients_do_not_starve_other_sources(rig, case):
    """workers = 8, min_spare = 4, max_workers = 64, per_source_max = 16,
    handshake_timeout = 5s: while 500 silent connections from 127.0.0.1 are
    held, ten sequential requests from 127.0.0.2 are each served within
    3 s; afterwards 127.0.0.1 itself is served again."""
    n = 500
    old = raise_nofile(n + 256)
    keys = dict(workers=8, min_spare=4, max_spare=8, max_workers=64, per_source_max=16,
                handshake_timeout="5s")
    keys.update(SLOW_CASES[case])
    d = rig.daemon(**keys)
    m = d.mark()
    silent = []
    try:
        silent = open_silent(d.addr(), n)
        failures, took = [], []
        for i in range(10):
            start = time.monotonic()
            try:
                out, err, status = framed_run(d.addr(), ["echo", f"req{i}"],
                                              source="127.0.0.2", timeout=3.0)
                if (out, status) != (f"req{i}\n".encode(), ("exit", 0)):
                    failures.append(f"request {i}: {out!r} {status}")
            except (OSError, AssertionError) as e:
                failures.append(f"request {i}: {type(e).__name__}: {e}")
            took.append(round(time.monotonic() - start, 2))
            if took[-1] > 3.0 and not failures[-1:]:
                failures.append(f"request {i}: took {took[-1]} s")
        # The flood did reach the daemon and the per-source cap answered it.
        d.wait_log(r"refused 127\.0\.0\.1: too many connections from this address", m)
        why = {}
        for r in d.find_log(r"refused (\S+): (.*)", m):
            why[r.groups()] = why.get(r.groups(), 0) + 1
        assert not failures, \
            f"{len(failures)} of 10 requests from 127.0.0.2 failed while 127.0.0.1 held " \
            f"{n} silent connections:\n" + "\n".join(failures) + \
            f"\nseconds per request: {took}\nrefusals by (source, reason): {why}"
    finally:
        for s in silent:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (old, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    # After the flood: the attacking address itself is served again.
    r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(
        rig.client(d, ["echo", "after"])), LIVE, "127.0.0.1 to be served again")
    assert r.stdout == "after\n"
    assert not d.find_log(CRASH, m), d.log_text()


# ---------------------------------------------------------------- garbage

def client_hello(ctx):
    """The bytes of a real TLS 1.3 ClientHello from ctx."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    assert data[:1] == b"\x16", data[:16]
    return data


def garbage(rnd, hello):
    body = rnd.randbytes(rnd.randrange(1, 8192))
    kind = rnd.randrange(6)
    if kind == 0:
        return body                                  # anything (mostly line mode)
    if kind == 1:
        return b"\x01" + body                        # a framed client's nonsense
    if kind == 2:
        return hello_frame() + body                  # a valid HELLO, then nonsense
    if kind == 3:
        return b"\x16\x03\x01" + body                # a TLS record header, then nonsense
    if kind == 4:
        return hello[:rnd.randrange(1, len(hello))] + body   # truncated ClientHello
    return hello + body                              # ClientHello, then junk records


def send_garbage(addr, data, how):
    """One connection: send data, then close at once, half-close and read
    what comes, or read a little and close. Errors are the point here."""
    s = None
    try:
        s = connect(addr, timeout=5.0)
        s.sendall(data)
        if how == 1:
            s.shutdown(socket.SHUT_WR)
            s.settimeout(2.0)
            for _ in range(1000):
                if not s.recv(65536):
                    break
        elif how == 2:
            s.settimeout(0.3)
            s.recv(65536)
    except OSError:
        pass
    finally:
        if s is not None:
            s.close()


def worker_snapshot(d):
    snap = {}
    for pid in d.workers():
        try:
            snap[pid] = (fd_count(pid), anon_rss_kib(pid))
        except (FileNotFoundError, ProcessLookupError, AssertionError):
            pass
    return snap


def master_own_fds(d):
    """The master's descriptors less one pipe per worker (the pool may have
    grown or shrunk in between)."""
    for _ in range(50):
        n, ws = fd_count(d.proc.pid), d.workers()
        if d.workers() == ws and fd_count(d.proc.pid) == n:
            return n - len(ws)
        time.sleep(0.1)
    raise AssertionError("the pool did not settle")


def wait_idle(d):
    """No connection in progress (the control socket's count), twice in a row."""
    seen = []

    def idle():
        seen.append(d.status()["busy"] == 0)
        return seen[-2:] == [True, True]
    wait_for(idle, LIVE * 2, "all workers idle", interval=0.2)


def test_network_garbage(rig, certs):
    """200 connections (4 at a time) of random bytes and of corrupted framed
    and TLS openings, to a plaintext and a TLS listener. The daemon keeps
    serving, no worker crashes, and each worker that survived has exactly as
    many descriptors as before and less than 2 MiB more resident anonymous
    memory.
    The seed is printed in failures; SECURITY_GARBAGE_SEED replays one."""
    seed = int(os.environ.get("SECURITY_GARBAGE_SEED") or
               int.from_bytes(os.urandom(4), "big"))
    rnd = random.Random(seed)
    d = rig.daemon(listen=["127.0.0.1:0", "127.0.0.1:0 tls"], workers=4, min_spare=2,
                   max_spare=8, max_workers=16, handshake_timeout="3s",
                   **certs.server_keys())
    hello = client_hello(certs.ssl_context(certs.alice))
    psk = ["--psk-file", str(certs.bob_psk)]

    def serves():
        r1 = rig.client(d, ["echo", "plain"], i=0)
        r2 = rig.client(d, ["echo", "tls"], psk, i=1)
        r3 = rig.client(d, ["echo", "cert"], certs.cert_opts(certs.alice), i=1)
        assert (r1.returncode, r1.stdout) == (0, "plain\n"), r1
        assert (r2.returncode, r2.stdout) == (0, "tls\n"), r2
        assert (r3.returncode, r3.stdout) == (0, "cert\n"), r3

    def flood(count, parallel=4):
        jobs = [(d.addr(i % 2), garbage(rnd, hello), rnd.randrange(3)) for i in range(count)]
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda j: send_garbage(*j), jobs))

    # Warm-up, as large as the measured round: each worker's first TLS
    # handshakes and first large reads touch memory once (OpenSSL's lazy
    # setup, malloc's arenas, the static buffers); that is not a leak.
    for _ in range(3):
        serves()
    flood(200)
    wait_idle(d)
    m = d.mark()
    before = worker_snapshot(d)
    master_fds = master_own_fds(d)

    flood(200)
    wait_idle(d)
    after = worker_snapshot(d)

    assert not d.find_log(CRASH), f"seed {seed}:\n{d.log_text()}"
    assert d.running(), f"seed {seed}: the master exited\n{d.log_text()}"
    both = sorted(set(before) & set(after))
    assert len(both) >= 2, f"too few workers survived to compare: {before} {after}"
    fds = {p: (before[p][0], after[p][0]) for p in both if before[p][0] != after[p][0]}
    assert not fds, f"seed {seed}: descriptor counts changed (before, after): {fds}"
    # Under AddressSanitizer freed memory sits in a quarantine of up to
    # 256 MiB, so resident memory says nothing about leaks there; the
    # descriptor check above still holds.
    sanitized = os.environ.get("TCPEXECD_SANITIZE", "none") not in ("none", "")
    rss = {p: (before[p][1], after[p][1]) for p in both if after[p][1] - before[p][1] >= 2048}
    assert sanitized or not rss, \
        f"seed {seed}: anonymous memory grew by 2 MiB or more (KiB before, after): {rss}"
    assert master_own_fds(d) == master_fds, \
        "the master's descriptor count changed (beyond one pipe per worker)"
    # The connections reached the daemon and were handled.
    assert d.find_log(r"closing 127\.0\.0\.1:\d+: ", m), d.log_text()
    serves()
