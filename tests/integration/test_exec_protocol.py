# SPDX-License-Identifier: MIT
"""
The framed protocol spoken by hand against the real daemon: an oversized
frame, malformed or out-of-sequence frames and a silent client are each
answered as docs/protocol.md says (an ERROR frame with the right code, then
close), and the daemon serves a normal request afterwards. One worker only,
so that "afterwards" is the very worker that met the bad client.
"""

import socket
import struct
import subprocess
import threading

import pytest

import harness
from execfix import (BAD_REQUEST, EXIT, HANDSHAKE_TIMEOUT, HELLO_OK, IDLE_TIMEOUT, STDIN,
                     STDOUT, TCPEXEC, TOO_LARGE, Frames, client_env, descendants, error_code,
                     frame, hello_frame, procs_with_arg, request_frame, take_frame, wait_for,
                     wait_no_proc_with)
from execfix import rig  # noqa: F401  (a fixture)

ONE_WORKER = {"workers": 1, "min_spare": 0, "max_spare": 1, "max_workers": 1}
ECHO = {"echo": {"path": "/bin/echo", "args": "any"}}


def still_serves(rig, d):
    r = rig.run(d, ["echo", "alive"])
    assert (r.returncode, r.stdout, r.stderr) == (0, b"alive\n", b"")


def handshake(d):
    s = d.connect()
    s.sendall(hello_frame())
    f = Frames(s)
    t, payload = f.next()
    assert t == HELLO_OK and payload[:5] == b"TCPX\x01", (t, payload[:16])
    return s, f


def test_raw_request_runs(rig):
    # The hand-made frames are right: a well-formed request is served.
    d = rig.daemon(ECHO, **ONE_WORKER)
    s, f = handshake(d)
    with s:
        s.sendall(request_frame(["echo", "raw"]))
        assert f.next() == (STDOUT, b"raw\n")
        t, payload = f.next()
        assert t == EXIT and payload[:4] == b"\0\0\0\0", (t, payload)


@pytest.mark.parametrize("announced", [2 << 20, 100 << 20])
def test_oversize_frame(rig, announced):
    d = rig.daemon(ECHO, **ONE_WORKER)
    s, f = handshake(d)
    with s:
        # Only the header: the daemon must judge it by the length alone.
        s.sendall(struct.pack(">BI", 0x02, announced))
        assert error_code(f.next()) == TOO_LARGE
        f.expect_eof()
    still_serves(rig, d)


def test_oversize_frame_sent_in_full(rig):
    # The whole 2 MiB frame is sent (from a thread: the daemon stops
    # reading); the ERROR must still reach a client that reads.
    d = rig.daemon(ECHO, **ONE_WORKER)
    s, f = handshake(d)
    big = struct.pack(">BI", 0x02, 2 << 20) + bytes(2 << 20)

    def send():
        try:
            s.sendall(big)
        except OSError:
            pass
    t = threading.Thread(target=send, daemon=True)
    t.start()
    with s:
        assert error_code(f.next()) == TOO_LARGE
        f.expect_eof()
    t.join(10)
    still_serves(rig, d)


@pytest.mark.parametrize("header, tail, code", [
    # A frame above max_frame is TOO_LARGE at any point of the session,
    # also while a command runs (docs/protocol.md section 3).
    (struct.pack(">BI", STDIN, 2 << 20), b"", TOO_LARGE),
    # While a command runs only STDIN frames may be large (the rest of
    # them is spliced); a large frame of another type is refused at its
    # header as a bad request, not waited for.
    (struct.pack(">BI", 0x02, 100 << 10), b"x" * 1000, BAD_REQUEST),
], ids=["oversize-stdin", "large-non-stdin"])
def test_bad_large_frame_while_running(rig, header, tail, code):
    m = rig.marker()
    d = rig.daemon(ECHO | {"slow": {"path": "/bin/sleep", "arg": m}}, **ONE_WORKER)
    s, f = handshake(d)
    with s:
        s.sendall(request_frame(["slow"], no_stdin=False))
        wait_for(lambda: procs_with_arg(m), 10, "the remote sleep to start")
        s.sendall(header + tail)
        assert error_code(f.next()) == code
        f.expect_eof()
    assert wait_no_proc_with(m) == []
    still_serves(rig, d)


def test_oversize_hello(rig):
    # Before the handshake the limit is 4096 bytes (PROTO_MAX_HELLO), and a
    # length is checked as soon as the header carrying it has arrived.
    d = rig.daemon(ECHO, handshake_timeout="3s", **ONE_WORKER)
    with d.connect() as s:
        s.sendall(struct.pack(">BI", 0x01, 8192))
        assert error_code(Frames(s).next()) == TOO_LARGE
    still_serves(rig, d)


GARBAGE = {
    "bad magic": frame(0x01, b"NOTMAGIC"),
    "version 0": frame(0x01, b"TCPX\x00"),
    "truncated field": frame(0x01, b"TCPX\x01\x02\x00\x04\x00"),
    "short MAX_PAYLOAD": frame(0x01, b"TCPX\x01\x02\x00\x04\x00\x00\x01\x00"),
}


@pytest.mark.parametrize("name", GARBAGE)
def test_malformed_hello(rig, name):
    d = rig.daemon(ECHO, **ONE_WORKER)
    with d.connect() as s:
        s.sendall(GARBAGE[name])
        f = Frames(s)
        assert error_code(f.next()) == BAD_REQUEST
        f.expect_eof()
    still_serves(rig, d)


AFTER_HELLO = {
    "unknown type": frame(0x7f, b"x"),
    "server frame type": frame(HELLO_OK, b"TCPX\x01"),
    "second HELLO": hello_frame(),
    "REQUEST without ARG": frame(0x02, b""),
    "ARG with NUL": request_frame(["echo", "a\0b"]),
    "field past the end": frame(0x02, struct.pack(">BI", 0x81, 100) + b"echo"),
    "unknown critical field": frame(0x02, struct.pack(">BI", 0x81, 4) + b"echo"
                                    + struct.pack(">BI", 0xc0, 0)),
    "unknown FLAGS bit": frame(0x02, struct.pack(">BI", 0x81, 4) + b"echo"
                               + struct.pack(">BII", 0x84, 4, 0x80)),
}


@pytest.mark.parametrize("name", AFTER_HELLO)
def test_bad_frame_after_hello(rig, name):
    d = rig.daemon(ECHO, **ONE_WORKER)
    s, f = handshake(d)
    with s:
        s.sendall(AFTER_HELLO[name])
        assert error_code(f.next()) == BAD_REQUEST
        f.expect_eof()
    still_serves(rig, d)
    # The log is in order: once the good request's record is there, a
    # record of the malformed one would be too.
    d.wait_audit("echo")
    assert [a["argv"] for a in d.audits()] == ['"echo" "alive"'], "a malformed request ran"


def test_silent_client_is_dropped(rig):
    d = rig.daemon(ECHO, handshake_timeout="500ms", **ONE_WORKER)
    with d.connect() as s:
        # Nothing sent: the daemon cannot even tell framed from line mode,
        # so it closes, without a word or with an error; it must not hang.
        f = Frames(s)
        first = f.next()
        if first is not None:
            assert error_code(first) == HANDSHAKE_TIMEOUT
            f.expect_eof()
    still_serves(rig, d)


def test_partial_header_times_out(rig):
    d = rig.daemon(ECHO, handshake_timeout="500ms", **ONE_WORKER)
    with d.connect() as s:
        s.sendall(b"\x01\x00")
        f = Frames(s)
        assert error_code(f.next()) == HANDSHAKE_TIMEOUT
        f.expect_eof()
    still_serves(rig, d)


def test_idle_connection_between_requests_times_out(rig):
    d = rig.daemon(ECHO, idle_timeout="500ms", **ONE_WORKER)
    s, f = handshake(d)
    with s:
        s.sendall(request_frame(["echo", "one"]))
        assert f.next() == (STDOUT, b"one\n")
        assert f.next()[0] == EXIT
        assert error_code(f.next()) == IDLE_TIMEOUT
        f.expect_eof()
    still_serves(rig, d)


def test_hello_without_request_times_out(rig):
    d = rig.daemon(ECHO, handshake_timeout="500ms", **ONE_WORKER)
    s, f = handshake(d)
    with s:
        assert error_code(f.next()) == HANDSHAKE_TIMEOUT
        f.expect_eof()
    still_serves(rig, d)


def test_half_close_mid_command_kills_it(rig):
    # A framed client never half-closes while its command runs; FIN means it
    # is gone. The daemon must not keep the command running for nobody.
    m = rig.marker()
    d = rig.daemon(ECHO | {"slow": {"path": "/bin/sleep", "arg": m}}, **ONE_WORKER)
    s, f = handshake(d)
    with s:
        s.sendall(request_frame(["slow"]))
        wait_for(lambda: procs_with_arg(m), 10, "the remote sleep to start")
        s.shutdown(socket.SHUT_WR)
        assert wait_no_proc_with(m) == [], "the command outlived its client"
    a = d.wait_audit("slow")[0]
    assert a["status"] != "exit:0", a
    still_serves(rig, d)


def send_in_thread(sock, data):
    t = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    t.start()
    return t


def read_stdout_until_exit(f, limit=4 << 20):
    out = b""
    for _ in range(10000):
        t, payload = f.next()
        if t == EXIT:
            return out, payload
        assert t == STDOUT, (t, payload[:80])
        out += payload
        assert len(out) <= limit
    raise AssertionError("no EXIT frame")


@pytest.mark.parametrize("size", [900 << 10, (1 << 20) - 5])
def test_large_stdin_frames_arrive_whole(rig, size):
    # A STDIN frame this large passes mostly by splice(2) from the socket
    # into the command's stdin; bytes must neither be lost nor be taken for
    # frame headers, and the connection serves its next request after.
    d = rig.daemon({"cat": {"path": "/bin/cat"}, **ECHO}, **ONE_WORKER)
    data = bytes((i * 131 + i // 4099) & 0xFF for i in range(size))
    s, f = handshake(d)
    with s:
        sender = send_in_thread(s, request_frame(["cat"], no_stdin=False) + frame(STDIN, data)
                                + frame(STDIN, data[:70000]) + frame(0x04))
        out, status = read_stdout_until_exit(f)
        sender.join(10)
        assert status[:4] == b"\0\0\0\0", status
        assert len(out) == size + 70000 and out == data + data[:70000]
        s.sendall(request_frame(["echo", "next"]))
        assert f.next() == (STDOUT, b"next\n")
        assert f.next()[0] == EXIT


def test_large_stdin_frame_a_command_stops_reading_is_dropped_whole(rig):
    # head reads 10 bytes and exits: the rest of the large frame (in the
    # socket or on its way to a closed pipe) is dropped as a whole, and the
    # next request on the connection is read from the right byte.
    d = rig.daemon({"head": {"shell": "yes", "script": "head -c 10"}, **ECHO}, **ONE_WORKER)
    data = bytes(range(256)) * (3600)
    s, f = handshake(d)
    with s:
        sender = send_in_thread(s, request_frame(["head"], no_stdin=False) + frame(STDIN, data)
                                + frame(0x04))
        out, status = read_stdout_until_exit(f)
        sender.join(10)
        assert not sender.is_alive(), "the daemon stopped reading the dropped input"
        assert status[:4] == b"\0\0\0\0", status
        assert out == data[:10]
        s.sendall(request_frame(["echo", "after"]))
        assert f.next() == (STDOUT, b"after\n")
        assert f.next()[0] == EXIT


def test_large_stdin_frame_for_a_command_without_stdin_is_dropped_whole(rig):
    # The request said "no stdin"; a large STDIN frame sent while the
    # command runs is dropped as it comes, and the connection goes on.
    d = rig.daemon({"nap": {"shell": "yes", "script": "sleep 0.5; echo done"}, **ECHO},
                   **ONE_WORKER)
    data = bytes(range(256)) * 1200
    s, f = handshake(d)
    with s:
        sender = send_in_thread(s, request_frame(["nap"], no_stdin=True) + frame(STDIN, data))
        out, status = read_stdout_until_exit(f)
        sender.join(10)
        assert (out, status[:4]) == (b"done\n", b"\0\0\0\0")
        s.sendall(request_frame(["echo", "after"]))
        assert f.next() == (STDOUT, b"after\n")
        assert f.next()[0] == EXIT


def test_client_reset_mid_stream_leaves_nothing_for_the_next(rig, tmp_path):
    # A large output goes to the socket by splice(2), through a pipe the
    # worker keeps from one request to the next. A client that resets the
    # connection in the middle of it must take those bytes with it: the
    # next request on the same worker gets its own output, and only that.
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"\xaa" * (16 << 20))
    data = bytes(range(256)) * (3 << 12)
    second.write_bytes(data)
    d = rig.daemon(ECHO | {"first": {"path": "/bin/cat", "arg": str(first)},
                           "second": {"path": "/bin/cat", "arg": str(second)}}, **ONE_WORKER)
    for _ in range(3):
        s, f = handshake(d)
        s.sendall(request_frame(["first"]))
        got = 0
        while got < 2 << 20:
            t, payload = f.next()
            assert t == STDOUT and payload == b"\xaa" * len(payload), (t, payload[:16])
            got += len(payload)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        r = rig.run(d, ["second"], timeout=60)
        assert (r.returncode, r.stderr) == (0, b""), r.stderr[-300:]
        assert r.stdout == data


def test_input_left_in_flight_at_exit_never_reaches_the_next_command(rig):
    # A 15 MiB STDIN frame for a command that never reads: its pipe fills
    # (a pipe counts buffers, not bytes: spliced from a socket, several MiB
    # fit), more waits in the worker's own relay pipe, the rest in the
    # socket. The command exits while a background child of it
    # keeps its stdin open (so the pipe never reports a missing reader).
    # All of that input is dropped, and the next command on the same worker
    # reads its own input, and only it.
    nap = "exec 3<&0; sleep 5 <&3 >/dev/null 2>&1 & sleep 0.5"
    d = rig.daemon({"nap": {"shell": "yes", "script": nap},
                    "cat": {"path": "/bin/cat"}}, max_frame="16M", **ONE_WORKER)
    stale = b"\xee" * (15 << 20)
    data = bytes((i * 37 + i // 1021) & 0xFF for i in range(900 << 10))
    for _ in range(3):
        s, f = handshake(d)
        with s:
            sender = send_in_thread(s, request_frame(["nap"], no_stdin=False)
                                    + frame(STDIN, stale))
            out, status = read_stdout_until_exit(f)
            sender.join(10)
            assert not sender.is_alive(), "the daemon stopped reading the dropped input"
            assert (out, status[:4]) == (b"", b"\0\0\0\0"), status
            # Three frames: more than the worker reads before cat starts,
            # so that the later ones pass through the relay pipe.
            sender = send_in_thread(s, request_frame(["cat"], no_stdin=False)
                                    + frame(STDIN, data) * 3 + frame(0x04))
            out, status = read_stdout_until_exit(f, limit=4 << 20)
            sender.join(10)
            assert status[:4] == b"\0\0\0\0", status
            assert len(out) == 3 * len(data) and out == data * 3


# ---------------------------------------------------------------- LAST

def worker_sockets(d):
    """Inodes of the sockets the one worker of d holds: its listeners and
    any client connection it has not closed yet."""
    (pid, _), = descendants(d.pid)
    return harness.socket_inodes(pid)


def quiet_for(sock, seconds):
    """True if nothing, not even EOF, arrives on sock for that long."""
    sock.settimeout(seconds)
    try:
        sock.recv(1, socket.MSG_PEEK)   # data, or b"" at EOF
    except socket.timeout:
        return True
    return False


def test_last_request_the_server_closes_first(rig):
    # REQUEST flag LAST: no request follows. With no other connection
    # waiting the worker does not wait for the client's close: the client
    # sees EOF right after EXIT while it still holds its socket open, and the
    # worker lets go of the connection by itself.
    d = rig.daemon(ECHO, **ONE_WORKER)
    still_serves(rig, d)
    idle = worker_sockets(d)
    for i in range(20):
        s, f = handshake(d)
        with s:
            s.sendall(request_frame(["echo", f"last{i}"], last=True))
            assert f.next() == (STDOUT, f"last{i}\n".encode())
            assert f.next()[0] == EXIT
            f.expect_eof(timeout=5)
            if i == 0:
                # The client has not closed: the worker closes its side
                # anyway, LINGER_MS later at the latest.
                wait_for(lambda: worker_sockets(d) <= idle, 5,
                         "the worker to close the set-aside connection")
    wait_for(lambda: worker_sockets(d) <= idle, 5, "the worker to hold no connection")
    still_serves(rig, d)


def test_last_request_with_a_connection_waiting(rig):
    # When another connection waits for the worker, the client of the LAST
    # request closes first, as on any connection; a REQUEST after the LAST
    # one is a protocol error. Then the waiting connection is served.
    d = rig.daemon(ECHO, **ONE_WORKER)
    s, f = handshake(d)
    with s:
        other = d.connect()   # queued: the one worker is busy with s
        with other:
            s.sendall(request_frame(["echo", "first"], last=True))
            assert f.next() == (STDOUT, b"first\n")
            assert f.next()[0] == EXIT
            assert quiet_for(s, 0.5), "the worker closed although a connection waited"
            s.sendall(request_frame(["echo", "again"]))
            assert error_code(f.next()) == BAD_REQUEST
            f.expect_eof()
            other.sendall(hello_frame() + request_frame(["echo", "waited"], last=True))
            g = Frames(other)
            assert g.next()[0] == HELLO_OK
            assert g.next() == (STDOUT, b"waited\n")
            assert g.next()[0] == EXIT
            g.expect_eof(timeout=5)
    still_serves(rig, d)


def request_flags(payload):
    """The FLAGS field of a REQUEST payload, 0 when absent."""
    off = 0
    for _ in range(1000):
        if off >= len(payload):
            return 0
        tag, n = struct.unpack_from(">BI", payload, off)
        if tag == 0x84:
            return struct.unpack_from(">I", payload, off + 5)[0]
        off += 5 + n
    raise AssertionError("REQUEST field loop bound reached")


def flags_tcpexec_sends(argv_tail, stdin=b""):
    """Run tcpexec against a minimal server, on a loopback port of the
    test's own, that answers HELLO and every REQUEST with EXIT 0; returns
    the FLAGS of each REQUEST tcpexec sent."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(harness.LIVE)
    seen = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(harness.LIVE)
            buf = b""
            for _ in range(100):
                f, buf = take_frame(buf)
                if f is None:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    continue
                if f[0] == 0x01:
                    conn.sendall(frame(HELLO_OK, b"TCPX\x01"))
                elif f[0] == 0x02:
                    seen.append(request_flags(f[1]))
                    conn.sendall(frame(EXIT, bytes(12)))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with srv:
        r = subprocess.run([TCPEXEC, "-p", str(srv.getsockname()[1]), "127.0.0.1",
                            *argv_tail], input=stdin, capture_output=True,
                           env=client_env(), timeout=harness.LIVE)
        t.join(harness.LIVE)
    assert r.returncode == 0, r.stderr
    return seen


def test_tcpexec_marks_its_one_request_last():
    # A command line is one request per connection: LAST. Interactive mode
    # sends several on one connection: none of them is LAST.
    last = harness.LAST
    assert [f & last for f in flags_tcpexec_sends(["echo", "hi"])] == [last]
    assert [f & last for f in flags_tcpexec_sends([], stdin=b"echo a\necho b\n")] == [0, 0]
