# SPDX-License-Identifier: MIT
"""
Helpers for the security tests (test_security*.py): a throw-away PKI made
with the openssl CLI at test time (CA, server and client certificates,
expired / revoked / foreign / unsuitable ones, a CRL, pre-shared keys), the
real tcpexecd started in the foreground with a config of the test's
choosing, the real tcpexec client, and a small framed client (plain or TLS,
optionally bound to a second loopback source address such as 127.0.0.2).

Only loopback is used (127.0.0.1, 127.0.0.2, ::1) on ephemeral ports. Every
wait is bounded in time and in iterations; the only timing assertions are
generous liveness bounds. Cleanup is by PID only: the master, the processes
below it (collected from /proc) and the clients a test started.

Independent of conftest.py (which belongs to the process-model tests);
fixture names here do not collide with its fixtures. What all the helper
layers share comes from harness.py.
"""

import os
import re
import resource
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import harness
# Imported by name for the test files, which take them from here.
from harness import (ERROR, EXIT, HELLO_OK, STDERR, STDOUT, alive,  # noqa: F401
                     hello_frame, ipv6_loopback, kill_idents, parse_addr, take_frame,
                     wait_for)

TCPEXECD, TCPEXEC = harness.binaries("build-sec")

POLL = harness.POLL
LIVE = harness.LIVE
EXIT_CONFIG = 3
EXIT_CLIENT = 255

# The supervisor's variables, and those that would point OpenSSL at another
# trust store than the one a test names.
SCRUBBED_ENV = harness.SUPERVISOR_ENV + ("SSL_CERT_FILE", "SSL_CERT_DIR")

# Error codes (docs/protocol.md section 8).
BAD_REQUEST, UNKNOWN_COMMAND, NOT_ALLOWED, BUSY = 1, 2, 3, 6
AUTH_FAILED, IDLE_TIMEOUT, HANDSHAKE_TIMEOUT = 10, 11, 12


def clean_env(extra=None):
    return harness.clean_env(extra, SCRUBBED_ENV)


def require_binaries():
    for b in (TCPEXECD, TCPEXEC):
        assert os.access(b, os.X_OK), f"{b} not found: build it (ninja -C build-sec) " \
                                      "or set TCPEXECD / TCPEXEC"


def second_source():
    """127.0.0.2 as a client source address (all of 127/8 is local on Linux)."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


def raise_nofile(want):
    """Raise this process's soft RLIMIT_NOFILE to at least want (up to the hard
    limit); returns the old soft limit so that the caller can restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return soft


# ---------------------------------------------------------------- PKI

REQ_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""

CA_CNF = """\
[ca]
default_ca = own
[own]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 1
default_crl_days = 1
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
"""


def openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)} failed:\n{r.stderr}"
    return r.stdout


class PKI:
    """A certificate authority in dir, driven through `openssl ca` so that it
    can also back-date certificates and revoke them. Private keys are 0600."""

    def __init__(self, dir, name="test CA"):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "newcerts").mkdir(exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("1000\n")
        self.req_cnf = self.dir / "req.cnf"
        self.req_cnf.write_text(REQ_CNF)
        self.ca_cnf = self.dir / "ca.cnf"
        self.ca_cnf.write_text(CA_CNF.format(dir=self.dir))
        self.ca = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        openssl("req", "-x509", "-config", str(self.req_cnf), "-extensions", "v3_ca",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(self.ca_key), "-out", str(self.ca), "-days", "2",
                "-subj", f"/CN={name}")
        os.chmod(self.ca_key, 0o600)

    def issue(self, name, cn, san=None, eku="clientAuth", start=None, end=None):
        """A leaf certificate name.pem / name.key for CN cn; san like
        "DNS:localhost,IP:127.0.0.1"; start/end (YYYYMMDDHHMMSSZ) back-date it."""
        key, csr = self.dir / f"{name}.key", self.dir / f"{name}.csr"
        cert, ext = self.dir / f"{name}.pem", self.dir / f"{name}.ext"
        lines = ["basicConstraints = critical,CA:FALSE",
                 "keyUsage = critical,digitalSignature"]
        if eku:
            lines.append(f"extendedKeyUsage = {eku}")
        if san:
            lines.append(f"subjectAltName = {san}")
        ext.write_text("\n".join(lines) + "\n")
        openssl("req", "-new", "-config", str(self.req_cnf), "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                "-out", str(csr), "-subj", f"/CN={cn}")
        os.chmod(key, 0o600)
        dates = ["-startdate", start, "-enddate", end] if start else ["-days", "1"]
        openssl("ca", "-batch", "-notext", "-config", str(self.ca_cnf), "-in", str(csr),
                "-out", str(cert), "-extfile", str(ext), *dates)
        return cert, key

    def revoke(self, cert):
        openssl("ca", "-config", str(self.ca_cnf), "-revoke", str(cert))

    def crl(self, name="crl.pem"):
        out = self.dir / name
        openssl("ca", "-config", str(self.ca_cnf), "-gencrl", "-out", str(out))
        return out


def psk_hex(nbytes=32):
    return os.urandom(nbytes).hex()


def write_private(path, text, mode=0o600):
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)   # the umask must not decide the mode under test
    return path


class Certs:
    """Everything the TLS tests use, made once per test module."""

    def __init__(self, base):
        base = Path(base)
        self.pki = PKI(base / "ca")
        self.other = PKI(base / "other", name="other CA")
        p = self.pki
        self.server = p.issue("server", "tcpexecd test server",
                              san="DNS:localhost,IP:127.0.0.1,IP:::1", eku="serverAuth")
        # A server certificate for some other host: the client must refuse it.
        self.wrong_host = p.issue("wronghost", "elsewhere.example",
                                  san="DNS:elsewhere.example", eku="serverAuth")
        self.alice = p.issue("alice", "alice")                       # identity from the CN
        self.carol = p.issue("carol", "carol-cn",                    # identity from the SAN
                             san="email:carol@example.org,DNS:carol.example.org")
        self.expired = p.issue("expired", "alice", start="20200101000000Z",
                               end="20200102000000Z")
        self.revoked = p.issue("revoked", "alice")
        p.revoke(self.revoked[0])
        self.crl = p.crl()
        # A server-only certificate presented as a client certificate.
        self.unsuitable = p.issue("serveronly", "alice", eku="serverAuth")
        self.foreign = self.other.issue("foreign", "alice")
        self.bob_key = psk_hex()
        self.alice_key = psk_hex(48)
        self.psk_file = write_private(base / "server.psk",
                                      "# identity:hexkey\n"
                                      f"bob:{self.bob_key}\nalice:{self.alice_key}\n")
        self.bob_psk = write_private(base / "bob.psk", f"bob:{self.bob_key}\n")
        self.bob_bare = write_private(base / "bob-bare.psk", f"{self.bob_key}\n")
        self.alice_psk = write_private(base / "alice.psk", f"alice:{self.alice_key}\n")
        self.bob_wrong = write_private(base / "bob-wrong.psk", f"bob:{psk_hex()}\n")
        self.eve_psk = write_private(base / "eve.psk", f"eve:{psk_hex()}\n")

    def server_keys(self, ca=True, psk=True, crl=False, cert=None):
        cert = cert or self.server
        keys = {"tls_cert": str(cert[0]), "tls_key": str(cert[1])}
        if ca:
            keys["tls_ca"] = str(self.pki.ca)
        if crl:
            keys["tls_crl"] = str(self.crl)
        if psk:
            keys["tls_psk_file"] = str(self.psk_file)
        return keys

    def cert_opts(self, who=None):
        """tcpexec options: trust our CA, and present who's certificate."""
        opts = ["--ca", str(self.pki.ca)]
        if who:
            opts += ["--cert", str(who[0]), "--key", str(who[1])]
        return opts

    def ssl_context(self, who=None):
        """A Python TLS 1.3 client context for the framed client."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(str(self.pki.ca))
        if who:
            ctx.load_cert_chain(str(who[0]), str(who[1]))
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------- /proc

def descendants(pid):
    """(pid, starttime) of every process below pid, zombies too."""
    return [st.ident for st in harness.descendants([pid])]


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def anon_rss_kib(pid):
    """Resident anonymous memory (heap, stacks, static buffers): where a
    leak shows. VmRSS also counts the shared library pages a process maps
    in the first time it uses them (libcrypto's, on a worker's first TLS
    handshake), which is no leak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError(f"no RssAnon for {pid}")


# ---------------------------------------------------------------- config

def config_text(server, commands):
    out = []
    for name, keys in commands.items():
        out += harness.ini_section(f"command {name}", keys) + [""]
    out += harness.ini_section("server", server)
    return "\n".join(out) + "\n"


class Daemon(harness.Piped):
    """`tcpexecd -f -c CONF`; stopped (by PID) at teardown."""

    def __init__(self, conf, server, commands):
        self.conf = Path(conf)
        self.server = server
        self.commands = commands
        self.addresses = []
        self.seen = set()

    def start(self, expect_listeners=None):
        require_binaries()
        self.conf.write_text(config_text(self.server, self.commands))
        self.spawn([TCPEXECD, "-f", "-c", str(self.conf)], clean_env())
        n = expect_listeners or harness.expected_listeners(self.server.get("listen", []))
        self.addresses = [parse_addr(t) for t in self.wait_listening(n, LIVE)]
        # The pool is filled before serving starts; wait for the initial workers
        # so that /proc snapshots and admission see a settled pool.
        want = int(self.server.get("workers", 4))
        wait_for(lambda: len(self.workers()) >= want, LIVE, f"{want} workers")
        return self

    def run_to_exit(self, timeout=LIVE):
        """Start, expecting tcpexecd to exit by itself: (status, stderr)."""
        require_binaries()
        self.conf.write_text(config_text(self.server, self.commands))
        self.proc = subprocess.Popen([TCPEXECD, "-f", "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=clean_env(),
                                     start_new_session=True)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_all()
            self.proc.communicate(timeout=LIVE)
            raise AssertionError(f"tcpexecd still running after {timeout} s") from None
        self.out = self.err = None
        return self.proc.returncode, err.decode("utf-8", "replace")

    # -- output

    def log_text(self, tail=60):
        return super().log_text(tail)

    def wait_log(self, pattern, since=0, timeout=LIVE, count=1):
        """The matches of pattern once there are at least count of them."""
        return self.wait_log_matches(pattern, since, count, timeout, tail=60)

    def assert_no_log(self, pattern, since=0, settle=0.3):
        time.sleep(settle)
        found = self.find_log(pattern, since)
        assert not found, f"unexpected log line(s) /{pattern}/:\n" + \
            "\n".join(self.log()[since:][-60:])

    def assert_log_count(self, pattern, count, since=0, settle=0.3):
        """Exactly count lines match (waits for them, then a little longer for
        any extra one still in the pipe)."""
        self.wait_log(pattern, since, count=count)
        time.sleep(settle)
        n = len(self.find_log(pattern, since))
        assert n == count, f"{n} log lines /{pattern}/, expected {count}:\n" + \
            "\n".join(self.log()[since:][-60:])

    # -- addresses and processes

    def addr(self, i=0):
        return self.addresses[i]

    def port(self, i=0):
        return self.addresses[i][1][1]

    def workers(self):
        ws = harness.children(self.proc.pid)
        self.seen.update(st.ident for st in ws)
        return sorted(st.pid for st in ws)

    def status(self):
        r = subprocess.run([TCPEXECD, "-s", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=LIVE, env=clean_env())
        assert r.returncode == 0, f"tcpexecd -s: {r.returncode} {r.stderr}"
        m = re.search(r"workers: total (\d+), starting (\d+), idle (\d+), busy (\d+)",
                      r.stdout)
        assert m, f"bad status report:\n{r.stdout}"
        return dict(zip(("total", "starting", "idle", "busy"), map(int, m.groups())))

    # -- teardown

    def _kill_all(self):
        """SIGKILL the master and everything below it, by PID."""
        tree = descendants(self.proc.pid)
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGSTOP)   # no respawn during the kill
            except ProcessLookupError:
                pass
            tree = descendants(self.proc.pid)
        kill_idents(tree)
        if self.proc.poll() is None:
            self.proc.kill()
        return tree

    def stop(self):
        if self.proc is None:
            return
        tree = descendants(self.proc.pid) if self.proc.poll() is None else []
        if not self.terminate(LIVE):
            tree += self._kill_all()
            self.proc.wait(LIVE)
        self.close_pipes()
        # Anything of ours that outlived its master is killed by PID.
        left = [ident for ident in tree if alive(ident)]
        kill_idents(left)
        left = [pid for pid, _ in left]
        assert not left, f"processes left after tcpexecd stopped: {left}"


# ---------------------------------------------------------------- the rig

class Rig:
    """Per test: a short temporary directory (Unix socket paths are limited
    to 108 bytes), the daemons and the clients to clean up."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="tcpx-sec-", dir="/tmp"))
        self.daemons = []
        self.clients = []
        self.socks = []
        self.marker = self.dir / "marker"

    def commands(self, extra=None):
        """The commands every test config carries: echo, and `mark`, which
        creates the marker file (so a test can tell that nothing ran)."""
        cmds = {
            "echo": {"path": "/bin/echo", "args": "any"},
            "mark": {"path": "/usr/bin/touch", "arg": str(self.marker), "args": "none"},
            # Holds its connection (and so a worker) until the client leaves.
            "hold": {"shell": "yes", "script": "echo ready; exec cat", "timeout": "5m"},
        }
        cmds.update(extra or {})
        return cmds

    def daemon(self, commands=None, start=True, **server):
        keys = {"listen": "127.0.0.1:0", "control_socket": str(self.dir / "ctl"),
                "workers": 4}
        keys.update(server)
        d = Daemon(self.dir / f"tcpexecd-{len(self.daemons)}.conf", keys,
                   self.commands(commands))
        self.daemons.append(d)
        return d.start() if start else d

    def client(self, daemon, args, opts=(), i=0, host="127.0.0.1", timeout=LIVE * 2):
        """Run tcpexec to completion: CompletedProcess with text output. On
        timeout it is killed (by PID) and the test fails."""
        port = daemon.port(i) if daemon.addr(i)[0] != socket.AF_UNIX else None
        argv = [TCPEXEC, "-n", "-c", "5", *opts]
        if port is not None:
            argv += ["-p", str(port)]
        argv += [host if port is not None else daemon.addr(i)[1], *args]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=clean_env(), start_new_session=True)
        self.clients.append(p)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate(timeout=LIVE)
            raise AssertionError(f"tcpexec {' '.join(args)} still running after "
                                 f"{timeout} s") from None
        return subprocess.CompletedProcess(argv, p.returncode, out.decode(errors="replace"),
                                           err.decode(errors="replace"))

    def sock(self, s):
        self.socks.append(s)
        return s

    def cleanup(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for p in self.clients:
            if p.poll() is None:
                p.kill()
                p.wait(LIVE)
        problems = []
        for d in self.daemons:
            try:
                d.stop()
            except AssertionError as e:
                problems.append(str(e))
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not problems, "; ".join(problems)


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.cleanup()


# ---------------------------------------------------------------- framed client

def request_frame(args, no_stdin=True, last=False):
    return harness.request_frame(args, no_stdin=no_stdin, last=last)


def connect(addr, source=None, timeout=LIVE):
    """A TCP connection to addr ((family, sockaddr)), from source if given."""
    return harness.open_socket(addr, timeout, source)


class Framed:
    """A minimal framed client over a connected (maybe TLS) socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    @classmethod
    def open(cls, addr, source=None, tls=None, timeout=LIVE):
        s = connect(addr, source, timeout)
        if tls is not None:
            try:
                s = tls.wrap_socket(s, server_hostname="127.0.0.1")
            except BaseException:
                s.close()
                raise
        return cls(s)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame in time")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
        self.buf += data

    def frame(self, timeout=LIVE):
        """The next frame as (type, payload), or None at EOF."""
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            f, self.buf = take_frame(self.buf, 1 << 24)
            if f is not None:
                return f
            if self.eof:
                assert not self.buf, f"EOF inside a frame: {self.buf!r}"
                return None
            self._fill(deadline)
        raise AssertionError("too many reads for one frame")

    def hello(self, timeout=LIVE):
        self.send(hello_frame())
        f = self.frame(timeout)
        assert f and f[0] == HELLO_OK and f[1][:5] == b"TCPX\x01", f"bad answer to HELLO: {f}"

    def run(self, args, timeout=LIVE):
        """One REQUEST: (stdout, stderr, ("exit", code) or ("error", code, msg))."""
        self.send(request_frame(args))
        out = err = b""
        for _ in range(10000):
            f = self.frame(timeout)
            assert f is not None, f"connection closed during {args}; stdout {out!r}"
            t, p = f
            if t == STDOUT:
                out += p
            elif t == STDERR:
                err += p
            elif t == EXIT:
                assert len(p) == 12
                return out, err, ("signal" if p[0] else "exit", p[1])
            elif t == ERROR:
                return out, err, ("error", struct.unpack(">H", p[:2])[0],
                                  p[2:].decode(errors="replace"))
            else:
                raise AssertionError(f"unexpected frame {t:#x}")
        raise AssertionError("too many frames")

    def read_to_eof(self, timeout=LIVE):
        """All bytes until the server closes; TimeoutError if it does not."""
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            if self.eof:
                data, self.buf = self.buf, b""
                return data
            try:
                self._fill(deadline)
            except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
                self.eof = True
        raise AssertionError("too many reads")


def hold(addr, source=None, tls=None, timeout=LIVE):
    """A connection that runs `hold` and stays in it: once `ready` is read, a
    worker is busy serving it until the socket is closed."""
    c = Framed.open(addr, source, tls, timeout)
    try:
        c.send(hello_frame() + request_frame(["hold"], no_stdin=False))
        f = c.frame(timeout)
        assert f and f[0] == HELLO_OK, f"bad answer to HELLO: {f}"
        f = c.frame(timeout)
        assert f == (STDOUT, b"ready\n"), f"hold did not start: {f}"
    except BaseException:
        c.close()
        raise
    return c


def framed_run(addr, args, source=None, tls=None, timeout=LIVE):
    """HELLO + one REQUEST on a fresh connection; the result of Framed.run."""
    c = Framed.open(addr, source, tls, timeout)
    try:
        c.hello(timeout)
        return c.run(args, timeout)
    finally:
        c.close()


def closed_without_data(sock, timeout=LIVE):
    """True when the server closes sock (EOF or reset) without sending a byte;
    AssertionError with what arrived otherwise."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return True
    except socket.timeout:
        raise AssertionError(f"connection still open after {timeout} s") from None
    assert data == b"", f"expected a plain close, got {data[:64]!r}"
    return True


def error_frame(data):
    """(code, message) of data if it is exactly one ERROR frame."""
    assert len(data) >= 7 and data[0] == ERROR, f"not an ERROR frame: {data[:64]!r}"
    n = struct.unpack(">I", data[1:5])[0]
    assert len(data) == 5 + n, f"trailing bytes after the ERROR frame: {data!r}"
    return struct.unpack(">H", data[5:7])[0], data[7:].decode(errors="replace")
