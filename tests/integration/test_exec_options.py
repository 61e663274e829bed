# SPDX-License-Identifier: MIT
"""
The per-command options of tcpexecd.conf as a command experiences them,
through the real daemon and client: stdin = no, workdir, rlimits, user and
group, an executable that vanished after the configuration was read
(spawn failed), and frame sizes at the smallest max_frame.
"""

import hashlib
import os
import pwd

import pytest

from execfix import client_error, finish, rig  # noqa: F401  (rig is a fixture)


def test_stdin_no_gives_dev_null(rig):
    d = rig.daemon({"cat": {"path": "/bin/cat", "stdin": "no"},
                    "what": {"shell": "yes", "script": "readlink /proc/$$/fd/0", "stdin": "no"}})
    r = rig.run(d, ["cat"], input=b"must not arrive\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    r = rig.run(d, ["what"], input=b"x")
    assert r.stdout == b"/dev/null\n", r.stderr


def test_workdir(rig, tmp_path):
    d = rig.daemon({"here": {"shell": "yes", "script": "pwd", "workdir": str(tmp_path)},
                    "root": {"shell": "yes", "script": "pwd"}})
    assert rig.run(d, ["here"]).stdout == f"{tmp_path}\n".encode()
    assert rig.run(d, ["root"]).stdout == b"/\n"


def test_rlimits(rig):
    d = rig.daemon({"lim": {"shell": "yes", "script": "ulimit -n; ulimit -t; ulimit -f",
                            "rlimit_nofile": 37, "rlimit_cpu": 7, "rlimit_fsize": "1M"}})
    r = rig.run(d, ["lim"])
    assert r.returncode == 0, r.stderr
    nofile, cpu, fsize = r.stdout.split()
    assert (nofile, cpu) == (b"37", b"7"), r.stdout
    # dash counts -f in 512-byte blocks, bash in 1024-byte ones.
    assert fsize in (b"2048", b"1024"), r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_user_and_group(rig):
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    d = rig.daemon({"who": {"shell": "yes", "script": "id -u; id -g; id -G", "user": "nobody"}})
    r = rig.run(d, ["who"])
    assert r.returncode == 0, r.stderr
    uid, gid, groups = r.stdout.decode().splitlines()
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    # No supplementary group of the daemon (root) is kept.
    assert groups.split() == [str(nobody.pw_gid)]


def test_vanished_executable_is_spawn_failed(rig, tmp_path):
    exe = tmp_path / "tool"
    exe.write_text("#!/bin/sh\necho tool ran\n")
    exe.chmod(0o755)
    d = rig.daemon({"tool": {"path": str(exe)}, "echo": {"path": "/bin/echo", "args": "any"}})
    assert rig.run(d, ["tool"]).stdout == b"tool ran\n"
    exe.unlink()
    r = rig.run(d, ["tool"])
    assert r.returncode == 255
    assert client_error(r.stderr) == "spawn failed", r.stderr
    assert d.wait_audit("tool", count=2)[-1]["status"] == "error:spawn failed"
    # The worker survives it.
    assert rig.run(d, ["echo", "ok"]).stdout == b"ok\n"


def test_smallest_max_frame_streams_in_many_frames(rig, tmp_path):
    # The input is a file, readable at once: the client has it before the
    # server's HELLO_OK (and its max_frame) can have arrived, and must still
    # send no STDIN frame above the limit it has not yet learnt (spec 5:
    # stay within the defaults until then, or wait for HELLO_OK).
    d = rig.daemon({"cat": {"path": "/bin/cat"}}, max_frame="4K")
    data = os.urandom(1 << 20)
    src = tmp_path / "input"
    src.write_bytes(data)
    with open(src, "rb") as f:
        r = finish(rig.spawn(d, ["cat"], stdin=f), timeout=60)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest()


def test_request_above_max_frame_is_refused(rig, tmp_path):
    marker = tmp_path / "ran"
    d = rig.daemon({"mk": {"shell": "yes", "script": f'touch "{marker}"', "args": "any"}},
                   max_frame="4K")
    r = rig.run(d, ["mk"] + ["x" * 1000] * 8)
    assert r.returncode == 255
    assert r.stderr.startswith(b"tcpexec: "), r.stderr
    assert not marker.exists()
    assert d.audits(decision="allow") == []
