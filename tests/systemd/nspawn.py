# SPDX-License-Identifier: MIT
"""
A throw-away systemd-nspawn container for the systemd tests: a real
systemd (the host's own, Debian 12's systemd 252) booted on a tmpfs overlay
of the host's root, with a private network, into which the tests install
tcpexecd, its units, man pages and configuration, and which they drive with
nsenter(1).

Nothing of the host changes: every write goes to the overlay's upper layer
on a tmpfs, which is unmounted at the end; the cgroup directories that
systemd-nspawn creates are removed once empty. Never boot systemd without
nspawn on the host, nor under a bare unshare: that wipes the host's /tmp
and remounts the cgroup hierarchies read-only.

Only one container may run at a time (nspawn's cgroups, payload/ and
supervisor/, have fixed names), so boot() takes an flock on LOCK_PATH and
keeps it until the container is gone. If the test process is told to stop
(meson sends SIGTERM on a timeout, and SIGKILL to the process group half a
second later), the teardown is handed to a detached process running this
file, `python3 nspawn.py cleanup STATE`, which inherits the lock.

Every wait is bounded.
"""

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LOCK_PATH = "/run/lock/tcpexecd-nspawn.lock"
LOCK_WAIT = 300.0
BOOT_TIMEOUT = 30.0
POWEROFF_TIMEOUT = 30.0
CGROUP_DIRS = ("/sys/fs/cgroup/systemd/payload", "/sys/fs/cgroup/systemd/supervisor",
               "/sys/fs/cgroup/unified/payload", "/sys/fs/cgroup/unified/supervisor")


class Unavailable(Exception):
    """This machine cannot boot a container (not our code's fault)."""


def log(msg):
    print(f"nspawn: {msg}", flush=True)


def wait_for(pred, timeout, interval=0.1):
    """pred()'s first true value within timeout seconds, else None."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
    return None


def pid_alive(pid):
    """True for a process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(")") + 2] != "Z"


def child_pids(pid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(name))
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def run_host(argv, timeout=30.0):
    """A host command; (returncode, combined output)."""
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"{' '.join(argv)}: timed out after {timeout} s"
    except OSError as e:
        return -1, f"{' '.join(argv)}: {e}"
    return r.returncode, r.stdout


class Reader(threading.Thread):
    """Collects nspawn's console output, for the log when boot fails."""

    def __init__(self, pipe):
        super().__init__(name="nspawn-console", daemon=True)
        self.pipe = pipe
        self.lines = []

    def run(self):
        for raw in iter(self.pipe.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def tail(self, n=30):
        return "\n".join(self.lines[-n:])


# ---------------------------------------------------------------- teardown

def teardown(state):
    """Power the container off and undo what boot() did, step by step, as
    far as boot() got. state: dict with dir, nspawn_pid, init_pid (any may
    be None). Returns the list of problems (empty when all is clean)."""
    problems = []
    d, nspawn_pid, init_pid = state.get("dir"), state.get("nspawn_pid"), state.get("init_pid")

    if init_pid and pid_alive(init_pid):
        rc, out = run_host(["nsenter", "-t", str(init_pid), "-a", "systemctl", "poweroff"],
                           timeout=15)
        if rc != 0:
            log(f"systemctl poweroff exited {rc}: {out.strip()}")
    if nspawn_pid:
        if not wait_for(lambda: not pid_alive(nspawn_pid), POWEROFF_TIMEOUT):
            problems.append(f"systemd-nspawn {nspawn_pid} still running "
                            f"{POWEROFF_TIMEOUT:.0f} s after poweroff; killed")
            try:
                os.kill(nspawn_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_for(lambda: not pid_alive(nspawn_pid), 10)
    if init_pid and pid_alive(init_pid) and comm(init_pid) == "systemd":
        # nspawn died without taking its container along: end the PID
        # namespace by killing its init (which we started).
        problems.append(f"container init {init_pid} outlived systemd-nspawn; killed")
        try:
            os.kill(init_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: not pid_alive(init_pid), 10)

    if d and os.path.isdir(d):
        for mnt in (f"{d}/root", d):
            if not os.path.ismount(mnt):
                continue
            # Right after the container exits, a mount may still be busy
            # for a moment.
            rc, out = -1, ""
            for _ in range(20):
                rc, out = run_host(["umount", mnt])
                if rc == 0:
                    break
                time.sleep(0.25)
            if rc != 0:
                problems.append(f"umount {mnt}: {out.strip()}")
        if not os.path.ismount(d):
            try:
                if os.path.isdir(d):
                    # Only what mkdtemp made, now empty once the tmpfs is gone.
                    os.rmdir(d)
            except OSError as e:
                problems.append(f"rmdir {d}: {e}")

    if state.get("booted"):
        for top in CGROUP_DIRS:
            if not os.path.isdir(top):
                continue
            dirs = []
            for root, subdirs, _ in os.walk(top):
                dirs += [os.path.join(root, s) for s in subdirs]
            for path in sorted(dirs, key=lambda p: p.count("/"), reverse=True) + [top]:
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    problems.append(f"rmdir {path}: {e}")
    return problems


def hand_off(state, lock_fd):
    """Teardown in a detached process (its own session, so that the
    SIGKILL meson sends to the test's process group does not reach it),
    holding the lock until the container is gone."""
    os.set_inheritable(lock_fd, True)
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "cleanup", json.dumps(state)],
                     stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=(lock_fd,))


# ---------------------------------------------------------------- container

class Container:
    def __init__(self):
        self.state = {"dir": None, "nspawn_pid": None, "init_pid": None, "booted": False}
        self.proc = None
        self.console = None
        self.lock_fd = None
        self.handed_off = False
        self.old_sigterm = None

    @property
    def root(self):
        return Path(self.state["dir"]) / "root"

    @property
    def pid(self):
        return self.state["init_pid"]

    # -- life cycle

    def boot(self):
        if os.geteuid() != 0:
            raise Unavailable("booting a container needs root")
        for tool in ("systemd-nspawn", "nsenter", "mount", "umount"):
            if not shutil.which(tool):
                raise Unavailable(f"{tool} is not installed (apt-get install systemd-container)")
        self._lock()
        # From here on a SIGTERM must not leave a container behind.
        self.old_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

        d = tempfile.mkdtemp(prefix="tcpexecd-nspawn.", dir="/tmp")
        self.state["dir"] = d
        for argv in (["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d],
                     ["mkdir", f"{d}/upper", f"{d}/work", f"{d}/root"],
                     ["mount", "-t", "overlay", "overlay", "-o",
                      f"lowerdir=/,upperdir={d}/upper,workdir={d}/work", f"{d}/root"]):
            rc, out = run_host(argv)
            if rc != 0:
                raise Unavailable(f"{' '.join(argv)} failed ({rc}): {out.strip()}")

        self.state["booted"] = True
        argv = ["systemd-nspawn", "-D", f"{d}/root", "--register=no", "--keep-unit",
                "--link-journal=no", "--private-network", "-b", "--", "--unit=basic.target"]
        log(" ".join(argv))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.state["nspawn_pid"] = self.proc.pid
        self.console = Reader(self.proc.stdout)
        self.console.start()

        def init_pid():
            if self.proc.poll() is not None:
                return -1
            kids = [p for p in child_pids(self.proc.pid) if comm(p) == "systemd"]
            return kids[0] if len(kids) == 1 else None

        t0 = time.monotonic()
        pid = wait_for(init_pid, BOOT_TIMEOUT)
        if not pid or pid < 0:
            raise Unavailable(f"systemd-nspawn did not start a container systemd "
                              f"(exit {self.proc.poll()}):\n{self.console.tail()}")
        self.state["init_pid"] = pid

        last = []

        def running():
            if self.proc.poll() is not None:
                return "exited"
            r = self.run("systemctl", "is-system-running", timeout=10)
            last[:] = [r.stdout.strip() or r.stderr.strip()]
            return last[0] if last[0] in ("running", "degraded") else None

        state = wait_for(running, max(1.0, BOOT_TIMEOUT - (time.monotonic() - t0)), 0.25)
        if state in (None, "exited"):
            raise Unavailable(f"the container's systemd did not come up within "
                              f"{BOOT_TIMEOUT:.0f} s (is-system-running: {last}; nspawn "
                              f"exit {self.proc.poll()}):\n{self.console.tail()}")
        log(f"container systemd (host pid {pid}) is {state} after "
            f"{time.monotonic() - t0:.1f} s")
        if state == "degraded":
            log("failed units:\n" + self.run("systemctl", "--failed", "--no-pager").stdout)

    def shutdown(self):
        """Always safe to call, also after a failed boot()."""
        if self.handed_off:
            return []
        problems = teardown(self.state)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                problems.append("systemd-nspawn was not reaped")
            if self.console:
                self.console.join(5)
            self.proc.stdout.close()
        if self.old_sigterm is not None:
            signal.signal(signal.SIGTERM, self.old_sigterm)
            self.old_sigterm = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        return problems

    def _lock(self):
        self.lock_fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        got = wait_for(lambda: self._try_lock(), LOCK_WAIT, 0.5)
        if not got:
            os.close(self.lock_fd)
            self.lock_fd = None
            raise Unavailable(f"another tcpexecd container run held {LOCK_PATH} "
                              f"for {LOCK_WAIT:.0f} s")

    def _try_lock(self):
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise

    def _on_sigterm(self, signo, frame):
        if not self.handed_off and self.lock_fd is not None:
            log("SIGTERM: handing the teardown to a detached process")
            hand_off(self.state, self.lock_fd)
            self.handed_off = True
        raise KeyboardInterrupt("SIGTERM")

    # -- inside

    def run(self, *argv, timeout=30.0, input=None):
        """argv inside the container (all its namespaces); CompletedProcess
        with text output. A timeout is an AssertionError."""
        full = ["nsenter", "-t", str(self.pid), "-a", *argv]
        try:
            return subprocess.run(full, input=input, capture_output=True, text=True,
                                  timeout=timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{' '.join(argv)}: no result within {timeout} s "
                                 f"(stdout {e.stdout!r}, stderr {e.stderr!r})") from None

    def popen(self, *argv):
        """argv inside the container, running on: stdout and stderr piped."""
        return subprocess.Popen(["nsenter", "-t", str(self.pid), "-a", *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def check(self, *argv, timeout=30.0):
        r = self.run(*argv, timeout=timeout)
        assert r.returncode == 0, \
            f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
        return r.stdout

    # -- files, written into the overlay (its tmpfs upper layer)

    def path(self, inside):
        assert inside.startswith("/")
        return self.root / inside.lstrip("/")

    def makedirs(self, inside):
        parts = Path(inside).parts
        for i in range(2, len(parts) + 1):
            p = self.path(str(Path(*parts[:i])))
            if not p.is_dir():
                p.mkdir()
                p.chmod(0o755)

    def install(self, src, inside, mode):
        self.makedirs(str(Path(inside).parent))
        dst = self.path(inside)
        shutil.copyfile(src, dst)
        dst.chmod(mode)

    def write(self, inside, text, mode=0o644):
        self.makedirs(str(Path(inside).parent))
        dst = self.path(inside)
        dst.write_text(text)
        dst.chmod(mode)

    def remove(self, inside):
        p = self.path(inside)
        if p.is_dir():
            shutil.rmtree(p)
            return True
        if p.exists():
            p.unlink()
            return True
        return False


# ---------------------------------------------------------------- pytest

# Why the container could not boot, once a test found out; see below.
unavailable = None


def pytest_sessionfinish(session, exitstatus):
    """Loaded as a plugin (`-p nspawn`, as meson runs the tests): when the
    container could not boot and so nothing ran, exit 77, which meson
    reports as SKIP rather than OK."""
    if unavailable and exitstatus == 0:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        stats = tr.stats if tr else {}
        if not any(stats.get(k) for k in ("passed", "failed", "error", "xpassed")):
            session.exitstatus = 77


if __name__ == "__main__":
    # The detached teardown after a SIGTERM: `nspawn.py cleanup STATE`.
    if len(sys.argv) == 3 and sys.argv[1] == "cleanup":
        left = teardown(json.loads(sys.argv[2]))
        for p in left:
            log(p)
        sys.exit(1 if left else 0)
    print(f"usage: {sys.argv[0]} cleanup STATE", file=sys.stderr)
    sys.exit(2)
