# SPDX-License-Identifier: MIT
"""
Command line and configuration checking: exit codes (0 ok, 1 runtime,
2 usage, 3 configuration), -V, -h, -t, -l, -w, -s without a daemon, and the
`listening on` lines and log line format of foreground mode.
"""

import re
import socket

import pytest

from conftest import (LOG_PREFIX, VERSION, busy_listener, config_text,
                      ipv6_loopback, run_bounded)


@pytest.fixture
def good_conf(tmp_path, base_config):
    conf = tmp_path / "good.conf"
    conf.write_text(config_text(base_config))
    return conf


@pytest.mark.parametrize("opt", ["-V", "--version"])
def test_version(opt):
    r = run_bounded([opt])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"tcpexecd {VERSION}\n"


@pytest.mark.parametrize("opt", ["-h", "--help"])
def test_help(opt):
    r = run_bounded([opt])
    assert r.returncode == 0, r.stderr
    assert re.search(r"(?i)usage", r.stdout), r.stdout


# The check option (-t) is given with every usage error so that a daemon
# which wrongly accepted the option would only check and exit, not start.
@pytest.mark.parametrize("bad", [["--no-such-option"], ["-Z"]])
def test_unknown_option_is_usage_error(good_conf, bad):
    r = run_bounded(["-t", "-c", str(good_conf), *bad])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert re.search(r"(?i)usage|--help|-h\b", r.stderr), r.stderr


@pytest.mark.parametrize("value", ["abc", "12abc", ""])
def test_bad_workers_option_is_usage_error(good_conf, value):
    r = run_bounded(["-t", "-c", str(good_conf), "-w", value])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip(), "no message on stderr"


@pytest.mark.parametrize("mode", ["-t", "-f"])
def test_missing_config_file(tmp_path, mode):
    missing = tmp_path / "does-not-exist.conf"
    r = run_bounded([mode, "-c", str(missing)])
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert str(missing) in r.stderr, r.stderr


BAD_VALUES = [
    ("workers = -3", "workers"),
    ("workers = 4x", "workers"),
    ("backlog = x", "backlog"),
    ("frobnicate = 1", "frobnicate"),
    ("stop_timeout = 5 parsecs", "stop_timeout"),
    ("heartbeat_timeout = soon", "heartbeat_timeout"),
    ("max_requests = many", "max_requests"),
    ("log_level = loud", "log_level"),
]


@pytest.mark.parametrize("line,key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_bad_value_is_config_error(tmp_path, base_config, line, key):
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(base_config) + line + "\n")
    bad_line = len(config_text(base_config).splitlines()) + 1
    r = run_bounded(["-t", "-c", str(conf)])
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert f"{conf}:{bad_line}: {key}:" in r.stderr, r.stderr


def test_unknown_section_is_config_error(tmp_path, base_config):
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(base_config) + "[client]\nhost = x\n")
    n = len(config_text(base_config).splitlines())
    r = run_bounded(["-t", "-c", str(conf)])
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert re.search(rf"{re.escape(str(conf))}:({n + 1}|{n + 2}):", r.stderr), r.stderr


def test_bad_value_stops_foreground_start(tmp_path, base_config):
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(base_config) + "workers = -3\n")
    n = len(config_text(base_config).splitlines()) + 1
    r = run_bounded(["-f", "-c", str(conf)])
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert f"{conf}:{n}: workers:" in r.stderr
    assert "listening on" not in r.stdout


@pytest.mark.parametrize("stop,heartbeat", [("500ms", "2s"), ("2s", "2"), ("2", "1m"),
                                            ("1m", "1500ms")])
def test_check_config_accepts_good_file(tmp_path, base_config, stop, heartbeat):
    conf = tmp_path / "good.conf"
    keys = dict(base_config, backlog=128, workers=3, min_spare=1, max_spare=4,
                max_workers=16, max_requests=0, stop_timeout=stop,
                heartbeat_timeout=heartbeat, log_level="info")
    conf.write_text(config_text(keys))
    r = run_bounded(["-t", "-c", str(conf)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"configuration {conf} is valid\n"


def test_port_in_use_in_foreground(good_conf):
    with busy_listener() as busy:
        port = busy.getsockname()[1]
        r = run_bounded(["-f", "-c", str(good_conf), "-l", f"127.0.0.1:{port}"])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"127.0.0.1:{port}" in r.stderr, r.stderr
    assert "listening on" not in r.stdout


def test_status_without_daemon(good_conf):
    r = run_bounded(["-s", "-c", str(good_conf)])
    assert r.returncode == 1, (r.stdout, r.stderr)


def test_foreground_listening_lines_and_log_format(start_daemon, sockdir):
    listen = ["127.0.0.1:0", str(sockdir / "t.sock")]
    if ipv6_loopback():
        listen.append("[::1]:0")
    d = start_daemon({"listen": listen, "workers": 2, "min_spare": 1, "max_spare": 2})
    got = [text for text, _ in d.addresses]
    assert len(got) == len(listen)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", got[0]) and not got[0].endswith(":0"), got
    assert str(sockdir / "t.sock") in got
    if len(listen) == 3:
        assert any(re.fullmatch(r"\[::1\]:[1-9]\d*", t) for t in got), got
    for i in range(len(listen)):
        pid = d.exchange(b"hello", i=i)
        assert pid in d.workers()
    d.wait_log(r"worker \d+ started \(slot \d+, generation \d+\)", count=2)
    for line in d.log():
        assert LOG_PREFIX.match(line), f"log line not in `tcpexecd[PID]: ` form: {line!r}"


def test_listen_option_overrides_config(start_daemon, sockdir):
    unix = sockdir / "from-config.sock"
    d = start_daemon({"listen": [str(unix)], "workers": 1, "min_spare": 0,
                      "max_spare": 1}, args=["-l", "127.0.0.1:0"])
    assert len(d.addresses) == 1
    assert d.addresses[0][1][0] == socket.AF_INET
    assert d.listening() == [d.addresses[0][0]]
    assert not unix.exists(), "the config's listen address was used despite -l"
    d.exchange()


def test_workers_option_overrides_config(start_daemon):
    d = start_daemon({"workers": 1, "min_spare": 1, "max_spare": 3}, args=["-w", "3"])
    d.wait_workers(3)
    assert d.status().floor == 3
