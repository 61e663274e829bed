# SPDX-License-Identifier: MIT
"""
Pool sizing: the pool grows under concurrent clients up to max_workers and
never beyond, shrinks back to the floor when idle, and SIGTTIN / SIGTTOU move
the floor by one. While the CPUs are busy, it grows only when its workers
stop taking connections, and gives back the workers beyond one per CPU that
turn short connections over, never cutting a connection kept open.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import Conn, children, exchange, readable, wait_for
from harness import kill_idents, proc_stat


class Sampler(threading.Thread):
    """Samples the number of live workers every 50 ms; bounded in time."""

    def __init__(self, master_pid, max_seconds=60.0):
        super().__init__(daemon=True)
        self.master_pid = master_pid
        self.max_seconds = max_seconds
        self.stop = threading.Event()
        self.samples = []

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        for _ in range(int(self.max_seconds / 0.05) + 1):
            if self.stop.is_set() or time.monotonic() >= deadline:
                return
            self.samples.append(len(children(self.master_pid)))
            time.sleep(0.05)


def test_pool_grows_under_load_and_shrinks_when_idle(start_daemon):
    cap = 6
    d = start_daemon({"workers": 2, "min_spare": 1, "max_spare": 2, "max_workers": cap})
    d.wait_workers(2)
    sampler = Sampler(d.pid)
    sampler.start()
    try:
        # One client more than the cap, all at once: the pool grows from 2 to
        # 6 while the clients wait in the backlog; the last one must keep
        # waiting, as min_spare can never be met at the cap.
        socks = [d.open() for _ in range(cap + 1)]
        conns = [Conn(s, timeout=15) for s in socks[:cap]]
        assert len({c.worker_pid for c in conns}) == cap, "a worker served two clients"
        st = wait_for(lambda: (lambda s: s if s.busy == cap and s.total == cap else None)(
            d.status()), 5, f"status: {cap} busy of {cap}")
        assert st.max == cap and st.floor == 2
        time.sleep(2.0)  # the cap must hold while demand exceeds it
        assert len(d.workers()) == cap
        assert not readable([socks[cap]]), "a client beyond max_workers was served"

        # One client leaves: the waiting one gets its worker.
        conns[0].echo(b"bye 0")
        assert conns[0].finish() == b""
        conns[0].close()
        conns[0] = Conn(socks[cap], timeout=5)
        for i, c in enumerate(conns):
            c.echo(b"bye %d" % i)
            assert c.finish() == b""
            c.close()
        # Six idle, max_spare 2, floor 2: retired one per second down to 2.
        wait_for(lambda: len(d.workers()) == 2, 15, "the pool to shrink to its floor")
        st = wait_for(lambda: (lambda s: s if s.total == 2 and s.idle == 2 else None)(
            d.status()), 5, "status: 2 idle")
        assert st.floor == 2
        time.sleep(1.5)
        assert len(d.workers()) == 2, "the pool went below its floor"
    finally:
        sampler.stop.set()
        sampler.join(5)
    assert sampler.samples, "no samples"
    assert max(sampler.samples) <= cap, f"pool exceeded max_workers: {max(sampler.samples)}"
    assert max(sampler.samples) == cap


def test_ttin_ttou_move_the_floor(start_daemon):
    d = start_daemon({"workers": 2, "min_spare": 1, "max_spare": 2, "max_workers": 8})
    d.wait_workers(2)
    assert d.status().floor == 2
    for n in (3, 4):
        d.kill(signal.SIGTTIN)
        d.wait_workers(n, timeout=5)
        wait_for(lambda: d.status().floor == n, 5, f"floor {n}")
    # More idle workers than max_spare: only the floor holds them, so each
    # SIGTTOU lets the master retire one.
    for n in (3, 2):
        d.kill(signal.SIGTTOU)
        wait_for(lambda: d.status().floor == n, 5, f"floor {n}")
        d.wait_workers(n, timeout=5)
    time.sleep(1.5)
    assert len(d.workers()) == 2
    assert d.running()
    d.exchange()


# One busy loop per CPU, each ending by itself after `seconds`.
BURNER = "import sys, time\nt = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < t: pass\n"


def start_burners(seconds):
    return [subprocess.Popen([sys.executable, "-c", BURNER, str(seconds)],
                             start_new_session=True) for _ in range(os.cpu_count() or 1)]


def stop_burners(burners):
    kill_idents([st.ident for p in burners if (st := proc_stat(p.pid))])
    for p in burners:
        p.wait(10)


class Flow:
    """N client threads doing short exchanges until stopped; what they
    served (worker pids) and any error, for the assertions."""

    def __init__(self, d, n):
        self.d = d
        self.stop = threading.Event()
        self.served = []
        self.errors = []
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(n)]

    def client(self):
        while not self.stop.is_set():
            try:
                self.served.append(exchange(self.d.addr(), timeout=15))
            except Exception as e:  # reported by the test
                self.errors.append(repr(e))
                return

    def start(self):
        for t in self.threads:
            t.start()

    def end(self):
        self.stop.set()
        for t in self.threads:
            t.join(20)


def test_pool_holds_while_cpus_are_busy_and_grows_when_workers_are_held(start_daemon):
    # With every CPU busy, a worker more would only compete for them: while
    # the workers keep taking connections, waiting clients are served in
    # order from the listen queue and the pool stays as it is, although
    # min_spare is not met. Workers held by clients that send nothing take
    # no new connections, and then the pool grows all the same.
    d = start_daemon({"workers": 2, "min_spare": 2, "max_spare": 8, "max_workers": 8})
    d.wait_workers(2)
    burners = start_burners(30)
    flow = Flow(d, 4)
    try:
        time.sleep(2.5)  # two ticks see the busy CPUs
        sampler = Sampler(d.pid, max_seconds=10)
        sampler.start()
        flow.start()
        time.sleep(4.0)
        flow.end()
        sampler.stop.set()
        sampler.join(5)
        assert not flow.errors, flow.errors
        assert len(flow.served) >= 8, f"only {len(flow.served)} requests served in 4 s"
        assert max(sampler.samples) == 2, \
            f"the pool grew while the CPUs were busy and work flowed: {sampler.samples}"

        # Four sessions that stay open hold both workers and two more:
        # the master sees the two waiting in the listen queue, and none
        # taken for a quarter of a second.
        mark = d.log_mark()
        socks = [d.open() for _ in range(4)]
        try:
            conns = [Conn(s, timeout=15) for s in socks]
            assert len({c.worker_pid for c in conns}) == 4
            d.wait_log(r"\d+ connections wait and none was taken for 250 ms", since=mark)
        finally:
            for s in socks:
                s.close()
    finally:
        flow.end()
        stop_burners(burners)


class Kept(threading.Thread):
    """One connection kept open for many requests, one every 50 ms until
    stopped: the pid of the worker that answered each, and any error (a
    connection cut between two requests is one)."""

    def __init__(self, d):
        super().__init__(daemon=True)
        self.conn = d.connect(timeout=15)
        self.pids = [self.conn.worker_pid]
        self.stop = threading.Event()
        self.errors = []

    def run(self):
        try:
            for _ in range(2000):  # 100 s at most
                self.conn.echo(b"k", timeout=15)
                self.conn.end_request(timeout=15)
                if self.stop.wait(0.05):
                    break
                self.pids.append(self.conn.next_request(timeout=15))
            self.conn.close()
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))

    def end(self):
        self.stop.set()
        self.join(20)


def test_pool_gives_back_fast_workers_the_busy_cpus_cannot_use(start_daemon):
    # Held sessions grow the pool while the CPUs are idle. Then, with every
    # CPU busy and short requests flowing, more workers turn connections
    # over than there are CPUs: the master gives back the extra ones until
    # one per CPU is left, while two connections kept open for many
    # requests keep their workers and are never cut.
    ncpu = os.cpu_count() or 1
    d = start_daemon({"workers": 2, "min_spare": 2, "max_spare": 2 * ncpu + 8,
                      "max_workers": 2 * ncpu + 8})
    d.wait_workers(2)
    kept = [Kept(d) for _ in range(2)]
    held = [d.connect(timeout=15) for _ in range(ncpu + 2)]
    burners = []
    flow = Flow(d, ncpu + 4)
    try:
        for k in kept:
            k.start()
        grown = 2 + ncpu + 2
        wait_for(lambda: len(children(d.pid)) > grown, 10, "the pool to grow for held sessions")
        for c in held:
            c.close()
        mark = d.log_mark()
        burners = start_burners(40)
        time.sleep(1.5)  # a tick sees the busy CPUs
        flow.start()
        wait_for(lambda: len(children(d.pid)) == 2 + ncpu, 25,
                 f"the pool to shrink to the 2 kept workers and {ncpu} turning over")
        d.wait_log(r"the CPUs are busy and \d+ workers turn connections over quickly "
                   r"on \d+ CPUs: giving back \d+", since=mark)
        served, asked = len(flow.served), [len(k.pids) for k in kept]
        time.sleep(1.0)
        assert len(flow.served) > served, "short requests stopped being served"
        assert all(len(k.pids) > n for k, n in zip(kept, asked)), "a kept connection stalled"
    finally:
        flow.end()
        for k in kept:
            k.end()
        stop_burners(burners)
    assert not flow.errors, flow.errors
    for k in kept:
        assert not k.errors, k.errors
        assert len(set(k.pids)) == 1, f"a kept connection moved between workers: {k.pids}"
