# SPDX-License-Identifier: MIT
"""
How long a remote command lives, through the real daemon and client: a
background child does not hold the request open past `linger`, a runtime
timeout and the output cap kill the command's whole process group, a client
that vanishes takes its command with it, and Ctrl-C on the client reaches
the command. Leftovers are found in /proc by a unique `sleep` argument.
"""

import os
import signal
import sys
import time

import pytest

import harness
from execfix import LIVE, Daemon, client_env, client_error, finish, procs_with_arg, \
    read_until, rig, wait_for, wait_no_proc_with  # noqa: F401  (rig is a fixture)


def test_background_child_does_not_outlive_linger(rig):
    m = rig.marker("100")
    d = rig.daemon({"bg": {"shell": "yes", "script": f"sleep {m} & echo started"}},
                   linger="1s")
    t0 = time.monotonic()
    r = rig.run(d, ["bg"], timeout=30)
    elapsed = time.monotonic() - t0
    assert (r.returncode, r.stdout) == (0, b"started\n"), r.stderr
    assert elapsed < LIVE, f"the background sleep held the request for {elapsed:.1f} s"
    assert wait_no_proc_with(m) == [], "the background sleep survived the request"
    assert d.wait_audit("bg")[0]["status"] == "exit:0"


def test_detached_background_child_is_killed_too(rig):
    # This child lets go of the pipes at once, so nothing waits for it;
    # it is still in the command's process group, which is killed at the end.
    m = rig.marker("100")
    d = rig.daemon({"bg": {"shell": "yes",
                           "script": f"sleep {m} >/dev/null 2>&1 </dev/null & echo started"}})
    r = rig.run(d, ["bg"], timeout=30)
    assert (r.returncode, r.stdout) == (0, b"started\n"), r.stderr
    assert wait_no_proc_with(m) == [], "the detached background sleep survived the request"


def test_timeout_kills_the_whole_group(rig):
    m1, m2 = rig.marker(), rig.marker()
    d = rig.daemon({"slow": {"shell": "yes", "script": f"sleep {m1} & sleep {m2} & wait",
                             "timeout": "1s"}})
    r = rig.run(d, ["slow"], timeout=30)
    assert r.returncode == 255
    assert client_error(r.stderr) == "timeout", r.stderr
    assert wait_no_proc_with(m1) == [] and wait_no_proc_with(m2) == [], \
        "a child of the timed-out command survived"
    assert d.wait_audit("slow")[0]["status"] == "error:timeout"


def test_timeout_escalates_to_sigkill(rig):
    # SIG_IGN survives exec: the sleep ignores SIGTERM as well as the shell.
    m = rig.marker()
    d = rig.daemon({"stubborn": {"shell": "yes", "script": f"trap '' TERM; sleep {m}",
                                 "timeout": "1s"}}, kill_grace="500ms")
    r = rig.run(d, ["stubborn"], timeout=30)
    assert r.returncode == 255
    assert client_error(r.stderr) == "timeout", r.stderr
    assert wait_no_proc_with(m) == []


def test_client_timeout_option(rig):
    m = rig.marker()
    d = rig.daemon({"slow": {"path": "/bin/sleep", "arg": m}})
    r = rig.run(d, ["slow"], opts=["-t", "0.5"], timeout=30)
    assert r.returncode == 255
    assert client_error(r.stderr) == "timeout", r.stderr
    assert wait_no_proc_with(m) == []


def test_output_limit_stops_the_command(rig):
    m = rig.marker("cap")
    d = rig.daemon({"yes": {"path": "/usr/bin/yes", "arg": m, "output_limit": "100K"}})
    r = rig.run(d, ["yes"], timeout=30)
    assert r.returncode == 255
    assert client_error(r.stderr) == "output limit exceeded", r.stderr
    assert 0 < len(r.stdout) <= 100 * 1024, len(r.stdout)
    line = m.encode() + b"\n"
    assert r.stdout == (line * (len(r.stdout) // len(line) + 1))[:len(r.stdout)]
    assert wait_no_proc_with(m) == [], "yes kept running after the cap"
    assert d.wait_audit("yes")[0]["status"] == "error:output limit exceeded"


def test_client_killed_mid_command(rig):
    m = rig.marker()
    d = rig.daemon({"slow": {"path": "/bin/sleep", "arg": m}})
    p = rig.spawn(d, ["slow"])
    wait_for(lambda: procs_with_arg(m), LIVE, "the remote sleep to start")
    p.kill()
    finish(p)
    assert wait_no_proc_with(m) == [], "the command outlived its client"
    a = d.wait_audit("slow")[0]
    assert a["status"] != "exit:0", a


def test_ctrl_c_is_forwarded(rig):
    d = rig.daemon({"trap": {"shell": "yes",
                             "script": "trap 'echo got-int; exit 7' INT; echo ready; "
                                       "i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"}})
    p = rig.spawn(d, ["trap"])
    got = read_until(p.stdout, lambda b: b"ready\n" in b)
    p.send_signal(signal.SIGINT)
    r = finish(p, timeout=30)
    assert got + r.stdout == b"ready\ngot-int\n", r.stderr
    assert r.returncode == 7, r.stderr
    assert d.wait_audit("trap")[0]["status"] == "exit:7"


def test_sigterm_to_client_kills_remote_by_default(rig):
    m = rig.marker()
    d = rig.daemon({"slow": {"path": "/bin/sleep", "arg": m}})
    p = rig.spawn(d, ["slow"])
    wait_for(lambda: procs_with_arg(m), LIVE, "the remote sleep to start")
    p.send_signal(signal.SIGTERM)
    r = finish(p, timeout=30)
    # The remote sleep died of the forwarded SIGTERM, and so does the client.
    assert r.returncode == -signal.SIGTERM, (r.returncode, r.stderr)
    assert wait_no_proc_with(m) == []
    assert d.wait_audit("slow")[0]["status"] == "signal:15"


def test_local_reader_going_away_stops_the_command(rig):
    # `tcpexec host yes | head -1`: once nobody reads the client's output,
    # the client ends and its command must not keep running.
    m = rig.marker("gone")
    d = rig.daemon({"yes": {"path": "/usr/bin/yes", "arg": m}})
    p = rig.spawn(d, ["yes"])
    read_until(p.stdout, lambda b: len(b) > 0)
    p.stdout.close()
    r = finish(p, timeout=30)
    assert r.returncode != 0
    assert wait_no_proc_with(m) == [], "yes outlived its client"


@pytest.mark.parametrize("script", ["true", "head -c 10"])
def test_command_that_stops_reading_stdin(rig, script):
    d = rig.daemon({"stop": {"shell": "yes", "script": script}})
    r = rig.run(d, ["stop"], input=os.urandom(10 << 20), timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == (0 if script == "true" else 10)


# Starts tcpexecd with a controlling terminal: argv[1] is the terminal,
# argv[2] "leader" makes tcpexecd the session leader (exec), "member" a
# member of the session this process leads (fork; SIGTERM is passed on).
TTY_STARTER = r"""
import fcntl, os, signal, sys, termios
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
os.close(fd)
if sys.argv[2] == "leader":
    os.execv(sys.argv[3], sys.argv[3:])
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[3], sys.argv[3:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
while True:
    try:
        _, st = os.waitpid(pid, 0)
        break
    except InterruptedError:
        pass
sys.exit(os.waitstatus_to_exitcode(st))
"""


class TtyDaemon(Daemon):
    """tcpexecd -f started from a terminal, through TTY_STARTER."""

    def __init__(self, tty, how, *args):
        super().__init__(*args)
        self.tty, self.how = tty, how

    def spawn(self, argv, env, name="tcpexecd"):
        return super().spawn([sys.executable, "-c", TTY_STARTER, self.tty, self.how, *argv],
                             env, name)

    def master_pid(self):
        if self.how == "leader":
            return self.pid
        return harness.children(self.pid)[0].pid


# What the command sees: its /proc stat line (pid, pgrp, session, tty_nr
# are fields 1, 5, 6, 7) and whether /dev/tty opens.
WHO_AM_I = "cat /proc/$$/stat; if (: </dev/tty) 2>/dev/null; then echo tty; else echo notty; fi"


@pytest.mark.parametrize("how", ["none", "member", "leader"])
def test_command_has_no_terminal_and_its_own_group(rig, how):
    # A command leads its own process group (that is how a timeout or a
    # vanished client reaches all of it) and can never reach a terminal,
    # even when tcpexecd -f was started from one. Unless tcpexecd leads its
    # session (then only a new session per command parts it from the
    # terminal), commands stay in tcpexecd's session: a new session per
    # command would also be a new scheduling autogroup each.
    commands = {"who": {"shell": "yes", "script": WHO_AM_I}}
    master_fd = None
    if how == "none":
        d = rig.daemon(commands)
        master = d.pid
    else:
        master_fd, slave_fd = os.openpty()
        tty = os.ttyname(slave_fd)
        os.close(slave_fd)
        keys = {"listen": "127.0.0.1:0", "control_socket": str(rig.sockdir / "ctl"),
                "workers": 2}
        d = TtyDaemon(tty, how, rig.tmp / "tcpexecd-tty.conf", keys, commands,
                      client_env())
        rig.daemons.append(d)
        d.start()
        master = d.master_pid()
    try:
        r = rig.run(d, ["who"])
        assert r.returncode == 0, r.stderr
        stat, answer = r.stdout.decode().splitlines()
        fields = stat[stat.rindex(")") + 2:].split()
        pid, pgrp, session, tty_nr = int(stat.split()[0]), int(fields[2]), \
            int(fields[3]), int(fields[4])
        assert pgrp == pid, "the command does not lead its own process group"
        assert (tty_nr, answer) == (0, "notty"), "the command has a controlling terminal"
        expected_session = pid if how == "leader" else os.getsid(master)
        assert session == expected_session, (how, session, pid, os.getsid(master))
        if how == "member":
            assert harness.proc_stat(master) is not None
            with open(f"/proc/{master}/stat") as f:
                daemon_tty = int(f.read().rsplit(")", 1)[1].split()[4])
            assert daemon_tty == 0, "tcpexecd kept its controlling terminal"
    finally:
        d.cleanup()
        if master_fd is not None:
            os.close(master_fd)


# The scheduling policy (field 41 of /proc/PID/stat) of the command and of
# its parent, the worker that started it.
POLICIES = "cat /proc/$$/stat /proc/$PPID/stat"
SCHED_OTHER, SCHED_BATCH, SCHED_IDLE = 0, 3, 5


class ChrtDaemon(Daemon):
    """tcpexecd -f started under another scheduling policy, as
    CPUSchedulingPolicy= or chrt(1) would start it."""

    def spawn(self, argv, env, name="tcpexecd"):
        return super().spawn(["chrt", "--idle", "0", *argv], env, name)


@pytest.mark.parametrize("setting, start, expected", [
    (None, "other", (SCHED_OTHER, SCHED_BATCH)),
    ("batch", "idle", (SCHED_IDLE, SCHED_IDLE)),
    ("inherit", "other", (SCHED_OTHER, SCHED_OTHER)),
])
def test_workers_run_batch_and_commands_do_not(rig, setting, start, expected):
    # Workers run SCHED_BATCH so that their many short wake-ups do not
    # preempt the commands; a command runs under the policy the daemon was
    # started with, and a daemon started under a policy of the
    # administrator's choosing keeps it for its workers too.
    commands = {"policies": {"shell": "yes", "script": POLICIES}}
    keys = {} if setting is None else {"worker_scheduling": setting}
    if start == "other":
        d = rig.daemon(commands, **keys)
    else:
        keys.update({"listen": "127.0.0.1:0", "control_socket": str(rig.sockdir / "ctl"),
                     "workers": 2})
        d = ChrtDaemon(rig.tmp / "tcpexecd-chrt.conf", keys, commands, client_env())
        rig.daemons.append(d)
        d.start()
    try:
        for _ in range(3):  # whichever worker takes it
            r = rig.run(d, ["policies"])
            assert r.returncode == 0, r.stderr
            cmd, worker = (int(line.rsplit(")", 1)[1].split()[38])
                           for line in r.stdout.decode().splitlines())
            assert (cmd, worker) == expected, (setting, start)
        for w in harness.children(d.pid):
            with open(f"/proc/{w.pid}/stat") as f:
                assert int(f.read().rsplit(")", 1)[1].split()[38]) == expected[1]
    finally:
        d.cleanup()
