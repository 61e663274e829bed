# SPDX-License-Identifier: MIT
"""
The status report (`tcpexecd -s`): header lines, one row per worker with its
state, the served counter, and a busy worker showing its peer.
"""

import re

from conftest import VERSION, wait_for


def test_status_lists_each_worker(start_daemon):
    d = start_daemon({"workers": 3, "min_spare": 1, "max_spare": 3, "max_workers": 7})
    d.wait_workers(3)
    st = wait_for(lambda: (lambda s: s if s.idle == 3 else None)(d.status()), 5,
                  "3 idle workers")
    assert st.version == VERSION
    assert st.master_pid == d.pid
    assert (st.total, st.starting, st.busy, st.exiting) == (3, 0, 0, 0), st.text
    assert (st.floor, st.max) == (3, 7), st.text
    assert st.served == 0, st.text
    assert sorted(r.pid for r in st.rows) == d.workers(), st.text
    assert len({r.slot for r in st.rows}) == 3, st.text
    assert all(r.state == "idle" and r.gen == st.generation for r in st.rows), st.text

    for i in range(3):
        d.exchange(b"n%d" % i)
    st = wait_for(lambda: (lambda s: s if s.served == 3 else None)(d.status()), 5,
                  "served: 3")
    assert sum(r.reqs for r in st.rows) == 3, st.text


def test_status_shows_busy_worker_with_peer(start_daemon):
    d = start_daemon({"workers": 2, "min_spare": 1, "max_spare": 2})
    d.wait_workers(2)
    c = d.connect()
    host, port = c.sock.getsockname()[:2]
    st = wait_for(lambda: (lambda s: s if s.busy == 1 else None)(d.status()), 5,
                  "one busy worker")
    busy = [r for r in st.rows if r.state == "busy"]
    assert len(busy) == 1, st.text
    assert busy[0].pid == c.worker_pid, st.text
    m = re.fullmatch(r"127\.0\.0\.1(?::(\d+))?", busy[0].peer or "")
    assert m, f"peer of the busy worker is not the client's address:\n{st.text}"
    assert m.group(1) is None or int(m.group(1)) == port, st.text
    assert st.idle == st.total - 1, st.text
    assert all(r.state == "idle" for r in st.rows if r.pid != c.worker_pid), st.text

    c.echo(b"done")
    assert c.finish() == b""
    wait_for(lambda: d.status().busy == 0, 5, "the worker to be idle again")
