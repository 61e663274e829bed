# SPDX-License-Identifier: MIT
"""
Where and how many: remote execution over a Unix socket and over IPv6
loopback, several requests on one connection (the client's interactive
mode), and as many concurrent commands as there are workers, each proven to
run at the same time as the others by a barrier the commands share.
"""

import re

import pytest

from execfix import finish, ipv6_loopback, rig  # noqa: F401  (rig is a fixture)

ECHO = {"echo": {"path": "/bin/echo", "args": "any"}}
WHERE = {"where": {"shell": "yes", "script": 'echo "$TCPEXEC_REMOTE_ADDR"'}}


def test_interactive_mode_runs_each_line_on_one_connection(rig):
    d = rig.daemon(ECHO | {"fail": {"shell": "yes", "script": "exit 3"}})
    r = rig.run(d, [], input=b"echo a\necho 'b  c' \"d\\\" e\" f\\ g\n\nfail\necho z\n")
    assert r.stdout == b'a\nb  c d" e f g\nz\n', r.stderr
    assert r.returncode == 0, r.stderr
    assert b"exit status 3" in r.stderr
    a = d.wait_audit("echo", count=3)
    assert len({x["peer"] for x in a}) == 1, f"not one connection: {a}"
    assert len(d.audits(command="fail")) == 1


def test_interactive_mode_exit_status_is_the_last_commands(rig):
    d = rig.daemon(ECHO | {"fail": {"shell": "yes", "script": "exit 3"}})
    r = rig.run(d, [], input=b"echo a\nfail\n")
    assert (r.returncode, r.stdout) == (3, b"a\n"), r.stderr


def test_unix_socket_listener(rig):
    path = rig.sockdir / "s.sock"
    d = rig.daemon(ECHO | WHERE, listen=str(path))
    assert d.addresses == [str(path)]
    r = rig.run(d, ["echo", "hi"])
    assert (r.returncode, r.stdout, r.stderr) == (0, b"hi\n", b"")
    assert d.wait_audit("echo")[0]["decision"] == "allow"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) here")
@pytest.mark.parametrize("form", ["::1", "[::1]"])
def test_ipv6_listener(rig, form):
    d = rig.daemon(ECHO | WHERE, listen="[::1]:0")
    assert d.target()[0] == "::1", d.addresses
    r = rig.run(d, ["echo", "hi"], host=form)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"hi\n", b"")
    r = rig.run(d, ["where"], host=form)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"::1\n", b"")


def test_concurrency_equal_to_the_worker_count(rig):
    barrier = rig.sockdir / "barrier"  # a short path: the script is one INI line
    barrier.mkdir()
    # Each command checks in, then waits (bounded) until all four have: it
    # prints 4 only if the four really ran at the same time.
    script = (f'cd {barrier} && touch "$1" && i=0 && '
              'while [ "$(ls | wc -l)" -lt 4 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; '
              'ls | wc -l')
    d = rig.daemon({"meet": {"shell": "yes", "script": script, "args": "pattern",
                             "arg_pattern": "[a-z0-9]+"}},
                   workers=4, min_spare=0, max_spare=4, max_workers=4)
    clients = [rig.spawn(d, ["meet", f"c{i}"]) for i in range(4)]
    results = [finish(p, timeout=60) for p in clients]
    for i, r in enumerate(results):
        assert (r.returncode, r.stderr) == (0, b""), (i, r)
        assert r.stdout.strip() == b"4", f"client {i} did not see all four: {r.stdout!r}"
    a = d.wait_audit("meet", count=4)
    assert len({x["worker"] for x in a}) == 4, a
    assert all(re.fullmatch(r"exit:0", x["status"]) for x in a), a
