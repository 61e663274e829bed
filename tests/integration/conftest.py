# SPDX-License-Identifier: MIT
"""
Harness for the integration tests of tcpexecd's process model: starts the
real daemon (foreground or daemon mode) on loopback ephemeral ports, reads
its processes from /proc, captures its logs, talks to its workers and always
tears the whole process tree down again, checking that nothing is left.

Every wait here is bounded both in time and in iterations; the only timing
assertions are generous liveness bounds. The pieces every helper layer
shares (waits, /proc identity and teardown, log readers, sockets, frame
encoding) live in harness.py.

Each client session runs the `worker` command that every test config
carries (COMMAND_SECTION): it prints `tcpexecd worker PID` (the pid of the
worker serving the connection) and echoes its input until the client ends
it, so a test knows which worker holds which connection.

Run: meson test -C BUILD --suite integration, or directly
  TCPEXECD=BUILD/tcpexecd pytest-3 -v tests/integration/test_workers.py
(TCPEXECD defaults to ../../build/tcpexecd relative to this directory).
"""


import os
import re
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The shared pieces live in harness.py; they are imported here by name
# because the test files import them from conftest.
from harness import (CLK_TCK, POLL, alive, children, frame, ipv6_loopback,  # noqa: F401
                     kill_tree, open_socket, parse_addr, proc_age, proc_stat,
                     procs_with_arg, reap, reap_adopted, same_proc, set_subreaper,
                     socket_inodes, take_frame, wait_all_gone, wait_for)
import harness

TESTS_DIR = Path(__file__).resolve().parent
BINARY = os.environ.get("TCPEXECD") or str(
    (TESTS_DIR / ".." / ".." / "build" / "tcpexecd").resolve())
VERSION = "0.1.0"
SCRUBBED_ENV = harness.SUPERVISOR_ENV


def require_binary():
    assert os.access(BINARY, os.X_OK), \
        f"tcpexecd binary not found at {BINARY}: build it and set TCPEXECD"


def clean_env(extra=None):
    return harness.clean_env(extra)


# ---------------------------------------------------------------- /proc

def wait_exit(ident, timeout):
    """Wait for a process that is not a Popen child (daemon mode) to end.
    Returns its exit status if we could reap it (adopted), else None;
    raises AssertionError if it is still running after timeout."""
    status = [None]

    def gone():
        s = reap(ident)
        if s is not None:
            status[0] = s
        st = same_proc(ident)
        return st is None or st.state == "Z" and st.ppid != os.getpid()

    wait_for(gone, timeout, f"process {ident[0]} to exit")
    if status[0] is None:
        return None
    return os.waitstatus_to_exitcode(status[0])


def tcp_listen_ports(pid):
    """Loopback TCP ports on which process pid holds a listening socket."""
    inodes = socket_inodes(pid)
    if not inodes:
        return []
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = TCP_LISTEN
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


# ---------------------------------------------------------------- sockets

# The session used by every test: a framed client (docs/protocol.md) runs
# the `worker` command of COMMAND_SECTION, which prints the pid of the worker
# that serves the connection (the command's parent) and then echoes its
# standard input. A connection is "in flight" from the banner until the
# client ends the command's input; that is when a worker is busy.
COMMAND = "worker"
COMMAND_SECTION = {
    "shell": "yes",
    "script": 'echo "tcpexecd worker $PPID" && exec cat',
    "timeout": "10m",
}
F_HELLO, F_REQUEST, F_STDIN, F_STDIN_EOF = \
    harness.HELLO, harness.REQUEST, harness.STDIN, harness.STDIN_EOF
F_HELLO_OK, F_STDOUT, F_STDERR, F_EXIT, F_ERROR = \
    harness.HELLO_OK, harness.STDOUT, harness.STDERR, harness.EXIT, harness.ERROR
MAX_FRAME = 1 << 20


def session_start(command=COMMAND):
    """HELLO (version 1, no fields) with the REQUEST pipelined behind it."""
    return harness.hello_frame() + harness.request_frame([command], no_stdin=False)


def open_session(addr, timeout=5.0):
    """Connected socket whose HELLO and REQUEST are sent: a worker that
    accepts it answers without waiting for anything else."""
    s = open_socket(addr, timeout)
    try:
        s.sendall(session_start())
    except BaseException:
        s.close()
        raise
    return s


BANNER = re.compile(rb"tcpexecd worker (\d+)\n")


class Conn:
    """A session whose banner has been read (sock from open_session())."""

    def __init__(self, sock, timeout=5.0):
        self.sock = sock
        self.buf = b""
        self.out = b""
        ftype, payload = self._frame(timeout)
        assert ftype == F_HELLO_OK and payload[:5] == b"TCPX\x01", \
            f"bad first frame {ftype:#x} {self._describe(ftype, payload)}"
        self.worker_pid = self._banner(timeout)

    def _banner(self, timeout):
        """Read the command's first line; the pid of the worker in it."""
        self._stdout_until(lambda: b"\n" in self.out, timeout, "the banner")
        line, _, self.out = self.out.partition(b"\n")
        self.banner = line + b"\n"
        m = BANNER.fullmatch(self.banner)
        assert m, f"bad banner {self.banner!r}"
        return int(m.group(1))

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        return self.sock.recv(65536)

    def _frame(self, timeout):
        """The next server frame as (type, payload); bounded in time."""
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            f, self.buf = take_frame(self.buf, MAX_FRAME)
            if f is not None:
                return f
            chunk = self._recv(deadline)
            assert chunk, f"connection closed mid-session (pending {self.buf!r})"
            self.buf += chunk
        raise AssertionError("no frame")

    def _stdout_until(self, done, timeout, what):
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            if done():
                return
            ftype, payload = self._frame(max(deadline - time.monotonic(), 0.001))
            if ftype != F_STDOUT:
                raise AssertionError(
                    f"waiting for {what}: frame {ftype:#x} {self._describe(ftype, payload)}")
            self.out += payload
        raise AssertionError(f"no {what}")

    @staticmethod
    def _describe(ftype, payload):
        if ftype == F_ERROR and len(payload) >= 2:
            return f"ERROR {struct.unpack('>H', payload[:2])[0]}: {payload[2:]!r}"
        return repr(payload[:200])

    def send(self, data):
        """Bytes for the command's standard input."""
        self.sock.sendall(frame(F_STDIN, data))

    def echo(self, data, timeout=5.0):
        self.send(data)
        self._stdout_until(lambda: len(self.out) >= len(data), timeout, "the echo")
        got, self.out = self.out, b""
        assert got == data, f"echo mismatch: sent {data!r}, got {got!r}"

    def end_request(self, timeout=5.0):
        """End the command's input and check that it exits 0; the connection
        stays open for another request. Returns the output not yet consumed
        by echo()."""
        self.sock.sendall(frame(F_STDIN_EOF))
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            ftype, payload = self._frame(max(deadline - time.monotonic(), 0.001))
            if ftype == F_STDOUT:
                self.out += payload
                continue
            assert ftype == F_EXIT, f"final frame {ftype:#x} {self._describe(ftype, payload)}"
            assert payload[:4] == b"\0\0\0\0", f"command did not exit 0: {payload!r}"
            break
        got, self.out = self.out, b""
        return got

    def next_request(self, timeout=5.0):
        """The next request on the same connection, after end_request();
        returns the pid of the worker in its banner."""
        self.sock.sendall(harness.request_frame([COMMAND], no_stdin=False))
        return self._banner(timeout)

    def finish(self, timeout=5.0):
        """End the command's input, check that it exits 0, then half-close
        and read to EOF. Returns the output not yet consumed by echo()."""
        deadline = time.monotonic() + timeout
        got = self.end_request(timeout)
        self.sock.shutdown(socket.SHUT_WR)
        rest = self.buf + read_to_eof(self.sock, max(deadline - time.monotonic(), 0.001))
        assert rest == b"", f"bytes after the final status: {rest!r}"
        return got

    def wait_closed(self, timeout):
        """Wait until the server closes (EOF or reset), discarding data."""
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            try:
                if not self._recv(deadline):
                    return
            except (ConnectionResetError, BrokenPipeError):
                return
            except socket.timeout:
                break
        raise AssertionError(f"server did not close the connection within {timeout} s")

    def close(self):
        self.sock.close()


def read_to_eof(sock, timeout, limit=1 << 20):
    deadline = time.monotonic() + timeout
    buf = b""
    for _ in range(limit):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no EOF within {timeout} s (got {buf!r})")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
        assert len(buf) <= limit, "runaway reply"
    raise AssertionError("no EOF")


def exchange(addr, payload=b"x", timeout=5.0):
    """One full session: connect, banner, input, end of input, echo, exit
    status, EOF. Returns the serving worker's pid."""
    with open_session(addr, timeout) as s:
        c = Conn(s, timeout)
        c.send(payload)
        rest = c.finish(timeout)
        assert rest == payload, f"echo mismatch: sent {payload!r}, got {rest!r}"
        return c.worker_pid


# ---------------------------------------------------------------- status

@dataclass
class Row:
    slot: int
    pid: int
    gen: int
    state: str
    reqs: int
    age: str
    peer: str | None
    command: str


@dataclass
class Status:
    version: str
    master_pid: int
    generation: int
    uptime: int
    total: int
    starting: int
    idle: int
    busy: int
    exiting: int
    floor: int
    max: int
    served: int
    rows: list = field(default_factory=list)
    text: str = ""


STATES = ("starting", "idle", "busy", "exiting")


def parse_status(text):
    lines = text.splitlines()
    assert len(lines) >= 4, f"short status report:\n{text}"
    m1 = re.fullmatch(r"tcpexecd (\S+), master pid (\d+), generation (\d+), up (\d+) s",
                      lines[0])
    m2 = re.fullmatch(r"workers: total (\d+), starting (\d+), idle (\d+), busy (\d+), "
                      r"exiting (\d+) \(floor (\d+), max (\d+)\)", lines[1])
    m3 = re.fullmatch(r"served: (\d+)", lines[2])
    assert m1 and m2 and m3, f"bad status header:\n{text}"
    assert lines[3].split()[:8] == ["SLOT", "PID", "GEN", "STATE", "REQS", "AGE",
                                    "PEER", "COMMAND"], f"bad table header:\n{text}"
    st = Status(m1.group(1), int(m1.group(2)), int(m1.group(3)), int(m1.group(4)),
                *map(int, m2.groups()), int(m3.group(1)), text=text)
    for line in lines[4:]:
        if not line.strip():
            continue
        f = line.split(None, 7)
        assert len(f) >= 6 and f[0].isdigit() and f[1].isdigit() and f[2].isdigit() \
            and f[4].isdigit() and f[3] in STATES, f"bad worker row {line!r}:\n{text}"
        st.rows.append(Row(int(f[0]), int(f[1]), int(f[2]), f[3], int(f[4]), f[5],
                           f[6] if len(f) > 6 else None, f[7] if len(f) > 7 else ""))
    return st


def run_status(conf, timeout=10):
    r = subprocess.run([BINARY, "-s", "-c", str(conf)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout, env=clean_env())
    assert r.returncode == 0, f"tcpexecd -s exited {r.returncode}: {r.stderr}"
    return parse_status(r.stdout)


# ---------------------------------------------------------------- config

def config_text(keys, command=True):
    """A config file: the session's command section, then [server] from a
    dict (list values repeat the key). [server] comes last, so that a line
    appended to the text belongs to it."""
    out = []
    if command:
        out.append(f"[command {COMMAND}]")
        out += [f"{k} = {v}" for k, v in COMMAND_SECTION.items()]
        out.append("")
    out.append("[server]")
    for k, v in keys.items():
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            out.append(f"{k} = {item}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- processes

LOG_PREFIX = re.compile(r"tcpexecd\[(\d+)\]: ")


class Daemon(harness.Piped):
    """One `tcpexecd -f -c CONF` under test."""

    def __init__(self, conf, keys, args=(), env=None):
        self.conf = conf
        self.keys = dict(keys)
        self.args = list(args)
        self.env = clean_env(env)
        self.proc = None
        self.ident = None
        self.seen = {}        # pid -> ident of every worker ever observed
        self.conns = []
        self.addresses = []   # [(text, (family, sockaddr))] from stdout

    # -- life cycle

    def write_config(self, **updates):
        self.keys.update(updates)
        self.conf.write_text(config_text(self.keys))

    def start(self, wait_ready=True, timeout=10.0):
        require_binary()
        self.spawn([BINARY, "-f", "-c", str(self.conf), *self.args], self.env)
        if wait_ready:
            n = self.expected_listeners()
            self.addresses = [(t, parse_addr(t)) for t in self.wait_listening(n, timeout)]
        return self

    def expected_listeners(self):
        n = sum(1 for a in self.args if a in ("-l", "--listen"))
        if n:
            return n
        return harness.expected_listeners(self.keys.get("listen", []))

    def kill(self, sig):
        assert self.running(), "master is not running"
        os.kill(self.pid, sig)

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"master still running after {timeout} s") from None

    # -- output

    def stdout_lines(self):
        return self.out.snapshot()

    def stderr_text(self, tail=40):
        """The last lines of the log, for failure messages."""
        lines = self.log()
        cut = [f"... ({len(lines) - tail} earlier lines)"] if len(lines) > tail else []
        return "\n".join(cut + lines[-tail:])

    log_text = stderr_text

    def log_mark(self):
        return self.mark()

    def wait_log(self, pattern, since=0, count=1, timeout=5.0):
        return self.wait_log_matches(pattern, since, count, timeout, tail=40)

    # -- processes

    def worker_stats(self):
        ws = children(self.pid)
        for st in ws:
            self.seen.setdefault(st.pid, st.ident)
        return ws

    def workers(self):
        return sorted(st.pid for st in self.worker_stats())

    def worker_ident(self, pid):
        self.worker_stats()
        return self.seen[pid]

    def zombies(self):
        return [st.pid for st in children(self.pid, zombies=True) if st.state == "Z"]

    def wait_workers(self, n, timeout=5.0, exclude=()):
        """Wait until exactly n workers run, none of them in exclude."""
        ex = set(exclude)
        return wait_for(
            lambda: (lambda ws: ws if len(ws) == n and not ex & set(ws) else None)(
                self.workers()),
            timeout, f"{n} workers (excluding {sorted(ex)}); have {self.workers()}")

    def wait_settled(self, n, min_age=1.5, timeout=10.0):
        """Exactly n workers, each older than min_age seconds (so that killing
        one is not counted by the master as a failed start)."""
        return wait_for(
            lambda: (lambda ws: sorted(s.pid for s in ws)
                     if len(ws) == n and all(proc_age(s) >= min_age for s in ws)
                     else None)(self.worker_stats()),
            timeout, f"{n} workers older than {min_age} s; have {self.workers()}")

    def assert_no_zombies(self, settle=3.0):
        try:
            wait_for(lambda: not self.zombies(), settle, "zombie workers to be reaped")
        except AssertionError:
            raise AssertionError(f"zombie children of the master: {self.zombies()}") from None

    def assert_gone(self, pids, timeout=5.0):
        idents = [self.seen[p] for p in pids if p in self.seen]
        left = wait_all_gone(idents, timeout)
        assert not left, f"processes still present: {[i[0] for i in left]}"

    # -- clients

    def addr(self, i=0):
        return self.addresses[i][1]

    def port(self, i=0):
        return self.addresses[i][1][1][1]

    def open(self, i=0, timeout=5.0):
        """A session socket, request sent, banner not read (see Conn)."""
        s = open_session(self.addr(i), timeout)
        self.conns.append(s)
        return s

    def connect(self, i=0, timeout=5.0):
        return Conn(self.open(i, timeout), timeout)

    def exchange(self, payload=b"x", i=0, timeout=5.0):
        return exchange(self.addr(i), payload, timeout)

    def status(self):
        return run_status(self.conf)

    # -- teardown

    def cleanup(self):
        problems = []
        if self.proc is None:
            return
        try:
            if self.running():
                try:
                    self.worker_stats()
                    self.assert_no_zombies()
                except AssertionError as e:
                    problems.append(str(e))
        finally:
            for s in self.conns:
                s.close()
            extra = [st.ident for st in procs_with_arg(str(self.conf))]
            killed = kill_tree([self.ident], list(self.seen.values()) + extra)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                problems.append("master did not die on SIGKILL")
            self.close_pipes()
            left = wait_all_gone(set(killed) | set(self.seen.values()))
            if left:
                problems.append(f"processes left after teardown: {[i[0] for i in left]}")
        assert not problems, "; ".join(problems)


@pytest.fixture
def subreaper():
    """Adopt the orphans of the test's processes (see set_subreaper). At
    teardown, which runs after that of every fixture depending on this one,
    the zombies adopted meanwhile are reaped: by then each Popen of the test
    has been waited for, so none of them is a child that subprocess owns."""
    on = set_subreaper(True)
    yield on
    reap_adopted()
    set_subreaper(False)


@pytest.fixture
def sockdir():
    """A short directory for Unix sockets (sun_path holds 108 bytes, and
    pytest's tmp_path can be longer than that)."""
    d = tempfile.mkdtemp(prefix="tcpx-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def base_config(sockdir):
    """Keys every test config starts from: one ephemeral loopback port and a
    control socket of its own (never the system-wide default)."""
    return {"listen": ["127.0.0.1:0"], "control_socket": str(sockdir / "control")}


@pytest.fixture
def start_daemon(subreaper, tmp_path, base_config):
    """Factory: start_daemon(keys, args=(), env=None, wait_ready=True) -> Daemon."""
    made = []

    def make(keys=None, args=(), env=None, wait_ready=True, name="tcpexecd.conf"):
        cfg = dict(base_config)
        cfg.update(keys or {})
        d = Daemon(tmp_path / name, cfg, args, env)
        d.write_config()
        made.append(d)
        return d.start(wait_ready=wait_ready)

    yield make
    problems = []
    for d in made:
        try:
            d.cleanup()
        except AssertionError as e:
            problems.append(str(e))
    assert not problems, "; ".join(problems)


@pytest.fixture
def cleanup_by_conf(subreaper):
    """Register config paths; at teardown every process started with one of
    them (and its descendants) is killed and must be gone."""
    confs, idents = [], []

    class Registry:
        def conf(self, path):
            confs.append(str(path))

        def track(self, pid):
            st = proc_stat(pid)
            if st is not None:
                idents.append(st.ident)
            return st.ident if st else None

    yield Registry()
    found = [st.ident for c in confs for st in procs_with_arg(c)]
    killed = kill_tree(found + idents)
    left = wait_all_gone(set(killed) | set(idents))
    assert not left, f"processes left after teardown: {[i[0] for i in left]}"


def run_bounded(args, timeout=10.0, env=None, cleanup=None):
    """Run tcpexecd with args, expecting it to exit by itself. On timeout
    its process tree is killed and the test fails."""
    require_binary()
    p = subprocess.Popen([BINARY, *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env(env), start_new_session=True)
    ident = proc_stat(p.pid).ident
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        killed = kill_tree([ident])
        p.communicate(timeout=10)
        wait_all_gone(killed)
        raise AssertionError(f"tcpexecd {' '.join(args)} still running after {timeout} s") \
            from None
    return subprocess.CompletedProcess(p.args, p.returncode,
                                       out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


def busy_listener(family=socket.AF_INET, host="127.0.0.1"):
    """A listening socket on an ephemeral port, to provoke EADDRINUSE."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(1)
    return s


def readable(socks):
    r, _, _ = select.select(socks, [], [], 0)
    return r
