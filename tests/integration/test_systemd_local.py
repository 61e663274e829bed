# SPDX-License-Identifier: MIT
"""
tcpexecd's systemd interfaces without a systemd: the sd_notify protocol
read from a notification socket the test owns (READY, STATUS, WATCHDOG,
RELOADING, STOPPING, EXTEND_TIMEOUT_USEC), socket activation through
systemd-socket-activate(1) (a named socket, a socket matching a listen
line, the start-up error for a socket nobody asked for, inetd mode), and
the supervisor's variables kept away from commands; and a storm of reloads
under load, which must not cost a request its final status. Fast, needs no
container; the same paths under a real systemd are tested in
tests/systemd/.

Cleanup is by PID: each process tree a test started is stopped with
SIGTERM, then killed, and nothing may be left. Every wait is bounded.

Run: meson test -C BUILD test_systemd_local, or directly
  TCPEXECD=BUILD/tcpexecd TCPEXEC=BUILD/tcpexec pytest-3 -v \
      tests/integration/test_systemd_local.py
(the binaries default to build-sd/ at the top of the source tree).
"""

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import (ERROR, EXIT, LIVE, STDOUT, clean_env, free_port, hello_frame,
                     request_frame, socket_inodes, take_frame, wait_for)

TCPEXECD, TCPEXEC = harness.binaries("build-sd")
ACTIVATE = shutil.which("systemd-socket-activate")

# What a command must never see of the supervisor's variables
# (harness.SUPERVISOR_ENV, scrubbed by clean_env and set again per case).
LEAKED_ENV = re.compile(r"^(NOTIFY_SOCKET|WATCHDOG_\w*|LISTEN_\w*)=", re.M)

COMMANDS = {
    "echo": {"path": "/bin/echo", "args": "any"},
    "env": {"shell": "yes", "script": "env"},
    # Prints a line as it starts, so that the test knows it runs, then
    # keeps a drain going. No " ;" in the script: that starts a comment.
    "hold": {"shell": "yes", "script": "echo started && sleep 3 && echo done"},
}


def require_binaries():
    for b in (TCPEXECD, TCPEXEC):
        assert os.access(b, os.X_OK), f"{b} not found: build it and set TCPEXECD / TCPEXEC"


def listening_sockets(port):
    """Inodes of the IPv4 sockets in LISTEN state on 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                out.append(fields[9])
    return out


def config_text(server, commands=COMMANDS):
    out = harness.ini_section("server", server)
    for name, keys in commands.items():
        out += [""] + harness.ini_section(f"command {name}", keys)
    return "\n".join(out) + "\n"


def tcpexec(port, *args, timeout=30.0):
    return subprocess.run([TCPEXEC, "-p", str(port), "127.0.0.1", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


# ---------------------------------------------------------------- processes

def children(pid):
    """The pids of the live children of pid."""
    return [st.pid for st in harness.children(pid)]


class Proc(harness.Piped):
    """A process tree started by a test: tcpexecd itself, or
    systemd-socket-activate, which execs tcpexecd in place (the PID stays)
    or forks one per connection (inetd mode)."""

    def __init__(self, argv, env):
        require_binaries()
        self.argv = argv
        self.seen = set()     # (pid, starttime) of every live process of the tree
        self.spawn(argv, env, name=os.path.basename(argv[0]))

    def wait_log(self, pattern, since=0, timeout=LIVE):
        """The first match of pattern after mark since."""
        return self.wait_log_matches(pattern, since, 1, timeout, tail=40)[0]

    def wait_exit(self, timeout=LIVE):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv[0]} still running after {timeout} s; stderr:\n"
                                 + self.log_text()) from None

    def track(self):
        """Remember the live processes of the tree while the root runs."""
        if self.running():
            sts = [harness.proc_stat(self.pid)] + harness.descendants([self.pid])
            self.seen.update(st.ident for st in sts if st and st.state != "Z")

    def cleanup(self):
        """SIGTERM (a graceful stop), then SIGKILL for what is left; every
        process of the tree ever seen must be gone (checked by the fixture)."""
        self.track()
        self.terminate(LIVE)
        if self.running():
            self.track()
            harness.kill_tree([self.ident], self.seen)
            try:
                self.proc.wait(LIVE)
            except subprocess.TimeoutExpired:
                pass
        self.close_pipes()


@pytest.fixture
def procs():
    """Factory for Proc; at teardown every tree is stopped, the orphans this
    (subreaper) process adopted are reaped, and none may be left."""
    on = harness.set_subreaper(True)
    made = []

    def start(argv, env):
        p = Proc(argv, env)
        made.append(p)
        return p

    yield start
    for p in made:
        p.cleanup()
    try:
        left = harness.wait_all_gone({i for p in made for i in p.seen}, LIVE)
    finally:
        harness.reap_adopted()
        if on:
            harness.set_subreaper(False)
    assert not left, f"processes left: {[i[0] for i in left]}"


@pytest.fixture
def sockdir():
    """A short directory for Unix sockets (sun_path holds 108 bytes)."""
    d = tempfile.mkdtemp(prefix="tcpx-sd-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- sd_notify

class Notifications(threading.Thread):
    """A NOTIFY_SOCKET of the test's own: every datagram, split into its
    lines, with the sender's PID from SCM_CREDENTIALS (as systemd checks
    NotifyAccess=main)."""

    def __init__(self, path):
        super().__init__(name="notify", daemon=True)
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.msgs = []          # (monotonic time, sender pid, [lines])
        self.lock = threading.Lock()
        self.stop_r, self.stop_w = os.pipe()
        self.start()

    def run(self):
        creds_len = socket.CMSG_SPACE(struct.calcsize("3i"))
        while True:
            r, _, _ = select.select([self.sock, self.stop_r], [], [])
            if self.stop_r in r:
                return
            data, anc, _, _ = self.sock.recvmsg(65536, creds_len)
            pid = None
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", value[:12])[0]
            lines = data.decode("utf-8", "replace").split("\n")
            with self.lock:
                self.msgs.append((time.monotonic(), pid, [x for x in lines if x]))

    def close(self):
        os.write(self.stop_w, b"x")
        self.join(5)
        os.close(self.stop_r)
        os.close(self.stop_w)
        self.sock.close()

    def snapshot(self):
        with self.lock:
            return list(self.msgs)

    def mark(self):
        return len(self.snapshot())

    def lines(self, since=0):
        """[(message index, time, pid, line)] from message since on."""
        return [(i, t, pid, line) for i, (t, pid, ls) in enumerate(self.snapshot())
                if i >= since for line in ls]

    def find(self, pattern, since=0):
        rx = re.compile(pattern)
        return [(i, t, pid, line) for i, t, pid, line in self.lines(since)
                if rx.fullmatch(line)]

    def wait(self, pattern, since=0, count=1, timeout=LIVE):
        """The first count lines matching pattern (whole line) since a mark."""
        try:
            return wait_for(lambda: (lambda f: f[:count] if len(f) >= count else None)(
                self.find(pattern, since)), timeout, f"notification /{pattern}/")
        except AssertionError:
            raise AssertionError(
                f"no {count} notification(s) /{pattern}/ within {timeout} s; got:\n"
                + self.dump(since)) from None

    def dump(self, since=0):
        return "\n".join(f"  [{i}] pid {pid}: {line}" for i, _, pid, line in self.lines(since))


@pytest.fixture
def notify(sockdir):
    n = Notifications(sockdir / "notify")
    yield n
    n.close()


class Supervised:
    """tcpexecd started as systemd starts a Type=notify service: no -f,
    NOTIFY_SOCKET and WATCHDOG_USEC set (WATCHDOG_PID unset: the watchdog
    then applies to whoever reads the variables, the master)."""

    def __init__(self, procs, notify, sockdir, server=None, commands=COMMANDS):
        self.notify = notify
        self.conf = sockdir / "tcpexecd.conf"
        self.server = {"listen": "127.0.0.1:0", "control_socket": str(sockdir / "ctl"),
                       "workers": 2}
        self.server.update(server or {})
        self.commands = commands
        self.write_config()
        self.p = procs([TCPEXECD, "-c", str(self.conf)],
                       clean_env({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}))
        try:
            wait_for(lambda: notify.find(r"READY=1") or not self.p.running(), LIVE, "READY=1")
        except AssertionError:
            raise AssertionError(f"no READY=1 within {LIVE} s; notifications:\n"
                                 f"{notify.dump()}\nstderr:\n{self.p.log_text()}") from None
        assert self.p.running(), f"tcpexecd exited {self.p.proc.returncode}:\n{self.p.log_text()}"
        self.ready = notify.find(r"READY=1")[0]
        m = self.p.wait_log(r"listening on 127\.0\.0\.1:(\d+)$")
        self.port = int(m.group(1))

    def write_config(self, text=None):
        self.conf.write_text(text if text is not None else config_text(self.server, self.commands))

    def kill(self, sig):
        assert self.p.running(), f"master exited:\n{self.p.log_text()}"
        os.kill(self.p.pid, sig)


@pytest.fixture
def supervised(procs, notify, sockdir):
    return lambda **kw: Supervised(procs, notify, sockdir, **kw)


def test_notify_ready_status_and_watchdog(supervised, notify):
    d = supervised()
    # Served at once: READY=1 comes only once the socket listens and the
    # workers accept.
    r = tcpexec(d.port, "echo", "ready")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ready\n", "")

    # The process systemd started is the master and stays in the
    # foreground (with NotifyAccess=main, systemd accepts nothing else).
    i, _, pid, _ = d.ready
    assert pid == d.p.pid, f"READY=1 came from pid {pid}, not the started {d.p.pid}"
    assert d.p.running()
    workers = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(children(d.p.pid)),
                       LIVE, "2 workers, children of the started process")
    assert d.p.find_log(rf"^tcpexecd\[{d.p.pid}\]: started \(2 workers, 1 sockets\)$"), \
        d.p.log_text()

    status = notify.wait(r"STATUS=.+")
    assert status[0][0] <= i + 1, f"no STATUS= with READY=1:\n{notify.dump()}"
    assert status[0][3] == "STATUS=serving with 2 workers", notify.dump()
    # The pool's STATUS= follows within a tick.
    notify.wait(r"STATUS=2 workers: \d+ idle, \d+ busy; \d+ served; generation 1",
                since=i + 1, timeout=3)

    # WATCHDOG_USEC=400000: a ping every 200 ms; at least 3 in 2 s.
    mark = notify.mark()
    t0 = time.monotonic()
    pings = notify.wait(r"WATCHDOG=1", since=mark, count=3, timeout=2.5)
    assert pings[2][1] - t0 <= 2.0, f"3 pings took {pings[2][1] - t0:.2f} s"
    assert all(p[2] == d.p.pid for p in pings), notify.dump(mark)
    time.sleep(0.5)
    assert d.p.running() and sorted(children(d.p.pid)) == sorted(workers)
    assert not notify.find(r"STOPPING=1|RELOADING=1|ERRNO=.*", since=0), notify.dump()


def test_notify_reload(supervised, notify):
    d = supervised()
    mark = notify.mark()
    d.kill(signal.SIGHUP)
    ready = notify.wait(r"READY=1", since=mark)[0]
    reloading = notify.find(r"RELOADING=1", since=mark)
    assert reloading and reloading[0][0] < ready[0], \
        f"expected RELOADING=1 before READY=1:\n{notify.dump(mark)}"
    assert notify.find(r"STATUS=configuration reloaded \(generation 2\)", since=mark), \
        notify.dump(mark)
    assert all(x[2] == d.p.pid for x in notify.lines(mark)), notify.dump(mark)
    r = tcpexec(d.port, "echo", "after", "reload")
    assert (r.returncode, r.stdout) == (0, "after reload\n"), r.stderr


def test_notify_failed_reload(supervised, notify):
    d = supervised()
    d.write_config(config_text(d.server, d.commands) + "no_such_key = 1\n")
    mark = notify.mark()
    d.kill(signal.SIGHUP)
    ready = notify.wait(r"READY=1", since=mark)[0]
    reloading = notify.find(r"RELOADING=1", since=mark)
    assert reloading and reloading[0][0] < ready[0], notify.dump(mark)
    failed = notify.find(r"STATUS=reload failed: .*no_such_key.*", since=mark)
    assert failed, f"no STATUS= naming the reload failure:\n{notify.dump(mark)}"
    assert not notify.find(r"STOPPING=1", since=mark)
    d.p.wait_log(r"reload failed: .*keeping the current configuration")
    # Still serving, with the old configuration.
    r = tcpexec(d.port, "echo", "still")
    assert (r.returncode, r.stdout) == (0, "still\n"), r.stderr
    assert d.p.running()


# The framed protocol (docs/protocol.md; encoded by harness.py).
def request(args):
    """HELLO and a REQUEST (ARGs, FLAGS = NO_STDIN), pipelined."""
    return hello_frame() + request_frame(args)


def one_request(port, args, timeout=LIVE):
    """One request on a connection of its own: [(type, payload)] up to the
    final status, or up to the server's EOF if that comes first."""
    frames, buf = [], b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request(args))
        for _ in range(10000):
            for _ in range(10000):
                f, buf = take_frame(buf)
                if f is None:
                    break
                frames.append(f)
            if frames and frames[-1][0] in (EXIT, ERROR):
                return frames
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return frames
            buf += chunk
    raise AssertionError("frame loop bound reached")


def test_reload_storm_loses_no_request(supervised, notify):
    """Reloads while requests run (each one a RELOADING=1 ... READY=1 for
    systemd): every request still ends with its output and its EXIT. The
    old workers finish what they run; none may drop a final status."""
    d = supervised(server={"workers": 4})
    mark = notify.mark()
    stop_at = time.monotonic() + 4.0
    results, lock = [], threading.Lock()

    def client(k):
        for i in range(100000):
            if time.monotonic() >= stop_at:
                return
            word = f"{k}-{i}".encode()
            try:
                frames = one_request(d.port, [b"echo", word])
            except OSError as e:
                with lock:
                    results.append((False, word, [f"{type(e).__name__}: {e}"]))
                continue
            out = b"".join(p for t, p in frames if t == STDOUT)
            ok = (frames and frames[-1][0] == EXIT and frames[-1][1][:2] == b"\0\0"
                  and out == word + b"\n")
            with lock:
                results.append((ok, word, [(hex(t), p[:40]) for t, p in frames]))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    hups = 0
    while time.monotonic() < stop_at:
        d.kill(signal.SIGHUP)
        hups += 1
        time.sleep(0.04)
    for t in threads:
        t.join(LIVE)
    assert not any(t.is_alive() for t in threads), "clients still running"
    bad = [(w, f) for ok, w, f in results if not ok]
    assert len(results) > 100, f"only {len(results)} requests in 4 s"
    assert not bad, (f"{len(bad)} of {len(results)} requests during {hups} reloads did not end "
                     f"with their output and EXIT (frames received):\n"
                     + "\n".join(f"  {w!r}: {f}" for w, f in bad[:10]))
    # Every reload was announced and completed.
    wait_for(lambda: len(notify.find(r"READY=1", since=mark))
             == len(notify.find(r"RELOADING=1", since=mark)), LIVE,
             "a READY=1 for each RELOADING=1")
    assert notify.find(r"RELOADING=1", since=mark)
    assert d.p.running()


def test_notify_stop_drains_and_extends_timeout(supervised, notify):
    d = supervised(server={"stop_timeout": "20s"})
    client = subprocess.Popen([TCPEXEC, "-p", str(d.port), "127.0.0.1", "hold"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=clean_env())
    try:
        r, _, _ = select.select([client.stdout], [], [], LIVE)
        assert r, "the hold command did not start"
        assert client.stdout.readline() == b"started\n"
        mark = notify.mark()
        d.kill(signal.SIGTERM)
        stopping = notify.wait(r"STOPPING=1", since=mark)[0]
        # The drain lasts the rest of the command's 3 s: the master asks
        # systemd for more time, once a tick, within stop_timeout + 5 s.
        ext = notify.wait(r"EXTEND_TIMEOUT_USEC=\d+", since=stopping[0], timeout=3)[0]
        usec = int(ext[3].split("=")[1])
        assert 5_000_000 < usec <= 25_000_000, ext[3]
        assert ext[2] == d.p.pid
        out, err = client.communicate(timeout=LIVE)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert (client.returncode, out, err) == (0, b"done\n", b""), err
    assert d.p.wait_exit(LIVE) == 0, d.p.log_text()
    assert not notify.find(r"READY=1", since=stopping[0]), notify.dump(mark)
    d.p.wait_log(r"\bstopped$")


def test_commands_do_not_see_notify_variables(supervised):
    d = supervised()
    r = tcpexec(d.port, "env")
    assert r.returncode == 0, r.stderr
    assert "TCPEXEC_COMMAND=env" in r.stdout.splitlines()
    assert not LEAKED_ENV.findall(r.stdout), r.stdout


# ---------------------------------------------------------------- activation

needs_activate = pytest.mark.skipif(ACTIVATE is None,
                                    reason="systemd-socket-activate is not installed")


def activate(procs, args, listen_port=None, attempts=5):
    """systemd-socket-activate args, listening on 127.0.0.1 at listen_port
    (a fixed one) or at a free port, retried on a collision. (Proc, port)."""
    for _ in range(attempts):
        port = listen_port or free_port()
        argv = [ACTIVATE, "-l", f"127.0.0.1:{port}"] + [a.format(port=port) for a in args]
        p = procs(argv, clean_env())
        try:
            wait_for(lambda: p.find_log(rf"^Listening on 127\.0\.0\.1:{port} as 3\.$")
                     or not p.running(), LIVE, "systemd-socket-activate to listen")
        except AssertionError:
            raise AssertionError(f"{' '.join(argv)}:\n{p.log_text()}") from None
        if p.running():
            return p, port
        assert listen_port is None and p.find_log(r"in use"), \
            f"systemd-socket-activate exited {p.proc.returncode}:\n{p.log_text()}"
    raise AssertionError(f"no free port in {attempts} attempts")


def write_conf(sockdir, **server):
    conf = sockdir / "tcpexecd.conf"
    keys = {"listen": "127.0.0.1:0", "control_socket": str(sockdir / "ctl"), "workers": 2}
    keys.update(server)
    conf.write_text(config_text(keys))
    return conf


@needs_activate
def test_socket_activation_named_socket(procs, sockdir):
    conf = write_conf(sockdir)
    p, port = activate(procs, ["--fdname=tcpexecd", TCPEXECD, "-c", str(conf)])
    # The first connection starts tcpexecd and is served by it.
    r = tcpexec(port, "echo", "first")
    assert (r.returncode, r.stdout, r.stderr) == (0, "first\n", ""), p.log_text()
    assert p.running()
    p.wait_log(rf"^tcpexecd\[{p.pid}\]: listening on 127\.0\.0\.1:{port} "
               r"\(from systemd, name tcpexecd\)$")
    # systemd-socket-activate execs in place: the PID it was started with
    # is the master.
    assert len(children(p.pid)) >= 2
    r = tcpexec(port, "env")
    assert r.returncode == 0 and "TCPEXEC_COMMAND=env" in r.stdout, r.stderr
    assert not LEAKED_ENV.findall(r.stdout), r.stdout


@needs_activate
def test_socket_activation_socket_matching_listen_line(procs, sockdir):
    port = free_port()
    conf = write_conf(sockdir, listen=f"127.0.0.1:{port}")
    # No --fdname: the name is "unknown", and only the listen line makes
    # the socket tcpexecd's.
    p, _ = activate(procs, [TCPEXECD, "-c", str(conf)], listen_port=port)
    r = tcpexec(port, "echo", "matched")
    assert (r.returncode, r.stdout) == (0, "matched\n"), r.stderr + p.log_text()
    p.wait_log(rf"listening on 127\.0\.0\.1:{port} \(from systemd, name unknown\)$")
    # Used as it is, not bound again: one listening socket on the port,
    # and it is the master's inherited one.
    assert not p.find_log(rf"listening on 127\.0\.0\.1:{port}$"), p.log_text()
    inodes = listening_sockets(port)
    assert len(inodes) == 1, f"listening sockets on {port}: {inodes}"
    assert inodes[0] in socket_inodes(p.pid)
    assert p.running()


@needs_activate
def test_socket_activation_unknown_name_is_an_error(procs, sockdir):
    conf = write_conf(sockdir)
    p, port = activate(procs, ["--fdname=other", TCPEXECD, "-c", str(conf)])
    # The connection that triggers the start is the one that fails.
    r = tcpexec(port, "echo", "x")
    assert r.returncode == 255
    assert p.wait_exit(LIVE) == 1, p.log_text()
    err = p.wait_log(r"tcpexecd\[\d+\]: error: .*")
    assert "FileDescriptorName" in err.group(0) and '"other"' in err.group(0), err.group(0)
    assert not p.find_log(r"worker \d+ started"), p.log_text()


@needs_activate
def test_inetd_mode(procs, sockdir):
    conf = write_conf(sockdir)
    p, port = activate(procs, ["-a", "--inetd", TCPEXECD, "-i", "-c", str(conf)])
    r = tcpexec(port, "echo", "hi")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\n", ""), p.log_text()
    # The audit record, as tcpexecd(8) shows it.
    p.wait_log(r"tcpexecd\[\d+\]: allow peer=127\.0\.0\.1:\d+ command=echo "
               r"argv=\[\"echo\" \"hi\"\] status=exit:0 ")
    r = tcpexec(port, "env")
    assert r.returncode == 0 and "TCPEXEC_COMMAND=env" in r.stdout, r.stderr
    assert not LEAKED_ENV.findall(r.stdout), r.stdout
    assert p.running()
