# SPDX-License-Identifier: MIT
"""
Resource limits: a worker out of file descriptors pauses its accepts instead
of spinning and serves the queued clients once it has descriptors again;
bursts of concurrent connects queue in the listen backlog (1024 by default).
"""

import os
import resource
import shutil
import subprocess
import threading
import time

import pytest

from conftest import CLK_TCK, Conn, alive, exchange, proc_stat, readable


def _serve_all(d, socks, expect_pid=None, timeout=20.0):
    """Finish every queued session concurrently; returns the failures."""
    failures = []
    lock = threading.Lock()

    def one(i, s):
        try:
            c = Conn(s, timeout)
            if expect_pid is not None:
                assert c.worker_pid == expect_pid, f"served by {c.worker_pid}"
            payload = b"queued %d" % i
            c.send(payload)
            rest = c.finish(timeout)
            assert rest == payload, f"echo {rest!r}"
        except (OSError, AssertionError) as e:
            with lock:
                failures.append(f"session {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i, s), daemon=True)
               for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    stuck = sum(t.is_alive() for t in threads)
    return failures + ([f"{stuck} sessions still running"] if stuck else [])


def _cpu_ticks(pid):
    st = proc_stat(pid)
    return st.utime + st.stime


def test_out_of_descriptors_pauses_accepts_without_spinning(start_daemon):
    # One worker and no spares: only that worker can serve.
    d = start_daemon({"workers": 1, "min_spare": 0, "max_spare": 1, "max_workers": 1})
    w = d.exchange()
    ident = d.worker_ident(w)
    fds = {int(n) for n in os.listdir(f"/proc/{w}/fd")}
    # The lowest free descriptor number: with the soft limit there, the next
    # accept() gets EMFILE even if the worker's descriptors have holes.
    limit = next(n for n in range(len(fds) + 1) if n not in fds)
    soft, hard = resource.prlimit(w, resource.RLIMIT_NOFILE)
    mark = d.log_mark()
    resource.prlimit(w, resource.RLIMIT_NOFILE, (limit, hard))
    try:
        socks = [d.open() for _ in range(20)]
        d.wait_log(r"accept: Too many open files; pausing accepts for 500 ms",
                   since=mark, timeout=5)
        cpu0, t0 = _cpu_ticks(w), time.monotonic()
        time.sleep(2.0)
        cpu1, t1 = _cpu_ticks(w), time.monotonic()
        assert alive(ident), "the worker died instead of pausing"
        used, elapsed = cpu1 - cpu0, (t1 - t0) * CLK_TCK
        assert used < 0.5 * elapsed, f"worker spins: {used} of {elapsed:.0f} CPU ticks"
        assert not readable(socks), "a client was served although the worker had no fd"
        pauses = d.find_log(r"accept: Too many open files; pausing accepts", since=mark)
        assert len(pauses) <= 12, f"{len(pauses)} pause lines in about 2.5 s"
    finally:
        if alive(ident):
            resource.prlimit(w, resource.RLIMIT_NOFILE, (soft, hard))
    failures = _serve_all(d, socks, expect_pid=w)
    assert failures == [], failures[:5]
    assert alive(ident)
    assert exchange(d.addr()) == w


def test_burst_of_concurrent_connects(start_daemon):
    d = start_daemon({"workers": 2, "min_spare": 1, "max_spare": 2})
    d.wait_workers(2)
    barrier = threading.Barrier(32, timeout=10)
    failures = []
    lock = threading.Lock()

    def client(i):
        try:
            barrier.wait()
            exchange(d.addr(), b"burst %d" % i, timeout=20)
        except (OSError, AssertionError, threading.BrokenBarrierError) as e:
            with lock:
                failures.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "clients still running"
    assert failures == [], failures[:5]


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")
@pytest.mark.parametrize("backlog", [None, 64])
def test_listen_backlog(start_daemon, backlog):
    keys = {"workers": 1, "min_spare": 0, "max_spare": 1}
    if backlog is not None:
        keys["backlog"] = backlog
    d = start_daemon(keys)
    r = subprocess.run(["ss", "-ltnH", f"sport = :{d.port()}"], capture_output=True,
                       text=True, timeout=10)
    rows = [line.split() for line in r.stdout.splitlines() if line.strip()]
    assert len(rows) == 1, r.stdout
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    want = min(1024 if backlog is None else backlog, somaxconn)
    assert int(rows[0][2]) == want, f"Send-Q (backlog) of the listener: {r.stdout}"
