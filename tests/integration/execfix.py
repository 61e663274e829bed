# SPDX-License-Identifier: MIT
"""
Shared helpers for the remote-execution tests (test_exec*.py,
test_line_mode.py): start the real tcpexecd in the foreground with a
[server] section and [command] entries of the test's choosing, run the real
tcpexec client against it, speak the wire protocol by hand for the raw
cases, read the audit log, and find (by a unique argument) the processes a
command left behind.

Cleanup is by PID only: the daemon master and every process below it, the
clients a test started, and any process carrying one of the test's unique
markers. Every wait is bounded in time and in iterations; the only timing
assertions are generous liveness bounds.

Deliberately independent of conftest.py (which belongs to the process-model
tests and changes with them); its autouse fixtures still apply here. What
all the helper layers share comes from harness.py.
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
from pathlib import Path

import pytest

import harness
# Imported by name for the test files, which take them from here.
from harness import (ERROR, EXIT, HELLO_OK, STDIN, STDOUT, frame,  # noqa: F401
                     hello_frame, ipv6_loopback, kill_idents, request_frame, take_frame,
                     wait_for)

TCPEXECD, TCPEXEC = harness.binaries("build-exec")

POLL = harness.POLL
LIVE = harness.LIVE

# Error names as the client prints them (src/protocol.c proto_error_name).
ERR_NAMES = {1: "bad request", 2: "unknown command", 3: "not allowed", 4: "too large",
             5: "timeout", 6: "busy", 7: "internal error", 8: "unsupported version",
             9: "output limit exceeded", 10: "authentication failed", 11: "idle timeout",
             12: "handshake timeout", 13: "spawn failed"}
BAD_REQUEST, UNKNOWN_COMMAND, NOT_ALLOWED, TOO_LARGE = 1, 2, 3, 4
IDLE_TIMEOUT, HANDSHAKE_TIMEOUT = 11, 12


def unique(prefix="300"):
    """A unique decimal such as 300.482913577: a `sleep` argument that
    finds exactly this test's process in /proc, even with other test files
    running in parallel."""
    return f"{prefix}.{int.from_bytes(os.urandom(4), 'big') % 10**9:09d}"


# ---------------------------------------------------------------- /proc

def procs_with_arg(arg):
    """Live processes whose argv contains arg as a whole word, as
    (pid, starttime). Zombies have an empty cmdline and are not counted."""
    return [st.ident for st in harness.procs_with_arg(arg, zombies=False)]


def descendants(pid):
    """(pid, starttime) of every live process below pid."""
    return [st.ident for st in harness.descendants([pid], zombies=False)]


def wait_no_proc_with(arg, timeout=LIVE):
    """Wait until no live process carries arg; returns what is left."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL) + 2):
        left = procs_with_arg(arg)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)
    return procs_with_arg(arg)


# ---------------------------------------------------------------- config

def _check_value(key, value):
    value = str(value)
    # inih treats a ';' after whitespace as the start of a comment and
    # cuts lines at 200 bytes: refuse such values here instead of testing a
    # silently different script.
    assert not re.search(r"\s;", value), f"{key}: ' ;' starts an inline comment: {value!r}"
    assert "\n" not in value, f"{key}: multi-line value {value!r}"
    assert len(key) + len(value) + 3 < 200, f"{key}: line too long for inih: {value!r}"
    return value


def section(header, keys):
    return harness.ini_section(header, keys, _check_value)


def config_text(server, commands):
    lines = section("server", server)
    for name, keys in commands.items():
        lines += section(f"command {name}", keys)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- daemon

# One audit record (identity= appears when the client authenticated). The
# command name may be printed bare or quoted and
# escaped like argv, and an error name with its spaces or with '_' for them;
# audit_record() normalises both to the plain name.
AUDIT = re.compile(r"tcpexecd\[\d+\]: (?P<decision>allow|deny) peer=(?P<peer>\S+) "
                   r"(?:identity=(?P<identity>\S+) )?"
                   r"command=(?P<command>\"(?:[^\"\\]|\\.)*\"|\S*) argv=\[(?P<argv>.*)\] "
                   r"status=(?P<status>.*?) "
                   r"duration_ms=\d+ in=(?P<bytes_in>\d+) out=(?P<bytes_out>\d+) "
                   r"worker=(?P<worker>\d+)(?: reason=(?P<reason>.*))?$")


def audit_record(m):
    rec = m.groupdict()
    cmd = rec["command"]
    if len(cmd) >= 2 and cmd[0] == cmd[-1] == '"':
        cmd = re.sub(r"\\(.)", r"\1", cmd[1:-1])
    rec["command"] = cmd
    rec["status"] = rec["status"].replace("_", " ")
    return rec


class Daemon(harness.Piped):
    """One `tcpexecd -f -c CONF` started by a test."""

    def __init__(self, conf, server, commands, env):
        self.conf = conf
        self.server = server
        self.commands = commands
        self.env = env
        self.known = set()        # (pid, starttime) of everything seen below it
        self.addresses = []

    def start(self, timeout=LIVE):
        self.conf.write_text(config_text(self.server, self.commands))
        listen = self.server.get("listen")
        self.spawn([TCPEXECD, "-f", "-c", str(self.conf)], self.env)
        self.addresses = self.wait_listening(harness.expected_listeners(listen), timeout)
        return self

    # -- addresses

    def target(self, i=0):
        """(host, port or None) as the client takes them."""
        _, sockaddr = self.sockaddr(i)
        return (sockaddr, None) if isinstance(sockaddr, str) else sockaddr

    def port(self, i=0):
        return self.target(i)[1]

    def sockaddr(self, i=0):
        return harness.parse_addr(self.addresses[i])

    def connect(self, i=0, timeout=LIVE):
        return harness.open_socket(self.sockaddr(i), timeout)

    # -- log (a mark must follow the records it waits for: see wait_audit)

    def audits(self, since=0, command=None, decision=None):
        out = []
        for line in self.log()[since:]:
            m = AUDIT.search(line)
            if not m:
                continue
            rec = audit_record(m)
            if (command is None or rec["command"] == command) and \
                    (decision is None or rec["decision"] == decision):
                out.append(rec)
        return out

    def wait_audit(self, command, since=0, decision=None, count=1, timeout=LIVE):
        """The audit records of command after mark since, once there are
        count of them (a record is written when the request is over, which
        may be just after the client returned)."""
        try:
            return wait_for(lambda: (lambda a: a if len(a) >= count else None)(
                self.audits(since, command, decision)), timeout,
                f"{count} audit record(s) for {command}")
        except AssertionError:
            raise AssertionError(f"no {count} audit record(s) for {command!r} within "
                                 f"{timeout} s; log:\n{self.log_text()}") from None

    # -- processes

    def track(self):
        self.known.update(descendants(self.pid))

    def stop(self, timeout=LIVE):
        """Graceful stop (SIGTERM to the master); True if it exited in time."""
        if self.proc.poll() is not None:
            return True
        self.track()
        return self.terminate(timeout)

    def cleanup(self):
        """Whatever happened: the master and everything ever seen below it
        are killed by PID, and the pipes are drained and closed."""
        if self.proc is None:
            return
        try:
            self.stop()
        finally:
            if self.proc.poll() is None:
                self.track()
                kill_idents([self.ident])
                self.proc.wait(LIVE)
            kill_idents(self.known)
            self.close_pipes()


# ---------------------------------------------------------------- client

def client_argv(daemon, args, opts=(), i=0, host=None):
    """tcpexec [opts] [-p PORT] HOST args: HOST as the daemon printed it,
    or host to spell it another way ("[::1]")."""
    text, port = daemon.target(i)
    host = host or text
    argv = [TCPEXEC, *opts]
    if port is not None:
        argv += ["-p", str(port)]
    return argv + [host, *args]


def client_env(extra=None):
    return harness.clean_env(extra)


class Rig:
    """Per-test state: the daemons, clients and markers to clean up."""

    def __init__(self, tmp_path, sockdir):
        self.tmp = tmp_path
        self.sockdir = sockdir
        self.daemons = []
        self.clients = []
        self.markers = []

    def daemon(self, commands, env=None, **server):
        """Start tcpexecd with these [command] entries; server keys override
        the defaults (one ephemeral loopback port, two workers, a control
        socket of its own)."""
        keys = {"listen": "127.0.0.1:0", "control_socket": str(self.sockdir / "ctl"),
                "workers": 2}
        keys.update(server)
        denv = client_env()
        denv.update(env or {})
        d = Daemon(self.tmp / f"tcpexecd-{len(self.daemons)}.conf", keys, commands, denv)
        self.daemons.append(d)
        return d.start()

    def marker(self, prefix="300"):
        """A unique `sleep` argument, killed at teardown wherever it runs."""
        m = unique(prefix)
        self.markers.append(m)
        return m

    def spawn(self, daemon, args, opts=(), stdin=subprocess.DEVNULL, i=0, env=None,
              host=None):
        """Start the client without waiting; killed by PID at teardown."""
        p = subprocess.Popen(client_argv(daemon, args, opts, i, host), stdin=stdin,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=client_env(env), start_new_session=True)
        self.clients.append(p)
        return p

    def run(self, daemon, args, opts=(), input=None, timeout=30.0, i=0, env=None,
            host=None):
        """Run the client to completion: CompletedProcess with bytes."""
        p = self.spawn(daemon, args, opts,
                       stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                       i=i, env=env, host=host)
        return finish(p, input, timeout)

    def cleanup(self):
        try:
            for p in self.clients:
                if p.poll() is None:
                    p.kill()
                try:
                    p.communicate(timeout=LIVE)
                except Exception:  # noqa: BLE001  a communicate() the test broke off
                    # cannot be resumed (ValueError, AttributeError): reap it.
                    p.wait(LIVE)
        finally:
            # Whatever happened to the clients, the daemons are stopped.
            for d in self.daemons:
                d.cleanup()
            for m in self.markers:
                kill_idents(procs_with_arg(m))


def finish(p, input=None, timeout=30.0):
    """communicate() bounded by timeout; on expiry the client is killed by
    PID and the test fails."""
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=LIVE)
        raise AssertionError(f"tcpexec {p.args[1:]} still running after {timeout} s; "
                             f"stdout {out[-200:]!r} stderr {err[-500:]!r}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def read_until(pipe, pred, timeout=LIVE, limit=1 << 20):
    """Read a client's pipe until pred(data) holds; returns the data."""
    fd = pipe.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    for _ in range(100000):
        if pred(buf):
            return buf
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        assert len(buf) <= limit, "runaway output"
    raise AssertionError(f"expected output did not arrive within {timeout} s: {buf[-500:]!r}")


def client_error(stderr):
    """The error name of the client's `tcpexec: NAME: message` line."""
    text = stderr.decode("utf-8", "replace")
    names = sorted(ERR_NAMES.values(), key=len, reverse=True)
    for line in text.splitlines():
        for n in names:
            if line.startswith(f"tcpexec: {n}: "):
                return n
    return None


@pytest.fixture
def rig(tmp_path):
    for b in (TCPEXECD, TCPEXEC):
        assert os.access(b, os.X_OK), f"{b} not found: build it, or set TCPEXECD / TCPEXEC"
    # sun_path holds 108 bytes and pytest's tmp_path can be longer.
    sockdir = Path(tempfile.mkdtemp(prefix="tcpx-e-", dir="/tmp"))
    r = Rig(tmp_path, sockdir)
    try:
        yield r
    finally:
        try:
            r.cleanup()
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)


# ---------------------------------------------------------------- raw protocol

class Frames:
    """Reads server frames from a socket, bounded in time."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no complete frame in time (have {self.buf[:64]!r})")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except socket.timeout:
            raise AssertionError(f"no complete frame in time (have {self.buf[:64]!r})") \
                from None
        return chunk

    def next(self, timeout=LIVE):
        """(type, payload), or None at a clean EOF between frames."""
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            f, self.buf = take_frame(self.buf, 16 << 20)
            if f is not None:
                return f
            chunk = self._fill(deadline)
            if not chunk:
                assert not self.buf, f"EOF inside a frame: {self.buf[:64]!r}"
                return None
            self.buf += chunk
        raise AssertionError("frame loop bound reached")

    def expect_eof(self, timeout=LIVE):
        f = self.next(timeout)
        assert f is None, f"expected the server to close, got frame {f[0]:#x} {f[1][:80]!r}"


def error_code(f):
    assert f is not None, "connection closed where an ERROR frame was expected"
    assert f[0] == ERROR, f"expected ERROR, got frame {f[0]:#x} {f[1][:80]!r}"
    return struct.unpack(">H", f[1][:2])[0]
