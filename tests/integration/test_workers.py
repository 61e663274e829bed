# SPDX-License-Identifier: MIT
"""
Workers as processes: the master starts N, replaces killed ones (one or all
at once), backs off when workers cannot start, stops on the
configuration-error exit status, recycles after max_requests and kills hung
workers.
"""

import os
import signal
import time

from conftest import POLL, alive, proc_stat, wait_for


def test_starts_n_workers_and_replaces_killed_ones(start_daemon):
    d = start_daemon({"workers": 3, "min_spare": 1, "max_spare": 3})
    first = d.wait_settled(3)
    for pid in first:
        assert proc_stat(pid).ppid == d.pid

    # One worker.
    victim = first[0]
    mark = d.log_mark()
    os.kill(victim, signal.SIGKILL)
    now = d.wait_workers(3, timeout=5, exclude=[victim])
    assert set(first[1:]) <= set(now), "surviving workers were replaced too"
    d.wait_log(rf"worker {victim} killed by signal 9\b", since=mark)
    (new,) = set(now) - set(first)
    d.wait_log(rf"worker {new} started \(slot \d+, generation \d+\)", since=mark)

    # All of them at once.
    old = d.wait_settled(3)
    mark = d.log_mark()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    now = d.wait_workers(3, timeout=5, exclude=old)
    for pid in old:
        d.wait_log(rf"worker {pid} killed by signal 9\b", since=mark)
    for pid in now:
        d.wait_log(rf"worker {pid} started \(slot \d+, generation \d+\)", since=mark)
    d.assert_no_zombies()
    d.assert_gone(old)
    assert d.running()
    served_by = {d.exchange() for _ in range(3)}
    assert served_by <= set(d.workers())


def test_worker_that_cannot_start_backs_off(start_daemon):
    floor = 2
    d = start_daemon({"workers": floor}, env={"TCPEXECD_TEST_FAULT": "worker-exit"},
                     wait_ready=False)
    deadline = time.monotonic() + 6.0
    for _ in range(int(6.0 / POLL) + 2):
        assert d.running(), f"master died (status {d.proc.returncode}):\n{d.stderr_text()}"
        d.worker_stats()
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    assert d.running()
    started = d.find_log(r"worker (\d+) started \(slot \d+, generation \d+\)")
    assert floor <= len(started) <= floor + 4, \
        f"{len(started)} workers started in 6 s:\n{d.stderr_text()}"
    assert d.find_log(r"worker \d+ exited with status 1\b"), d.stderr_text()
    delays = [int(m.group(1)) for m in
              d.find_log(r"worker start failed, next attempt in (\d+)s")]
    assert len(delays) >= 2, d.stderr_text()
    assert delays == sorted(delays) and max(delays) >= 2, \
        f"backoff does not grow: {delays}"


def test_worker_config_error_stops_master(start_daemon):
    d = start_daemon({"workers": 2}, env={"TCPEXECD_TEST_FAULT": "worker-config"},
                     wait_ready=False)
    assert d.wait_exit(10) == 3, d.stderr_text()
    assert d.find_log(r"worker \d+ exited with the configuration-error status; stopping"), \
        d.stderr_text()
    d.assert_gone(list(d.seen))


def test_workers_recycle_after_max_requests(start_daemon):
    d = start_daemon({"workers": 1, "min_spare": 0, "max_spare": 1, "max_requests": 3})
    served = []
    for i in range(7):
        # A worker that exits within a second of its start counts as a failed
        # start; let each one age first so that recycling is not mistaken for
        # a start failure.
        d.wait_settled(1, timeout=15)
        served.append(d.exchange(b"req%d" % i, timeout=10))
        if i % 3 == 2:
            d.assert_gone([served[-1]], timeout=5)
    assert served[0] == served[1] == served[2]
    assert served[3] == served[4] == served[5]
    assert len({served[0], served[3], served[6]}) == 3, served
    d.wait_log(rf"worker {served[0]} exited with status 0\b")
    d.wait_log(rf"worker {served[3]} exited with status 0\b")


def test_hung_worker_is_killed_and_replaced(start_daemon):
    d = start_daemon({"workers": 2, "min_spare": 1, "max_spare": 2,
                      "heartbeat_timeout": "2s"})
    hung, other = d.wait_settled(2)
    hung_ident = d.worker_ident(hung)
    other_ident = d.worker_ident(other)
    mark = d.log_mark()
    os.kill(hung, signal.SIGSTOP)
    m = d.wait_log(rf"worker {hung} hung \(no heartbeat for (\d+) ms\); killing it",
                   since=mark, timeout=10)
    assert int(m[0].group(1)) >= 2000
    d.wait_log(rf"worker {hung} killed by signal 9\b", since=mark)
    wait_for(lambda: not alive(hung_ident), 5, "the hung worker to die")
    now = d.wait_workers(2, timeout=5, exclude=[hung])
    assert other in now and alive(other_ident), \
        "an idle worker that kept its heartbeat was killed too"
    assert not d.find_log(rf"worker {other} hung", since=mark)
    d.exchange()
