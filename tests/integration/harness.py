# SPDX-License-Identifier: MIT
"""
What every integration helper layer needs, in one place: bounded waits,
process identity and liveness read from /proc ((pid, starttime), which
survives PID reuse), killing only processes a test started and checking
that none is left, a process whose stdout and stderr are read line by line
by threads (with marks into the log), the `listening on` lines of
`tcpexecd -f -c CONF`, loopback sockets and free ports, and the framed
protocol's encoding (docs/protocol.md).

A plain module, imported by conftest.py (process-model tests), execfix.py
(remote-execution tests), secfix.py (security tests) and
test_systemd_local.py; the pytest fixtures stay in those files. Each keeps
its own client (a session Conn, a raw Frames reader, a TLS-capable Framed,
a one-shot request), because their handling of EOF, resets and timeouts is
what their tests assert on; only the frame codec under them is shared.
"""

import ctypes
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

POLL = 0.05
# Liveness bound for "this should be over by now": generous, never a
# measurement of speed.
LIVE = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Variables that would make the daemon believe it runs under systemd
# (socket activation, sd_notify, watchdog, journal) or inject faults. The
# tests scrub them and set exactly the ones a case is about.
SUPERVISOR_ENV = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
                  "WATCHDOG_PID", "WATCHDOG_USEC", "JOURNAL_STREAM", "INVOCATION_ID",
                  "TCPEXECD_TEST_FAULT")


def binaries(default_build):
    """(tcpexecd, tcpexec): $TCPEXECD and $TCPEXEC (meson sets them), else
    the ones in the build directory default_build at the top of the tree."""
    build = Path(__file__).resolve().parent.parent.parent / default_build
    return (os.environ.get("TCPEXECD") or str(build / "tcpexecd"),
            os.environ.get("TCPEXEC") or str(build / "tcpexec"))


def clean_env(extra=None, scrub=SUPERVISOR_ENV):
    """This process's environment without the variables in scrub, plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in scrub}
    env.update(extra or {})
    return env


def wait_for(pred, timeout, what, interval=POLL):
    """Poll pred() until it returns a true value; bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------- /proc

@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    starttime: int

    @property
    def ident(self):
        """(pid, starttime): a process identity that survives PID reuse."""
        return (self.pid, self.starttime)


def proc_stat(pid):
    """The ProcStat of pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split at the last ')'.
    close = data.rindex(")")
    comm = data[data.index("(") + 1:close]
    f = data[close + 2:].split()
    return ProcStat(pid=int(pid), comm=comm, state=f[0], ppid=int(f[1]),
                    utime=int(f[11]), stime=int(f[12]), starttime=int(f[19]))


def all_procs(zombies=True):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(name)
            if st is not None and (zombies or st.state != "Z"):
                out.append(st)
    return out


def proc_age(st):
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - st.starttime / CLK_TCK


def children(pid, zombies=False):
    return [st for st in all_procs() if st.ppid == pid and (zombies or st.state != "Z")]


def descendants(pids, zombies=True):
    """The ProcStat of every process below pids (zombies too, unless told)."""
    by_parent = {}
    for st in all_procs(zombies):
        by_parent.setdefault(st.ppid, []).append(st)
    out, todo = [], list(pids)
    for _ in range(100000):
        if not todo:
            break
        for st in by_parent.get(todo.pop(), []):
            out.append(st)
            todo.append(st.pid)
    return out


def same_proc(ident):
    """The ProcStat of ident if that very process still exists, else None."""
    st = proc_stat(ident[0])
    if st is None or st.starttime != ident[1]:
        return None
    return st


def alive(ident):
    st = same_proc(ident)
    return st is not None and st.state != "Z"


def reap(ident):
    """Reap ident if it is an adopted zombie child of ours; its wait status
    or None."""
    st = same_proc(ident)
    if st is None or st.ppid != os.getpid() or st.state != "Z":
        return None
    try:
        pid, status = os.waitpid(ident[0], os.WNOHANG)
    except ChildProcessError:
        return None
    return status if pid else None


def lingering(ident):
    """True while ident exists as something we are responsible for: a live
    process, or a zombie that is ours to reap (without the subreaper, the
    zombies of PID 1 are outside our reach and not counted)."""
    reap(ident)
    st = same_proc(ident)
    if st is None:
        return False
    return st.state != "Z" or st.ppid == os.getpid()


def procs_with_arg(arg, zombies=True):
    """Processes whose argv contains arg as a whole word (a unique tmp path
    or marker of the test), this one excepted."""
    out = []
    want = arg.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if want in argv:
            st = proc_stat(name)
            if st is not None and (zombies or st.state != "Z"):
                out.append(st)
    return out


def kill_idents(idents, sig=signal.SIGKILL):
    """Signal each (pid, starttime) that is still that very process (a
    zombie included: the signal is harmless there)."""
    for ident in idents:
        if same_proc(ident) is not None:
            try:
                os.kill(ident[0], sig)
            except ProcessLookupError:
                pass


def kill_tree(roots, extra=()):
    """SIGKILL the processes roots (idents), their descendants and extra.

    The roots are stopped first so that a master cannot fork a replacement
    between our snapshot of its children and the kill. Returns the idents
    that were signalled.
    """
    targets = {}
    for ident in list(roots) + list(extra):
        if alive(ident):
            targets[ident[0]] = ident
    kill_idents(targets.values(), signal.SIGSTOP)
    for _ in range(3):
        for st in descendants([i[0] for i in targets.values()]):
            if st.pid not in targets and st.state != "Z":
                targets[st.pid] = st.ident
                try:
                    os.kill(st.pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
    kill_idents(targets.values())
    return list(targets.values())


def wait_all_gone(idents, timeout=5.0):
    """Wait until none of idents lingers; returns the ones that still do."""
    idents = list(idents)
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL) + 2):
        left = [i for i in idents if lingering(i)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)
    return [i for i in idents if lingering(i)]


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def set_subreaper(on):
    """PR_SET_CHILD_SUBREAPER on this (pytest's) process; True if it took.

    PID 1 of a container often does not reap orphans, and a daemon-mode
    tcpexecd (double fork) or the workers of a killed master would otherwise
    be re-parented there and linger as zombies forever. As a subreaper this
    process adopts them instead, can reap them by PID and can tell precisely
    whether anything was left behind. Only switched on for the duration of
    a test that asks for it, so that other tests are not affected.
    """
    try:
        return _libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_adopted():
    """Reap the zombies this process adopted as a subreaper. Only to be
    called once every Popen of the test has been waited for, so that none
    of them is a child that subprocess owns."""
    for st in children(os.getpid(), zombies=True):
        if st.state == "Z":
            try:
                os.waitpid(st.pid, os.WNOHANG)
            except ChildProcessError:
                pass


def socket_inodes(pid):
    """Inodes (as strings) of the sockets that process pid holds open."""
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if m := re.fullmatch(r"socket:\[(\d+)\]", target):
                out.add(m.group(1))
    except OSError:
        pass
    return out


# ---------------------------------------------------------------- sockets

def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port():
    """A port that was free a moment ago; callers retry on a collision."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LISTENING = re.compile(r"listening on (\S+)")


def parse_addr(text):
    """`listening on` address -> (family, sockaddr)."""
    if text.startswith("/"):
        return socket.AF_UNIX, text
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)", text)
    if m:
        return socket.AF_INET6, (m.group(1), int(m.group(2)))
    m = re.fullmatch(r"(\d+\.\d+\.\d+\.\d+):(\d+)", text)
    if m:
        return socket.AF_INET, (m.group(1), int(m.group(2)))
    raise AssertionError(f"unparsable listening address {text!r}")


def open_socket(addr, timeout=LIVE, source=None):
    """Connected socket to addr ((family, sockaddr)), bound to the source
    address if given; nothing sent."""
    family, sockaddr = addr
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(sockaddr)
    except BaseException:
        s.close()
        raise
    return s


# ---------------------------------------------------------------- config

def ini_section(header, keys, check=None):
    """The lines of one config section; a list value repeats its key, and
    check(key, value), if given, vets each value and returns its text."""
    out = [f"[{header}]"]
    for k, v in keys.items():
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            out.append(f"{k} = {check(k, item) if check else item}")
    return out


# ---------------------------------------------------------------- processes

class LineReader(threading.Thread):
    """Drains one pipe of a process into a list of (monotonic time, line);
    a mark is the number of lines read so far."""

    def __init__(self, pipe, name):
        super().__init__(name=name, daemon=True)
        self.pipe = pipe
        self.lines = []
        self.lock = threading.Lock()

    def run(self):
        for raw in iter(self.pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append((time.monotonic(), line))

    def snapshot(self):
        with self.lock:
            return [line for _, line in self.lines]


class Piped:
    """A process started by a test in a session of its own, both of whose
    output pipes are read by LineReader threads. Subclasses name the
    process and say how the tail of its log reads in a failure message
    (log_text)."""

    proc = None
    ident = None
    out = err = None

    def spawn(self, argv, env, name="tcpexecd"):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)
        st = proc_stat(self.proc.pid)
        self.ident = st.ident if st else (self.proc.pid, -1)
        self.out = LineReader(self.proc.stdout, f"{name}-stdout")
        self.err = LineReader(self.proc.stderr, f"{name}-stderr")
        self.out.start()
        self.err.start()
        return self.proc

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- output

    def log(self):
        return self.err.snapshot() if self.err else []

    def log_text(self, tail=40):
        return "\n".join(self.log()[-tail:])

    def mark(self):
        """The number of log lines read so far. A thread reads the log, so
        a line written just before may still be on its way: wait for the
        lines a mark must follow before taking it."""
        return len(self.log())

    def find_log(self, pattern, since=0):
        """The matches of pattern (searched anywhere in a line) after mark since."""
        rx = re.compile(pattern)
        return [m for line in self.log()[since:] if (m := rx.search(line))]

    def wait_log_matches(self, pattern, since, count, timeout, tail):
        """The matches of pattern after mark since, once there are count of
        them; on failure the last tail lines since the mark are shown."""
        try:
            return wait_for(lambda: (lambda ms: ms if len(ms) >= count else None)(
                self.find_log(pattern, since)), timeout, f"log /{pattern}/")
        except AssertionError:
            lines = self.log()[since:]
            raise AssertionError(
                f"no {count} log line(s) /{pattern}/ within {timeout} s; log since mark"
                f" ({len(lines)} lines, last {tail}):\n" + "\n".join(lines[-tail:])) from None

    def listening(self):
        """The addresses of the `listening on ADDR` lines on stdout so far."""
        return [m.group(1) for line in self.out.snapshot()
                if (m := LISTENING.fullmatch(line))]

    def wait_listening(self, n, timeout):
        """The first n `listening on` addresses, once printed; fails with the
        log if the process exits before."""
        wait_for(lambda: len(self.listening()) >= n or self.proc.poll() is not None,
                 timeout, f"{n} 'listening on' line(s)")
        assert self.proc.poll() is None, \
            f"tcpexecd exited {self.proc.returncode} before ready:\n{self.log_text()}"
        return self.listening()[:n]

    # -- teardown

    def terminate(self, timeout=LIVE):
        """Graceful stop: SIGTERM, then wait; True if it exited in time."""
        if self.proc.poll() is not None:
            return True
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def close_pipes(self):
        """Once the process is gone: the readers reach EOF, pipes closed."""
        for r in (self.out, self.err):
            if r:
                r.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()


def expected_listeners(listen):
    """How many `listening on` lines a [server] listen value gives."""
    return len(listen) if isinstance(listen, (list, tuple)) else 1


# ---------------------------------------------------------------- framed protocol

# Frame types (docs/protocol.md section 4).
HELLO, REQUEST, STDIN, STDIN_EOF, SIGNAL = 0x01, 0x02, 0x03, 0x04, 0x05
HELLO_OK, STDOUT, STDERR, EXIT, ERROR = 0x81, 0x82, 0x83, 0x84, 0x85
# REQUEST fields.
F_ARG, F_ENV, F_FLAGS = 0x81, 0x82, 0x84
NO_STDIN, LAST = 1, 2


def frame(ftype, payload=b""):
    return struct.pack(">BI", ftype, len(payload)) + payload


def hello_frame(version=1):
    return frame(HELLO, b"TCPX" + bytes([version]))


def request_frame(args, env=(), no_stdin=True, last=False):
    """A REQUEST: ARG fields, ENV fields, and FLAGS = NO_STDIN and/or LAST
    if asked."""
    payload = b""
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        payload += struct.pack(">BI", F_ARG, len(a)) + a
    for e in env:
        e = e.encode()
        payload += struct.pack(">BI", F_ENV, len(e)) + e
    flags = (NO_STDIN if no_stdin else 0) | (LAST if last else 0)
    if flags:
        payload += struct.pack(">BII", F_FLAGS, 4, flags)
    return frame(REQUEST, payload)


def take_frame(buf, limit=None):
    """Split the first complete frame off buf: ((type, payload), rest), or
    (None, buf) while it is incomplete. A frame announcing more than limit
    bytes fails the test."""
    if len(buf) < 5:
        return None, buf
    ftype, n = struct.unpack(">BI", buf[:5])
    if limit is not None:
        assert n <= limit, f"frame of {n} bytes"
    if len(buf) < 5 + n:
        return None, buf
    return (ftype, buf[5:5 + n]), buf[5 + n:]
