# SPDX-License-Identifier: MIT
"""
Daemon mode (no -f, not under systemd): the launcher returns only once the
daemon listens, the pidfile is written and locked, a second instance is
refused, a stale pidfile does not block, start-up errors reach the
launcher's stderr, SIGTERM removes the pidfile and SIGUSR1 reopens the log.
"""

import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import (BINARY, POLL, busy_listener, clean_env, config_text, exchange,
                      kill_tree, proc_stat, procs_with_arg, run_status, same_proc,
                      tcp_listen_ports, wait_all_gone, wait_exit, wait_for)


@pytest.fixture
def launch(tmp_path, base_config, cleanup_by_conf):
    """launch(keys, args) -> (returncode, stdout, stderr) of the launcher.

    The launcher's output goes to files, not pipes: a daemon that kept them
    open would otherwise hang the read, and that is not what we test here.
    """
    counter = [0]

    def run(conf, args=(), timeout=15):
        cleanup_by_conf.conf(conf)
        counter[0] += 1
        out = tmp_path / f"launcher{counter[0]}.out"
        err = tmp_path / f"launcher{counter[0]}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            p = subprocess.Popen([BINARY, "-c", str(conf), *args], stdin=subprocess.DEVNULL,
                                 stdout=o, stderr=e, env=clean_env(), start_new_session=True)
            ident = proc_stat(p.pid).ident
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                wait_all_gone(kill_tree([ident]))
                p.wait(10)
                raise AssertionError(f"launcher still running after {timeout} s") from None
        return rc, out.read_text(), err.read_text()

    def config(**keys):
        cfg = dict(base_config, log_file=str(tmp_path / "tcpexecd.log"))
        cfg.update(keys)
        conf = tmp_path / "tcpexecd.conf"
        conf.write_text(config_text(cfg))
        return conf

    run.config = config
    run.track = cleanup_by_conf.track
    run.log = tmp_path / "tcpexecd.log"
    return run


def _read_pidfile(path):
    text = path.read_text()
    assert re.fullmatch(r"[1-9]\d*\n", text), f"pidfile content {text!r}"
    return int(text)


def _start(launch, tmp_path, **keys):
    conf = launch.config(**dict({"workers": 2, "min_spare": 1, "max_spare": 2}, **keys))
    pidfile = tmp_path / "tcpexecd.pid"
    rc, out, err = launch(conf, ["-p", str(pidfile)])
    assert rc == 0, f"launcher exited {rc}: {err}"
    pid = _read_pidfile(pidfile)
    ident = launch.track(pid)
    assert ident is not None and same_proc(ident).state != "Z", "daemon not running"
    return conf, pidfile, pid, ident


def test_daemon_lifecycle(launch, tmp_path):
    conf, pidfile, pid, ident = _start(launch, tmp_path)

    # Ready means listening: the very first connect must succeed.
    ports = tcp_listen_ports(pid)
    assert len(ports) == 1, f"listening ports of {pid}: {ports}"
    addr = (socket.AF_INET, ("127.0.0.1", ports[0]))
    served_by = exchange(addr, b"first")
    assert proc_stat(served_by).ppid == pid

    lock = subprocess.run(["flock", "-n", str(pidfile), "true"], timeout=10)
    assert lock.returncode != 0, "the pidfile is not locked"

    st = run_status(conf)
    assert st.master_pid == pid

    # A second instance with the same pidfile is refused and disturbs nothing.
    rc, out, err = launch(conf, ["-p", str(pidfile)])
    assert rc != 0, "second instance started"
    assert str(pidfile) in err or re.search(r"(?i)already running", err), err
    assert _read_pidfile(pidfile) == pid
    assert run_status(conf).master_pid == pid
    exchange(addr, b"still first")

    wait_for(lambda: launch.log.exists() and re.search(
        r"worker \d+ started", launch.log.read_text()), 5, "worker lines in log_file")

    workers = [st.ident for st in procs_with_arg(str(conf)) if st.pid != pid]
    os.kill(pid, signal.SIGTERM)
    status = wait_exit(ident, 10)
    assert status in (0, None), f"daemon exit status {status}"
    assert not pidfile.exists(), "pidfile left behind"
    assert wait_all_gone(workers) == []


def test_stale_pidfile_does_not_block(launch, tmp_path):
    # The pid of a child we have just reaped: certainly not running.
    dead = subprocess.Popen(["true"])
    assert dead.wait(10) == 0
    (tmp_path / "tcpexecd.pid").write_text(f"{dead.pid}\n")
    conf, pidfile, pid, ident = _start(launch, tmp_path)
    assert pid != dead.pid
    ports = tcp_listen_ports(pid)
    assert len(ports) == 1, ports
    exchange((socket.AF_INET, ("127.0.0.1", ports[0])))


def test_startup_error_reaches_launcher(launch, tmp_path):
    with busy_listener() as busy:
        port = busy.getsockname()[1]
        conf = launch.config(listen=f"127.0.0.1:{port}", workers=1)
        rc, out, err = launch(conf, ["-p", str(tmp_path / "tcpexecd.pid")])
    assert rc == 1, f"launcher exited {rc}: {err}"
    assert f"127.0.0.1:{port}" in err, err
    assert wait_for(lambda: not [s for s in procs_with_arg(str(conf)) if s.state != "Z"],
                    5, "no daemon process left", interval=POLL)


def test_sigusr1_reopens_log_file(launch, tmp_path):
    conf, pidfile, pid, ident = _start(launch, tmp_path)
    log = launch.log
    wait_for(lambda: log.exists() and "started" in log.read_text(), 5, "log_file written")
    rotated = tmp_path / "tcpexecd.log.1"
    log.rename(rotated)
    os.kill(pid, signal.SIGUSR1)
    wait_for(log.exists, 5, "the log file to be reopened (created anew)")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "reloading configuration" in log.read_text(), 5,
             "the reload to be logged in the new file")
    assert "reloading configuration" not in rotated.read_text()
    assert same_proc(ident) is not None and same_proc(ident).state != "Z"
