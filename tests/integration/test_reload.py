# SPDX-License-Identifier: MIT
"""
SIGHUP reload: no connection is refused or fails while the master reloads
under a steady load, workers of the old generation are replaced, a broken
file keeps the old configuration serving, and a changed `listen` opens the
new socket and closes the old one.
"""

import signal
import socket
import threading
import time

from conftest import (alive, exchange, ipv6_loopback, open_socket, parse_addr,
                      run_status, wait_for)

POOL = {"workers": 2, "min_spare": 1, "max_spare": 2}
RELOADED = r"configuration reloaded \(generation (\d+)\)"


class Load(threading.Thread):
    """Sequential full sessions until stopped; bounded in count and time."""

    def __init__(self, addr, max_seconds=15.0, max_sessions=3000):
        super().__init__(daemon=True)
        self.addr = addr
        self.max_seconds = max_seconds
        self.max_sessions = max_sessions
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.max_sessions):
            if self.stop.is_set() or time.monotonic() >= deadline:
                return
            payload = b"x%d" % i
            try:
                exchange(self.addr, payload, timeout=5)
                self.ok += 1
            except (OSError, AssertionError) as e:
                self.failures.append(f"session {i}: {type(e).__name__}: {e}")
            # Pace the load: each session leaves a TIME_WAIT port behind.
            time.sleep(0.002)


def test_reload_under_steady_load(start_daemon):
    d = start_daemon(POOL)
    g0 = d.status().generation
    old = d.workers()
    load = Load(d.addr())
    load.start()
    try:
        time.sleep(0.5)
        for i in range(1, 4):
            mark = d.log_mark()
            d.kill(signal.SIGHUP)
            d.wait_log(r"\breloading configuration\b", since=mark)
            m = d.wait_log(RELOADED, since=mark)
            assert int(m[0].group(1)) == g0 + i
            time.sleep(0.5)
    finally:
        load.stop.set()
        load.join(20)
    assert not load.is_alive()
    assert load.failures == [], f"{len(load.failures)} failed sessions: {load.failures[:5]}"
    assert load.ok >= 20, f"only {load.ok} sessions in the load window"

    g = g0 + 3
    assert d.status().generation == g
    # Every worker of an old generation is replaced by one of the new one.
    wait_for(lambda: all(not alive(d.worker_ident(p)) for p in old), 10,
             f"old workers {old} to exit")
    st = wait_for(lambda: (lambda s: s if s.rows and all(r.gen == g for r in s.rows)
                           and s.total >= 2 else None)(d.status()),
                  10, f"all workers in generation {g}")
    for r in st.rows:
        d.wait_log(rf"worker {r.pid} started \(slot \d+, generation {g}\)")
    assert not set(old) & {r.pid for r in st.rows}
    assert d.exchange() in d.workers()


def test_broken_config_keeps_old_one_serving(start_daemon):
    d = start_daemon(POOL)
    good = d.conf.read_text()
    old = d.wait_settled(2)
    g0 = d.status().generation
    d.conf.write_text("[server]\nlisten = 127.0.0.1:0\nthis is not ini at all\n"
                      "workers = banana\n")
    mark = d.log_mark()
    d.kill(signal.SIGHUP)
    d.wait_log(r"reload failed: .+; keeping the current configuration", since=mark)
    assert d.running()
    for i in range(6):
        assert d.exchange(b"still %d" % i) in old
    time.sleep(1.5)
    assert d.workers() == old, "workers were replaced although the reload failed"
    # `tcpexecd -s` reads control_socket from a config file: not this one.
    status_conf = d.conf.with_name("status.conf")
    status_conf.write_text(good)
    assert run_status(status_conf).generation == g0
    assert not d.find_log(RELOADED, since=mark)

    # Repaired, the next reload goes through.
    d.conf.write_text(good)
    mark = d.log_mark()
    d.kill(signal.SIGHUP)
    m = d.wait_log(RELOADED, since=mark)
    assert int(m[0].group(1)) == g0 + 1
    d.exchange()


def _connect_refused(addr):
    try:
        with open_socket(addr, timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_reload_changes_listen_addresses(start_daemon, sockdir):
    d = start_daemon(POOL)
    text_a, addr_a = d.addresses[0]
    second = "[::1]:0" if ipv6_loopback() else str(sockdir / "second.sock")

    # Add a listener.
    mark = d.log_mark()
    out_mark = len(d.stdout_lines())
    d.write_config(listen=["127.0.0.1:0", second])
    d.kill(signal.SIGHUP)
    d.wait_log(RELOADED, since=mark)

    def new_listener():
        lines = d.log()[mark:] + d.stdout_lines()[out_mark:]
        for line in lines:
            if "listening on " in line:
                text = line.rsplit("listening on ", 1)[1].strip()
                if text != text_a:
                    return text
        return None

    text_b = wait_for(new_listener, 5, "a `listening on` line for the new socket")
    addr_b = parse_addr(text_b)
    if second.startswith("["):
        assert addr_b[0] == socket.AF_INET6 and addr_b[1][1] != 0, text_b
    else:
        assert text_b == second
    exchange(addr_b, b"new")
    exchange(addr_a, b"old")

    # Drop the first listener: it must be closed, the second keeps its socket.
    mark = d.log_mark()
    d.write_config(listen=[second])
    d.kill(signal.SIGHUP)
    d.wait_log(RELOADED, since=mark)
    exchange(addr_b, b"kept")
    wait_for(lambda: _connect_refused(addr_a), 10, f"{text_a} to be closed")
    exchange(addr_b, b"still kept")
