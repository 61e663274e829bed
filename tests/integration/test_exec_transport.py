# SPDX-License-Identifier: MIT
"""
Where and how many: remote execution over a Unix socket and over IPv6
loopback, several requests on one connection (the client's interactive
mode), as many concurrent commands as there are workers, each proven to
run at the same time as the others by a barrier the commands share, and
the congestion control of loopback connections at both ends.
"""

import re
import shutil
import subprocess

import pytest

from execfix import finish, ipv6_loopback, rig  # noqa: F401  (rig is a fixture)
from harness import wait_for

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


def congestion_controls(port):
    """{(local port, peer port): congestion control} of the established TCP
    sockets to or from port, from ss -ti."""
    r = subprocess.run(["ss", "-tinH", "state", "established",
                        f"( sport = :{port} or dport = :{port} )"],
                       capture_output=True, text=True, timeout=10, check=True)
    found, ports = {}, None
    for line in r.stdout.splitlines():
        m = re.search(r"\S+:(\d+)\s+\S+:(\d+)\s*$", line)
        if m and not line.startswith((" ", "\t")):
            ports = (int(m.group(1)), int(m.group(2)))
        elif ports and line.strip():
            found[ports] = line.split()[0]
            ports = None
    return found


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")
def test_loopback_connections_use_reno_at_both_ends(rig):
    # BBR's pacing only costs timers on loopback: the daemon sets reno on
    # loopback peers (loopback_congestion, default reno) and the client on
    # loopback destinations; "system" leaves the daemon's side alone.
    system = open("/proc/sys/net/ipv4/tcp_congestion_control").read().strip()
    cat = {"cat": {"path": "/bin/cat"}}
    for setting, server_cc in ((None, "reno"), ("system", system)):
        keys = {} if setting is None else {"loopback_congestion": setting}
        d = rig.daemon(cat, **keys)
        p = rig.spawn(d, ["cat"], stdin=subprocess.PIPE)  # killed at teardown
        p.stdin.write(b"held\n")
        p.stdin.flush()
        port = d.port()
        wait_for(lambda: len(congestion_controls(port)) == 2, 10, "the client's connection in ss")
        cc = congestion_controls(port)
        server = [v for (local, _), v in cc.items() if local == port]
        client = [v for (_, peer), v in cc.items() if peer == port]
        assert (server, client) == ([server_cc], ["reno"]), (setting, cc)
        r = finish(p)
        assert (r.returncode, r.stdout) == (0, b"held\n"), r.stderr
