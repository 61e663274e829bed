# SPDX-License-Identifier: MIT
"""
Stopping the master with a connection in flight: SIGTERM drains (workers
finish their connection, up to stop_timeout), a second SIGTERM or SIGINT
turns the drain fast, SIGINT aborts at once, SIGQUIT drains without a
deadline.
"""

import signal
import time

import pytest

POOL = {"workers": 2, "min_spare": 1, "max_spare": 2}


def test_graceful_stop_finishes_connection_in_flight(start_daemon):
    d = start_daemon(dict(POOL, stop_timeout="30s"))
    c = d.connect()
    workers = d.workers()
    assert c.worker_pid in workers
    mark = d.log_mark()
    d.kill(signal.SIGTERM)
    d.wait_log(r"graceful stop, deadline 30s\b", since=mark)
    c.echo(b"still here")
    assert d.running(), "master exited while a connection was in flight"
    assert c.worker_pid in d.workers()
    assert c.finish() == b""
    assert d.wait_exit(10) == 0, d.stderr_text()
    d.wait_log(r"\bstopped$", since=mark)
    d.assert_gone(workers)


def test_fast_stop_aborts_connection_in_flight(start_daemon):
    d = start_daemon(dict(POOL, stop_timeout="30s"))
    c = d.connect()
    c.echo(b"ping")
    workers = d.workers()
    mark = d.log_mark()
    d.kill(signal.SIGINT)
    d.wait_log(r"\bfast stop\b", since=mark)
    c.wait_closed(5)
    assert d.wait_exit(10) == 0, d.stderr_text()
    d.wait_log(r"\bstopped$", since=mark)
    d.assert_gone(workers)


def test_stop_deadline_kills_stuck_connection(start_daemon):
    d = start_daemon(dict(POOL, stop_timeout="1s"))
    c = d.connect()
    workers = d.workers()
    mark = d.log_mark()
    d.kill(signal.SIGTERM)
    d.wait_log(r"graceful stop, deadline 1s\b", since=mark)
    c.echo(b"draining")  # still served after the stop began
    # The client never closes: only the deadline can end this session.
    c.wait_closed(10)
    assert d.wait_exit(10) == 0, d.stderr_text()
    d.wait_log(rf"worker {c.worker_pid} killed by signal 9\b", since=mark)
    d.assert_gone(workers)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_second_signal_during_drain_is_fast(start_daemon, second):
    d = start_daemon(dict(POOL, stop_timeout="30s"))
    c = d.connect()
    workers = d.workers()
    mark = d.log_mark()
    d.kill(signal.SIGTERM)
    d.wait_log(r"graceful stop, deadline 30s\b", since=mark)
    c.echo(b"draining")
    d.kill(second)
    d.wait_log(r"\bfast stop\b", since=mark)
    # Well before the 30 s deadline.
    c.wait_closed(5)
    assert d.wait_exit(10) == 0, d.stderr_text()
    d.assert_gone(workers)


def test_sigquit_drains_without_deadline(start_daemon):
    d = start_daemon(dict(POOL, stop_timeout="1s"))
    c = d.connect()
    workers = d.workers()
    d.kill(signal.SIGQUIT)
    # Outlive stop_timeout by far: SIGQUIT must not apply it.
    time.sleep(2.5)
    assert d.running(), f"master exited under SIGQUIT:\n{d.stderr_text()}"
    c.echo(b"still served")
    assert c.finish() == b""
    assert d.wait_exit(10) == 0, d.stderr_text()
    d.assert_gone(workers)
