# SPDX-License-Identifier: MIT
"""
Remote execution through the real daemon and the real client: what goes in
and out of a command. Its stdout and stderr stay apart and intact, binary
data streams both ways, exit codes and signals come back as the client's own
status, arguments reach the command as data and never as shell syntax, and
the command starts with a clean environment and only fds 0, 1 and 2.
"""

import hashlib
import os
import re
import signal
import socket

import pytest

from execfix import client_error, rig  # noqa: F401  (rig is a fixture)

SH_BOTH = {"shell": "yes", "script": "printf 'out1\\n'; printf 'err1\\n' >&2; "
                                     "printf out2; printf err2 >&2"}
SH_MANY = {"shell": "yes",
           "script": "i=0; while [ $i -lt 3000 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done"}


def test_stdout_and_stderr_apart_and_intact(rig):
    d = rig.daemon({"both": SH_BOTH, "many": SH_MANY})
    r = rig.run(d, ["both"])
    assert (r.returncode, r.stdout, r.stderr) == (0, b"out1\nout2", b"err1\nerr2")

    r = rig.run(d, ["many"])
    assert r.returncode == 0, r.stderr[-300:]
    assert r.stdout == b"".join(b"o%d\n" % i for i in range(3000))
    assert r.stderr == b"".join(b"e%d\n" % i for i in range(3000))


def test_10mb_binary_round_trip_through_cat(rig):
    d = rig.daemon({"cat": {"path": "/bin/cat", "stdin": "yes"}})
    data = os.urandom(10 << 20)
    r = rig.run(d, ["cat"], input=data, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert len(r.stdout) == len(data)
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest()
    a = d.wait_audit("cat")[0]
    assert (a["status"], a["bytes_in"], a["bytes_out"]) == \
        ("exit:0", str(len(data)), str(len(data)))


def test_large_blocks_on_both_streams_stay_apart_and_in_order(rig, tmp_path):
    # Blocks of this size leave the daemon by splice(2) (64 KiB or more
    # waiting in a pipe); stdout and stderr take turns, and neither stream
    # may lose, repeat or reorder a byte, nor take one from the other.
    blob = tmp_path / "blob"
    data = os.urandom(300_000)
    blob.write_bytes(data)
    script = ('i=0; while [ $i -lt 30 ]; do head -c 200000 "$1"; '
              'head -c 150000 "$1" >&2; i=$((i+1)); done')
    d = rig.daemon({"blocks": {"shell": "yes", "script": script, "args": "any"}})
    r = rig.run(d, ["blocks", str(blob)], timeout=60)
    assert r.returncode == 0, r.stderr[-300:]
    assert len(r.stdout) == 30 * 200_000 and len(r.stderr) == 30 * 150_000
    assert r.stdout == data[:200_000] * 30
    assert r.stderr == data[:150_000] * 30


def test_output_limit_falls_exactly_on_a_large_output(rig, tmp_path):
    blob = tmp_path / "blob"
    data = os.urandom(5 << 20)
    blob.write_bytes(data)
    d = rig.daemon({"big": {"path": "/bin/cat", "arg": str(blob), "output_limit": "1M"}})
    r = rig.run(d, ["big"], timeout=60)
    assert r.returncode == 255
    assert client_error(r.stderr) == "output limit exceeded", r.stderr
    assert r.stdout == data[:1 << 20]


def test_400k_line_without_newline_through_cat(rig):
    d = rig.daemon({"cat": {"path": "/bin/cat"}})
    line = bytes(0x41 + (i * 7) % 26 for i in range(400 << 10))
    r = rig.run(d, ["cat"], input=line)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == line


def test_no_stdin_option_gives_empty_input(rig):
    d = rig.daemon({"cat": {"path": "/bin/cat"}})
    r = rig.run(d, ["cat"], opts=["-n"], input=b"not sent\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


@pytest.mark.parametrize("code", [0, 1, 77, 255])
def test_exit_codes(rig, code):
    d = rig.daemon({"code": {"shell": "yes", "script": 'exit "$1"', "args": "pattern",
                             "arg_pattern": "[0-9]+"}})
    r = rig.run(d, ["code", str(code)])
    assert r.returncode == code
    # A remote 255 is the command's status, not a client error: no message.
    assert r.stderr == b""
    assert d.wait_audit("code")[0]["status"] == f"exit:{code}"


def test_death_by_signal_is_reraised(rig):
    d = rig.daemon({"die": {"shell": "yes", "script": "echo before; kill -9 $$; echo after"}})
    r = rig.run(d, ["die"])
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert r.stdout == b"before\n"
    assert b"tcpexec:" not in r.stderr
    assert d.wait_audit("die")[0]["status"] == "signal:9"


def test_exit_status_after_closing_both_streams(rig):
    d = rig.daemon({"quiet": {"shell": "yes", "script": "exec >/dev/null 2>&1; sleep 1; exit 44"}})
    r = rig.run(d, ["quiet"])
    assert (r.returncode, r.stdout, r.stderr) == (44, b"", b"")


def test_stderr_after_stdout_closed_arrives(rig):
    d = rig.daemon({"late": {"shell": "yes",
                             "script": "echo early; exec 1>&-; sleep 0.2; echo late >&2; exit 5"}})
    r = rig.run(d, ["late"])
    assert (r.returncode, r.stdout, r.stderr) == (5, b"early\n", b"late\n")


INJECTIONS = ["$(touch {m})", "`touch {m}`", ";touch {m}", "| touch {m}", "&& touch {m}",
              "a\nb", "-n", "--", "-e", "'", '"', "*", "~", "$HOME", "%s%n", "\\", " ",
              "", "é ü", ">{m}"]


@pytest.mark.parametrize("entry", ["shell", "path"])
def test_arguments_arrive_literally(rig, entry, tmp_path):
    marker = tmp_path / "injected"
    commands = {
        # Client args become "$1" "$2"... of a fixed script.
        "shell": {"shell": "yes", "script": "printf '[%s]\\n' \"$@\"", "args": "any",
                  "workdir": str(tmp_path)},
        # No shell at all: printf with a fixed format as the first argument.
        "path": {"path": "/usr/bin/printf", "arg": "[%s]\\n", "args": "any",
                 "workdir": str(tmp_path)},
    }
    (tmp_path / "some-file").write_text("")  # something for a glob to find
    d = rig.daemon(commands)
    args = [a.replace("{m}", str(marker)) for a in INJECTIONS]
    r = rig.run(d, [entry, *args])
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == b"".join(b"[%s]\n" % a.encode() for a in args)
    assert not marker.exists(), "an argument was run as shell syntax"
    # The audit escapes the newline and the quotes: one record, one line.
    a = d.wait_audit(entry)[0]
    assert "\\x0a" in a["argv"] and '"\\""' in a["argv"], a["argv"]


def test_command_sees_only_fds_0_1_2(rig):
    # The shell forks ls, which lists the shell's descriptors, not its own.
    d = rig.daemon({"fds": {"shell": "yes", "script": "ls /proc/$$/fd"},
                    "fds-in": {"shell": "yes", "script": "ls /proc/$$/fd", "stdin": "yes"}})
    for name, stdin in (("fds", None), ("fds-in", b"x")):
        r = rig.run(d, [name], input=stdin)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [b"0", b"1", b"2"], f"{name}: {r.stdout!r}"


def test_clean_environment_despite_supervisor_variables(rig, tmp_path):
    # A real datagram socket, so that whatever the daemon sends to it
    # succeeds; what matters is that none of this reaches a command.
    notify_path = rig.sockdir / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    try:
        supervisor = {"NOTIFY_SOCKET": str(notify_path), "LISTEN_FDS": "0",
                      "LISTEN_PID": "1", "LISTEN_FDNAMES": "none",
                      "WATCHDOG_USEC": "600000000", "WATCHDOG_PID": "1",
                      "SECRET_OF_THE_DAEMON": "leaked"}
        d = rig.daemon({"env": {"path": "/usr/bin/env", "env": "FOO",
                                "setenv": "FIXED=from-config"}}, env=supervisor)
        r = rig.run(d, ["env"], opts=["-e", "FOO=bar baz"])
    finally:
        notify.close()
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.decode().splitlines())
    peer = d.wait_audit("env")[0]["peer"]
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/",
        "TCPEXEC_REMOTE_ADDR": "127.0.0.1",
        "TCPEXEC_REMOTE_PORT": peer.rsplit(":", 1)[1],
        "TCPEXEC_COMMAND": "env",
        "FIXED": "from-config",
        "FOO": "bar baz",
    }


def test_client_variable_must_be_accepted_by_the_entry(rig, tmp_path):
    marker = tmp_path / "ran"
    d = rig.daemon({"e": {"shell": "yes", "script": f'touch {marker}; echo "$FOO"',
                          "env": "FOO"}})
    r = rig.run(d, ["e"], opts=["-e", "FOO=bar"])
    assert (r.returncode, r.stdout) == (0, b"bar\n")
    marker.unlink()

    r = rig.run(d, ["e"], opts=["-e", "FOO=bar", "-e", "BAR=x"])
    assert r.returncode == 255
    assert client_error(r.stderr) == "not allowed", r.stderr
    assert r.stdout == b""
    assert not marker.exists()
    a = d.wait_audit("e", count=2)[-1]
    assert a["decision"] == "deny" and re.search(r"\bBAR\b", a["reason"] or ""), a
