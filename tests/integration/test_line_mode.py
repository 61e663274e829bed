# SPDX-License-Identifier: MIT
"""
Line mode through the real daemon: a client whose first byte is not 0x01
sends one command per line (netcat, a script), gets stdout and stderr
merged and raw, errors as `tcpexecd: NAME: message` lines, and no exit
status. A partial line followed by silence counts as a line. Words are split
like the client's prompt, with no shell. line_mode = off refuses it.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest

from execfix import LIVE, finish, rig  # noqa: F401  (rig is a fixture)

ECHO = {"echo": {"path": "/bin/echo", "args": "any"}}


def recv_until_eof(s, timeout=LIVE, limit=1 << 20):
    deadline = time.monotonic() + timeout
    buf = b""
    for _ in range(100000):
        left = deadline - time.monotonic()
        assert left > 0, f"the server did not close within {timeout} s: {buf!r}"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk
        assert len(buf) <= limit
    raise AssertionError("recv loop bound reached")


def recv_exactly(s, want, timeout=LIVE):
    deadline = time.monotonic() + timeout
    buf = b""
    for _ in range(100000):
        if len(buf) >= len(want):
            break
        left = deadline - time.monotonic()
        assert left > 0, f"expected {want!r} within {timeout} s, got {buf!r}"
        s.settimeout(left)
        chunk = s.recv(len(want) - len(buf))
        assert chunk, f"connection closed; expected {want!r}, got {buf!r}"
        buf += chunk
    assert buf == want
    return buf


def netcat(rig, d, data, timeout=30):
    nc = shutil.which("nc")
    if nc is None:
        pytest.skip("nc (netcat-openbsd) is not installed")
    host, port = d.target()
    p = subprocess.Popen([nc, "-N", host, str(port)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    rig.clients.append(p)
    return finish(p, data, timeout)


def test_netcat_lines(rig):
    d = rig.daemon(ECHO)
    r = netcat(rig, d, b"echo hi\nnope\necho last\r\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split(b"\n")
    assert lines[0] == b"hi"
    assert lines[1].startswith(b"tcpexecd: unknown command: "), r.stdout
    assert lines[2:] == [b"last", b""], r.stdout
    assert [a["decision"] for a in d.wait_audit("echo", count=2)] == ["allow", "allow"]
    assert d.audits(command="nope")[0]["decision"] == "deny"


def test_stdout_and_stderr_merged_in_order(rig):
    d = rig.daemon({"mix": {"shell": "yes", "script": "echo 1; echo 2 >&2; echo 3; echo 4 >&2"},
                    "code": {"shell": "yes", "script": "echo x; exit 9"}})
    r = netcat(rig, d, b"mix\ncode\n")
    # No exit status in line mode: just the output.
    assert r.stdout == b"1\n2\n3\n4\nx\n"


def test_words_are_split_without_a_shell(rig, tmp_path):
    marker = tmp_path / "injected"
    d = rig.daemon({"show": {"shell": "yes", "script": "printf '[%s]\\n' \"$@\"", "args": "any"}})
    line = (f"show '$(touch {marker})' \"a  b\" c\\ d ';' `id` * $HOME"
            f" \"q\\\"q\" ''\n").encode()
    r = netcat(rig, d, line)
    assert r.stdout == (f"[$(touch {marker})]\n[a  b]\n[c d]\n[;]\n[`id`]\n[*]\n"
                        "[$HOME]\n[q\"q]\n[]\n").encode()
    assert not marker.exists()


def test_unbalanced_quote_is_an_error_line(rig):
    d = rig.daemon(ECHO)
    r = netcat(rig, d, b"echo 'oops\necho fine\n")
    lines = r.stdout.split(b"\n")
    assert lines[0].startswith(b"tcpexecd: bad request: "), r.stdout
    assert lines[1:] == [b"fine", b""], r.stdout
    assert d.wait_audit("echo", decision="allow")[0]["argv"] == '"echo" "fine"'


def test_one_write_without_newline_then_wait(rig):
    d = rig.daemon(ECHO)
    with d.connect() as s:
        s.sendall(b"echo one-write")
        # No newline, no FIN: the daemon must treat the silence as the end
        # of the line.
        recv_exactly(s, b"one-write\n")
        s.sendall(b"echo again\n")
        recv_exactly(s, b"again\n")
        s.shutdown(socket.SHUT_WR)
        assert recv_until_eof(s) == b""


def test_eof_after_last_line_finishes_the_command_first(rig):
    d = rig.daemon({"slow": {"shell": "yes", "script": "sleep 0.5; echo done"}})
    with d.connect() as s:
        s.sendall(b"slow\n")
        s.shutdown(socket.SHUT_WR)
        assert recv_until_eof(s) == b"done\n"


def test_policy_applies_in_line_mode(rig, tmp_path):
    marker = tmp_path / "ran"
    d = rig.daemon({"noargs": {"shell": "yes", "script": f'touch "{marker}"'},
                    "far": {"shell": "yes", "script": f'touch "{marker}"',
                            "allow": "10.0.0.0/8"}})
    r = netcat(rig, d, b"noargs x\nfar\n")
    lines = r.stdout.split(b"\n")
    assert lines[0].startswith(b"tcpexecd: not allowed: "), r.stdout
    assert lines[1].startswith(b"tcpexecd: not allowed: "), r.stdout
    assert lines[2:] == [b""], r.stdout
    assert not marker.exists()


def test_line_mode_off_refuses(rig, tmp_path):
    marker = tmp_path / "ran"
    d = rig.daemon({"mk": {"shell": "yes", "script": f'touch "{marker}"'}}, line_mode="off")
    with d.connect() as s:
        s.sendall(b"mk\n")
        out = recv_until_eof(s)
    assert out == b"tcpexecd: bad request: line mode is not enabled for this address\n"
    assert not marker.exists()
    assert d.audits() == []


def test_line_mode_all_still_serves_loopback(rig):
    d = rig.daemon(ECHO, line_mode="all")
    r = netcat(rig, d, b"echo all\n")
    assert r.stdout == b"all\n"


def test_command_stdin_is_dev_null_and_eats_no_lines(rig):
    d = rig.daemon(ECHO | {"cat": {"path": "/bin/cat"}})
    r = netcat(rig, d, b"cat\necho after\n")
    assert r.stdout == b"after\n"


def test_last_line_without_newline_before_eof(rig):
    d = rig.daemon(ECHO)
    r = netcat(rig, d, b"echo first\necho tail")
    assert r.stdout == b"first\ntail\n"


def test_timeout_is_reported_as_a_line(rig):
    m = "300." + str(os.getpid())
    d = rig.daemon(ECHO | {"slow": {"path": "/bin/sleep", "arg": m, "timeout": "500ms"}})
    r = netcat(rig, d, b"slow\necho next\n")
    lines = r.stdout.split(b"\n")
    assert lines[0].startswith(b"tcpexecd: timeout: "), r.stdout
    assert lines[1:] == [b"next", b""], r.stdout


def test_overlong_line_is_refused(rig, tmp_path):
    # A line above 64 KiB is refused whether it arrives in pieces or, as
    # here, all at once together with its newline.
    marker = tmp_path / "ran"
    d = rig.daemon({"mk": {"shell": "yes", "script": f'touch "{marker}"', "args": "any"}})
    with d.connect() as s:
        try:
            s.sendall(b"mk " + b"x" * (100 << 10) + b"\n")
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon may close before reading it all
        out = recv_until_eof(s)
    assert not marker.exists(), "the overlong line was run"
    assert out.startswith(b"tcpexecd: too large: ") and out.count(b"\n") == 1, out[:200]
    assert d.audits(decision="allow") == []
