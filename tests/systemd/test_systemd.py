# SPDX-License-Identifier: MIT
"""
tcpexecd under a real systemd: one systemd-nspawn container per test
session (see nspawn.py), into which the built tcpexecd, tcpexec, the four
units, the man pages and a configuration are installed as `meson install`
would with the default prefix. Each test starts from every tcpexecd unit
stopped and drives systemd with systemctl; clients run inside the container
(its network is private), through nsenter.

Skipped, with the reason printed, only when this machine cannot boot a
container: not root, no systemd-nspawn, or a boot that fails before any of
our code is involved.

Run: meson test -C BUILD --suite systemd, or as root directly
  pytest-3 -v -rs tests/systemd/test_systemd.py
with TCPEXECD and TCPEXEC (the binaries), TCPEXECD_UNITS (the four unit
files, ':'-separated) and TCPEXECD_MANPAGES (the three man pages) set;
they default to build-sd/ and to the source tree.
"""

import json
import os
import re
import select
import time
import uuid
from pathlib import Path

import pytest

import nspawn

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent
BUILD = SRC / "build-sd"
TCPEXECD = os.environ.get("TCPEXECD") or str(BUILD / "tcpexecd")
TCPEXEC = os.environ.get("TCPEXEC") or str(BUILD / "tcpexec")
UNITS = (os.environ.get("TCPEXECD_UNITS") or os.pathsep.join(
    [str(BUILD / "tcpexecd.service"), str(BUILD / "tcpexecd-inetd@.service"),
     str(SRC / "systemd" / "tcpexecd.socket"),
     str(SRC / "systemd" / "tcpexecd-inetd.socket")])).split(os.pathsep)
MANPAGES = (os.environ.get("TCPEXECD_MANPAGES") or os.pathsep.join(
    str(SRC / "man" / m) for m in ("tcpexecd.8", "tcpexecd.conf.5", "tcpexec.1"))
    ).split(os.pathsep)

OUR_UNITS = ("tcpexecd.service", "tcpexecd.socket", "tcpexecd-inetd.socket")
CLIENT = "/usr/local/bin/tcpexec"
MSGID_EXECUTED = "e34929e126aa411594b678b1288af71f"
MSGID_DENIED = "5770861e8663419eba80a49d8c92f297"
LIVE = 15.0

# The installed configuration: the socket unit's two addresses, a small
# pool, and commands that keep a request running for the drain and kill
# cases. Their argument, a number of seconds, also marks their processes.
CONFIG = """\
[server]
listen = 127.0.0.1:5151
listen = [::1]:5151
workers = 2
min_spare = 1
max_spare = 4
stop_timeout = 20s

[command echo]
path = /bin/echo
args = any

[command env]
shell = yes
script = env

[command stat]
shell = yes
script = cat /proc/$$/stat

[command slow]
shell = yes
script = echo started && sleep "$1" && echo done
args = pattern
arg_pattern = [0-9]+
max_args = 1

[command hold]
shell = yes
script = echo started && exec sleep "$1"
args = pattern
arg_pattern = [0-9]+
max_args = 1
"""


def wait_for(pred, timeout, what, interval=0.1):
    value = nspawn.wait_for(pred, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return value


# ---------------------------------------------------------------- harness

class Box:
    """The booted container with tcpexecd installed, and what the tests ask
    of it."""

    def __init__(self, c):
        self.c = c
        self.run = c.run
        self.check = c.check

    def install(self):
        for f in [TCPEXECD, TCPEXEC] + UNITS + MANPAGES:
            assert os.path.isfile(f), f"{f} not found: build first, or set the paths"
        names = sorted(os.path.basename(u) for u in UNITS)
        assert names == sorted(["tcpexecd.service", "tcpexecd-inetd@.service", "tcpexecd.socket",
                                "tcpexecd-inetd.socket"]), f"unexpected unit files: {UNITS}"
        service = next(u for u in UNITS if os.path.basename(u) == "tcpexecd.service")
        # The binary goes where the generated unit runs it from.
        m = re.search(r"^ExecStart=(/\S+)", Path(service).read_text(), re.M)
        assert m, f"no ExecStart= in {service}"
        self.c.install(TCPEXECD, m.group(1), 0o755)
        self.c.install(TCPEXEC, CLIENT, 0o755)
        for u in UNITS:
            self.c.install(u, f"/etc/systemd/system/{os.path.basename(u)}", 0o644)
        for page in MANPAGES:
            section = page.rsplit(".", 1)[1]
            self.c.install(page, f"/usr/local/share/man/man{section}/{os.path.basename(page)}",
                           0o644)
        # The configuration goes where this build looks for it.
        usage = self.check(m.group(1), "-h")
        cm = re.search(r"default (/\S+?);", usage)
        assert cm, f"no default configuration path in tcpexecd -h:\n{usage}"
        self.config_path = cm.group(1)
        self.c.write(self.config_path, CONFIG, 0o644)
        # A sanitizer build: LeakSanitizer stops the process with ptrace,
        # which the units' system call filter forbids (rightly), and then
        # fails every exit. Leak checks run outside the container.
        if os.environ.get("TCPEXECD_SANITIZE", "none") not in ("none", ""):
            self.check("systemctl", "set-environment", "ASAN_OPTIONS=detect_leaks=0")
        self.check("systemctl", "daemon-reload")

    # -- systemctl

    def systemctl(self, *args, timeout=60.0):
        return self.check("systemctl", "--no-pager", *args, timeout=timeout)

    def show(self, unit, *props):
        out = self.check("systemctl", "show", unit, "-p", ",".join(props))
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert set(props) <= set(values), f"systemctl show {unit}: {out}"
        return values

    def prop(self, unit, name):
        return self.show(unit, name)[name]

    def reset(self):
        """Every tcpexecd unit stopped, no drop-ins, failures forgotten, the
        configuration as installed."""
        self.run("systemctl", "stop", *OUR_UNITS, "tcpexecd-inetd@*.service", timeout=60)
        self.run("systemctl", "reset-failed", "tcpexecd*", timeout=30)
        self.c.write(self.config_path, CONFIG, 0o644)
        if self.c.remove("/etc/systemd/system/tcpexecd.service.d"):
            self.check("systemctl", "daemon-reload")
        for u in OUR_UNITS:
            st = self.prop(u, "ActiveState")
            assert st == "inactive", f"{u} is {st} after stop"

    # -- clients, run inside the container

    def tcpexec(self, *args, timeout=30.0):
        return self.run(CLIENT, *args, timeout=timeout)

    def client(self, *args):
        return self.c.popen(CLIENT, *args)

    def sh(self, script, timeout=60.0):
        return self.run("sh", "-c", script, timeout=timeout)

    # -- processes

    def unit_procs(self, unit):
        """{pid: (ppid, cmdline)} of the processes in unit's cgroup, as the
        container sees them."""
        cg = self.prop(unit, "ControlGroup")
        if not cg:
            return {}
        script = (
            'for d in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do '
            '  f="$d$1/cgroup.procs"; '
            '  if [ -r "$f" ]; then '
            '    for p in $(cat "$f"); do '
            '      s=$(cat /proc/$p/stat 2>/dev/null) || continue; '
            '      c=$(tr "\\0" " " < /proc/$p/cmdline 2>/dev/null); '
            '      echo "$p ${s##*) } | $c"; '
            '    done; exit 0; '
            '  fi; '
            'done; exit 1')
        r = self.run("sh", "-c", script, "sh", cg)
        assert r.returncode == 0, f"no cgroup.procs for {cg}: {r.stderr}"
        out = {}
        for line in r.stdout.splitlines():
            head, _, cmd = line.partition(" | ")
            f = head.split()
            # f: pid, state, ppid, ...
            if f[1] != "Z":
                out[int(f[0])] = (int(f[2]), cmd.strip())
        return out

    def pids_alive(self, pids):
        """Those of pids that still exist in the container."""
        if not pids:
            return []
        r = self.sh(" ".join(f"[ -d /proc/{p} ] && echo {p};" for p in pids) + " true")
        return [int(x) for x in r.stdout.split()]

    def procs_starting(self, prefix):
        """'PID CMDLINE' of the container's processes whose command line
        starts with prefix."""
        r = self.sh('for p in /proc/[0-9]*; do c=$(tr "\\0" " " < $p/cmdline 2>/dev/null) '
                    f'&& case "$c" in "{prefix}"*) echo "${{p#/proc/}} $c";; esac; done; true')
        return r.stdout.splitlines()

    # -- journal

    def mark(self):
        """Now, for journal(after=...). (Not a cursor: journalctl 252 with
        --after-cursor and a match skips the first matching record.)"""
        return time.time_ns() // 1000

    def journal(self, *match, after=None):
        """The records that match, as dicts; with after, only those that
        journald received after that mark."""
        self.run("journalctl", "--sync", timeout=30)
        r = self.run("journalctl", "--no-pager", "-o", "json", *match, timeout=30)
        out = []
        for line in r.stdout.splitlines():
            if line.strip():
                e = json.loads(line)
                if after is None or int(e["__REALTIME_TIMESTAMP"]) > after:
                    out.append(e)
        return out

    def wait_journal(self, match, pred, what, timeout=LIVE, after=None):
        found = []

        def probe():
            found[:] = [e for e in self.journal(*match, after=after) if pred(e)]
            return found

        try:
            return wait_for(probe, timeout, what, interval=0.3)
        except AssertionError:
            raise AssertionError(f"no journal record {what} for {' '.join(match)} within "
                                 f"{timeout} s; the unit's last records:\n"
                                 + self.unit_log("tcpexecd")) from None

    def unit_log(self, unit, lines=40):
        return self.run("journalctl", "--no-pager", "-u", unit, "-n", str(lines)).stdout

    def invocation_messages(self, unit):
        inv = self.prop(unit, "InvocationID")
        return [e.get("MESSAGE", "") for e in self.journal(f"_SYSTEMD_INVOCATION_ID={inv}")]


@pytest.fixture(scope="session")
def container():
    c = nspawn.Container()
    try:
        c.boot()
    except nspawn.Unavailable as e:
        problems = c.shutdown()
        reason = f"cannot boot a systemd container here: {e}"
        nspawn.log(reason)
        nspawn.unavailable = reason
        assert not problems, f"{reason}; and the cleanup failed: {problems}"
        pytest.skip(reason)
    try:
        box = Box(c)
        box.install()
        yield box
    finally:
        problems = c.shutdown()
        assert not problems, f"container teardown: {problems}"


@pytest.fixture
def box(container):
    container.reset()
    yield container
    container.reset()


def read_line(proc, timeout=LIVE):
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    assert r, "no output from the client"
    return proc.stdout.readline().decode()


def finish(proc, timeout=LIVE):
    try:
        out, err = proc.communicate(timeout=timeout)
    except Exception:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out.decode(), err.decode()


def client_loop(box, n, word):
    """n sequential `tcpexec 127.0.0.1 echo WORD I` inside the container,
    each checked; prints 'ok I' or 'FAIL I rc=... out=...' per run, then
    'end'."""
    script = (f'i=0; while [ $i -lt {n} ]; do i=$((i+1)); '
              f'out=$({CLIENT} 127.0.0.1 echo {word} $i 2>&1); rc=$?; '
              f'if [ $rc -eq 0 ] && [ "$out" = "{word} $i" ]; then echo "ok $i"; '
              'else echo "FAIL $i rc=$rc out=$(printf %s "$out" | tr "\\n" "|")"; fi; '
              'done; echo end')
    return box.c.popen("sh", "-c", script)


def drive_loop(proc, actions, timeout=120.0):
    """Read the loop's lines; once 'ok K' (or a failure at K) has been seen
    for a K in actions, run actions[K](). Returns (ok count, failure lines)."""
    oks, fails, done = 0, [], set()
    deadline = time.monotonic() + timeout
    try:
        for _ in range(100000):
            left = deadline - time.monotonic()
            assert left > 0, f"client loop still running after {timeout} s ({oks} ok, {fails})"
            r, _, _ = select.select([proc.stdout], [], [], left)
            if not r:
                continue
            line = proc.stdout.readline().decode().strip()
            if line in ("end", ""):
                break
            if line.startswith("ok "):
                oks += 1
            else:
                fails.append(line)
            k = int(line.split()[1])
            for at, action in actions.items():
                if k >= at and at not in done:
                    done.add(at)
                    action()
        rc, _, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert rc == 0, err
    assert done == set(actions), f"the loop ended before all actions ran: {sorted(done)}"
    return oks, fails


# ---------------------------------------------------------------- tests

def test_start_reports_ready_and_status(box):
    # Type=notify: `systemctl start` returns once READY=1 arrived.
    box.systemctl("start", "tcpexecd")
    st = box.show("tcpexecd", "ActiveState", "SubState", "StatusText", "MainPID", "Type",
                  "NotifyAccess")
    assert (st["ActiveState"], st["SubState"], st["Type"]) == ("active", "running", "notify"), st
    assert st["StatusText"], st
    assert re.fullmatch(r"serving with 2 workers|2 workers: .*", st["StatusText"]), st
    # Ready means serving: no retry needed.
    r = box.tcpexec("127.0.0.1", "echo", "ready")
    assert (r.returncode, r.stdout) == (0, "ready\n"), r.stderr
    # The main process is the master; its two workers are its children.
    main = int(st["MainPID"])
    procs = box.unit_procs("tcpexecd")
    assert main in procs, procs
    assert sorted(p for p, (ppid, _) in procs.items() if ppid == main) == \
        sorted(p for p in procs if p != main), procs
    assert len(procs) == 3, procs
    status = box.run("systemctl", "--no-pager", "status", "tcpexecd").stdout
    m = re.search(r'^\s*Status: "(.+)"$', status, re.M)
    assert m and m.group(1), f"no Status: line in systemctl status:\n{status}"
    msgs = box.invocation_messages("tcpexecd.service")
    assert "started (2 workers, 2 sockets)" in msgs, msgs


def test_command_through_tcpexec(box):
    box.systemctl("start", "tcpexecd")
    r = box.tcpexec("127.0.0.1", "echo", "hello")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")
    r = box.tcpexec("::1", "echo", "hello", "v6")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello v6\n", "")


def test_commands_get_nothing_of_the_service_environment(box):
    box.systemctl("start", "tcpexecd")
    r = box.tcpexec("127.0.0.1", "env")
    assert r.returncode == 0, r.stderr
    names = sorted(line.split("=", 1)[0] for line in r.stdout.splitlines())
    assert names == ["HOME", "LANG", "PATH", "PWD", "TCPEXEC_COMMAND", "TCPEXEC_REMOTE_ADDR",
                     "TCPEXEC_REMOTE_PORT"], r.stdout


def test_workers_run_batch_and_commands_do_not(box):
    # The hardened unit (SystemCallFilter=, RestrictRealtime=) lets the
    # workers switch to SCHED_BATCH and their commands back: the policy is
    # field 41 of /proc/PID/stat (0 SCHED_OTHER, 3 SCHED_BATCH).
    box.systemctl("start", "tcpexecd")
    main = int(box.prop("tcpexecd", "MainPID"))

    def policy(pid):
        r = box.run("cat", f"/proc/{pid}/stat")
        assert r.returncode == 0, r.stderr
        return int(r.stdout.rsplit(")", 1)[1].split()[38])

    workers = [p for p, (ppid, _) in box.unit_procs("tcpexecd").items() if ppid == main]
    assert len(workers) == 2, workers
    assert [policy(main)] + [policy(w) for w in workers] == [0, 3, 3]
    r = box.tcpexec("127.0.0.1", "stat")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.rsplit(")", 1)[1].split()[38]) == 0, r.stdout


def test_status_report_through_runtime_directory(box):
    # control_socket defaults to /run/tcpexecd/control: RuntimeDirectory=
    # must make that writable for the dynamic user.
    box.systemctl("start", "tcpexecd")
    main = box.prop("tcpexecd", "MainPID")
    tcpexecd = box.prop("tcpexecd", "ExecStart")
    path = re.search(r"path=(\S+)", tcpexecd).group(1)
    out = box.check(path, "-s")
    assert re.match(rf"tcpexecd \S+, master pid {main}, generation 1, ", out), out
    msgs = box.invocation_messages("tcpexecd.service")
    assert not [m for m in msgs if "control socket" in m], msgs


def test_configuration_error_is_not_restarted(box):
    box.c.write(box.config_path, CONFIG.replace("[server]\n", "[server]\nno_such_key = 1\n"))
    r = box.run("systemctl", "start", "tcpexecd")
    assert r.returncode != 0, "start succeeded with a broken configuration"
    time.sleep(1.5)   # a restart would have happened by now (RestartSec=100ms)
    st = box.show("tcpexecd", "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert st == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "3",
                  "NRestarts": "0"}, st
    assert "no_such_key" in box.unit_log("tcpexecd")


def test_failed_reload_keeps_serving(box):
    box.systemctl("start", "tcpexecd")
    main = box.prop("tcpexecd", "MainPID")
    box.c.write(box.config_path, CONFIG.replace("[server]\n", "[server]\nno_such_key = 1\n"))
    box.systemctl("reload", "tcpexecd")
    st = wait_for(lambda: (lambda v: v if v["StatusText"].startswith("reload failed:")
                           and v["SubState"] == "running" else None)(
        box.show("tcpexecd", "ActiveState", "SubState", "StatusText", "MainPID")),
        LIVE, "StatusText to report the failed reload")
    assert "no_such_key" in st["StatusText"], st
    assert (st["ActiveState"], st["MainPID"]) == ("active", main), st
    r = box.tcpexec("127.0.0.1", "echo", "still")
    assert (r.returncode, r.stdout) == (0, "still\n"), r.stderr


def test_journal_audit_record_of_allowed_request(box):
    box.systemctl("start", "tcpexecd")
    token = uuid.uuid4().hex
    r = box.tcpexec("127.0.0.1", "echo", token)
    assert (r.returncode, r.stdout) == (0, f"{token}\n"), r.stderr
    try:
        recs = box.wait_journal(["-u", "tcpexecd", "REMOTE_ADDR=127.0.0.1", "COMMAND=echo"],
                                lambda e: token in e.get("ARGV", ""),
                                "of the echo request", timeout=5)
    except AssertionError as e:
        # What the record looks like, for the report.
        seen = [{k: v for k, v in x.items() if not k.startswith("_")}
                for x in box.journal("-u", "tcpexecd", f"MESSAGE_ID={MSGID_EXECUTED}")
                if token in x.get("ARGV", "")]
        raise AssertionError(f"{e}\nthe record, found by MESSAGE_ID: {seen}") from None
    e = recs[0]
    assert e.get("MESSAGE_ID") == MSGID_EXECUTED, e
    assert e.get("EXIT_STATUS") == "0", e
    assert e.get("DECISION") == "allow", e
    assert e.get("PRIORITY") == "6", e
    assert e.get("BYTES_OUT") == str(len(token) + 1), e
    assert re.fullmatch(r"\d+", e.get("DURATION_USEC", "")), e
    worker = e.get("TCPEXECD_WORKER_PID", "")
    # Workers hand their records to the master, which outlives them (see
    # test_journal_attributes_every_audit_record): _PID is the master's.
    assert e.get("_PID") == box.prop("tcpexecd.service", "MainPID"), e
    assert int(worker) in box.unit_procs("tcpexecd"), e
    assert e.get("_SYSTEMD_UNIT") == "tcpexecd.service", e


@pytest.mark.parametrize("mode", ["daemon", "inetd"])
def test_journal_attributes_every_audit_record(box, mode):
    """Each audit record carries the unit (_SYSTEMD_UNIT), so that
    `journalctl -u` finds it, also when the process that served the request
    exits soon after it: a worker with max_requests = 1, and every
    `tcpexecd -i`. (journald reads the unit of a native-protocol record's
    sender from /proc when the record arrives.)"""
    n = 40
    if mode == "daemon":
        box.c.write(box.config_path, CONFIG.replace("[server]\n", "[server]\nmax_requests = 1\n"),
                    0o644)
        box.systemctl("start", "tcpexecd")
        port, unit = "5151", "tcpexecd.service"
    else:
        box.systemctl("start", "tcpexecd-inetd.socket")
        port, unit = "5152", "tcpexecd-inetd@"
    mark = box.mark()
    token = uuid.uuid4().hex
    for i in range(n):
        r = box.tcpexec("-p", port, "127.0.0.1", "echo", token, str(i))
        assert (r.returncode, r.stdout) == (0, f"{token} {i}\n"), r.stderr
    # The daemon's records are native (with fields); `tcpexecd -i` ends
    # right after its record, so it writes the record to its stderr stream,
    # which systemd attributed to the unit when it connected it.
    if mode == "daemon":
        match = ["SYSLOG_IDENTIFIER=tcpexecd", f"MESSAGE_ID={MSGID_EXECUTED}"]
        mine = lambda e: token in e.get("ARGV", "")  # noqa: E731
    else:
        match = ["SYSLOG_IDENTIFIER=tcpexecd", "PRIORITY=6"]
        mine = lambda e: f'"{token}"' in str(e.get("MESSAGE", ""))  # noqa: E731
    wait_for(lambda: len([e for e in box.journal(*match, after=mark) if mine(e)]) >= n,
             LIVE, f"{n} audit records")
    recs = [e for e in box.journal(*match, after=mark) if mine(e)]
    assert len(recs) == n, recs
    lost = [e.get("ARGV", e.get("MESSAGE")) for e in recs
            if not e.get("_SYSTEMD_UNIT", "").startswith(unit)]
    assert not lost, (f"{len(lost)} of {n} audit records have no _SYSTEMD_UNIT={unit}... "
                      f"(invisible to journalctl -u): {lost}")


def test_journal_audit_record_of_denied_request(box):
    box.systemctl("start", "tcpexecd")
    token = uuid.uuid4().hex
    r = box.tcpexec("127.0.0.1", "nosuchcommand", token)
    assert r.returncode == 255 and "unknown command" in r.stderr, r
    recs = box.wait_journal(["-u", "tcpexecd", f"MESSAGE_ID={MSGID_DENIED}"],
                            lambda e: token in e.get("ARGV", ""), "of the denied request")
    e = recs[0]
    assert e.get("DECISION") == "deny", e
    assert e.get("PRIORITY") == "5", e
    assert e.get("REMOTE_ADDR") == "127.0.0.1", e
    assert e.get("ERROR") == "unknown command", e
    assert "EXIT_STATUS" not in e, e


def test_socket_activation(box):
    box.systemctl("start", "tcpexecd.socket")
    assert box.prop("tcpexecd.socket", "ActiveState") == "active"
    assert box.prop("tcpexecd.service", "ActiveState") == "inactive"
    # The first connections start the service; none is lost meanwhile.
    r = box.sh(f"for i in 1 2 3 4 5; do {CLIENT} 127.0.0.1 echo first $i & done; wait")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == [f"first {i}" for i in range(1, 6)], r
    assert r.stderr == ""
    st = box.show("tcpexecd.service", "ActiveState", "SubState", "TriggeredBy")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running"), st
    assert "tcpexecd.socket" in st["TriggeredBy"], st
    msgs = box.invocation_messages("tcpexecd.service")
    for addr in ("127.0.0.1:5151", "[::1]:5151"):
        assert f"listening on {addr} (from systemd, name tcpexecd)" in msgs, msgs
    assert not [m for m in msgs if re.fullmatch(r"listening on \S+", m)], msgs


def test_reload_under_load(box):
    box.systemctl("start", "tcpexecd")
    main = box.prop("tcpexecd", "MainPID")
    reloads = []

    def reload():
        box.systemctl("reload", "tcpexecd")
        reloads.append(time.monotonic())

    loop = client_loop(box, 100, "load")
    oks, fails = drive_loop(loop, {10: reload, 40: reload, 70: reload})
    assert (oks, fails) == (100, []), f"{len(fails)} failed requests: {fails[:10]}"
    assert len(reloads) == 3
    st = box.show("tcpexecd", "ActiveState", "MainPID", "NRestarts")
    assert st == {"ActiveState": "active", "MainPID": main, "NRestarts": "0"}, st
    msgs = box.invocation_messages("tcpexecd.service")
    assert "configuration reloaded (generation 4)" in msgs, msgs[-20:]


def test_restart_under_load_with_socket(box):
    box.systemctl("start", "tcpexecd.socket", "tcpexecd.service")
    mains = [box.prop("tcpexecd", "MainPID")]

    def restart():
        box.systemctl("restart", "tcpexecd")
        mains.append(box.prop("tcpexecd", "MainPID"))

    loop = client_loop(box, 100, "load")
    oks, fails = drive_loop(loop, {20: restart, 60: restart})
    assert (oks, fails) == (100, []), f"{len(fails)} failed requests: {fails[:10]}"
    assert len(set(mains)) == 3, f"MainPID did not change on restart: {mains}"
    assert box.prop("tcpexecd.socket", "ActiveState") == "active"
    assert box.prop("tcpexecd.service", "ActiveState") == "active"


def test_stop_drains_request_in_flight(box):
    box.systemctl("start", "tcpexecd")
    inv = box.prop("tcpexecd", "InvocationID")
    mark = box.mark()
    client = box.client("127.0.0.1", "slow", "2")
    try:
        assert read_line(client) == "started\n"
        t0 = time.monotonic()
        box.systemctl("stop", "tcpexecd")
        took = time.monotonic() - t0
    finally:
        rc, out, err = finish(client)
    assert (rc, out, err) == (0, "done\n", ""), (rc, out, err)
    assert took >= 1.0, f"stop returned after {took:.2f} s, before the command ended"
    st = box.show("tcpexecd", "ActiveState", "Result", "ExecMainStatus")
    assert st == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, st
    msgs = [e.get("MESSAGE", "") for e in box.journal(f"_SYSTEMD_INVOCATION_ID={inv}")]
    assert "graceful stop, deadline 20s" in msgs, msgs[-20:]
    assert "stopped" in msgs, msgs[-20:]
    # The audit record is there (whether journald could still attribute it
    # to the unit is test_journal_attributes_every_audit_record's matter).
    box.wait_journal(["SYSLOG_IDENTIFIER=tcpexecd", f"MESSAGE_ID={MSGID_EXECUTED}"],
                     lambda e: e.get("ARGV") == '"slow" "2"' and e.get("EXIT_STATUS") == "0",
                     "of the drained request", after=mark)


def test_kill_master_restarts_without_leftovers(box):
    box.systemctl("start", "tcpexecd")
    old_main = int(box.prop("tcpexecd", "MainPID"))
    client = box.client("127.0.0.1", "hold", "61")
    try:
        assert read_line(client) == "started\n"
        old = box.unit_procs("tcpexecd")
        sleeps = [p for p, (_, cmd) in old.items() if cmd.startswith("sleep 61")]
        assert len(sleeps) == 1, old
        assert len(old) == 4, old   # master, 2 workers, the command
        box.systemctl("kill", "-s", "KILL", "--kill-who=main", "tcpexecd")

        def restarted():
            st = box.show("tcpexecd", "ActiveState", "SubState", "MainPID", "NRestarts")
            ok = (st["ActiveState"] == "active" and st["SubState"] == "running"
                  and st["MainPID"] not in ("0", str(old_main)) and st["NRestarts"] == "1")
            return st if ok else None
        st = wait_for(restarted, LIVE, "systemd to restart tcpexecd")
        rc, out, err = finish(client)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert rc == 255, (rc, out, err)   # the connection died with the worker
    new = box.unit_procs("tcpexecd")
    assert not set(old) & set(new), f"old processes still in the unit: old {old}, now {new}"
    assert not box.pids_alive(list(old)), f"old processes alive: {box.pids_alive(list(old))}"
    assert not box.procs_starting("sleep 61"), box.procs_starting("sleep 61")
    assert len(new) == 3 and int(st["MainPID"]) in new, new
    r = box.tcpexec("127.0.0.1", "echo", "again")
    assert (r.returncode, r.stdout) == (0, "again\n"), r.stderr


def test_watchdog(box):
    box.systemctl("start", "tcpexecd")
    assert box.prop("tcpexecd", "WatchdogUSec") == "30s"
    box.systemctl("stop", "tcpexecd")
    box.c.write("/etc/systemd/system/tcpexecd.service.d/watchdog.conf",
                "[Service]\nWatchdogSec=2s\n")
    box.check("systemctl", "daemon-reload")
    box.systemctl("start", "tcpexecd")
    st = box.show("tcpexecd", "WatchdogUSec", "MainPID")
    assert st["WatchdogUSec"] == "2s", st
    time.sleep(5)
    after = box.show("tcpexecd", "ActiveState", "SubState", "MainPID", "NRestarts",
                     "WatchdogTimestampMonotonic")
    assert (after["ActiveState"], after["SubState"], after["MainPID"], after["NRestarts"]) == \
        ("active", "running", st["MainPID"], "0"), after
    # The last ping is recent: within the 2 s interval. (The container has
    # no time namespace: its CLOCK_MONOTONIC is ours.)
    age = time.monotonic() - int(after["WatchdogTimestampMonotonic"]) / 1e6
    assert 0 <= age < 2.0, f"last watchdog ping {age:.2f} s ago"
    assert "Watchdog timeout" not in box.unit_log("tcpexecd")


def test_inetd_socket(box):
    box.systemctl("start", "tcpexecd-inetd.socket")
    mark = box.mark()
    r = box.tcpexec("-p", "5152", "127.0.0.1", "echo", "via-inetd")
    assert (r.returncode, r.stdout, r.stderr) == (0, "via-inetd\n", "")
    assert box.prop("tcpexecd.service", "ActiveState") == "inactive"
    assert box.prop("tcpexecd-inetd.socket", "NAccepted") == "1"
    # The audit record, written by `tcpexecd -i` itself as a line on its
    # stderr stream (its unit is test_journal_attributes_every_audit_record's
    # matter), at priority info.
    recs = box.wait_journal(["SYSLOG_IDENTIFIER=tcpexecd", "PRIORITY=6"],
                            lambda e: 'argv=["echo" "via-inetd"]' in str(e.get("MESSAGE", "")),
                            "of the inetd request", after=mark)
    assert "status=exit:0" in recs[0]["MESSAGE"], recs[0]


def test_analyze_security_and_verify(box):
    r = box.run("systemd-analyze", "security", "--offline=yes", "--no-pager",
                "/etc/systemd/system/tcpexecd.service")
    m = re.search(r"Overall exposure level for tcpexecd\.service: (\d+\.\d+)", r.stdout)
    assert m, f"no exposure level:\n{r.stdout}{r.stderr}"
    assert float(m.group(1)) <= 2.5, f"exposure {m.group(1)}:\n{r.stdout}"

    r = box.run("systemd-analyze", "verify", "tcpexecd.service", "tcpexecd.socket",
                "tcpexecd-inetd.socket", "tcpexecd-inetd@.service", timeout=60)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "tcpexecd" in line]
    assert not ours, "systemd-analyze verify:\n" + "\n".join(ours)
    if r.returncode != 0:
        nspawn.log(f"systemd-analyze verify exited {r.returncode} about other units:\n"
                   f"{r.stdout}{r.stderr}")
