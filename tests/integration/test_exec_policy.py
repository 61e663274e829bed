# SPDX-License-Identifier: MIT
"""
The allowlist, through the real daemon and client: an unknown command, a
refused argument, a refused network, each answered with the right error
name, exit status 255, a `deny` audit record, and nothing run (each entry's
script would create a marker file). Each case also runs an allowed request
first, so that the marker would really appear if the policy let one through.
"""

import pytest

from execfix import client_error, rig  # noqa: F401  (rig is a fixture)


def _entries(marker):
    touch = f'touch "{marker}"'
    return {
        "noargs": {"shell": "yes", "script": touch},
        "pat": {"shell": "yes", "script": touch + ' "$1"', "args": "pattern",
                "arg_pattern": "[a-z]+|x-[0-9]"},
        "two": {"shell": "yes", "script": touch, "args": "any", "max_args": 2},
        "far": {"shell": "yes", "script": touch, "allow": "10.0.0.0/8"},
        "near": {"shell": "yes", "script": touch, "allow": ["10.0.0.0/8", "127.0.0.0/8"]},
    }


@pytest.mark.parametrize("allowed, refused, error", [
    (["nope-at-all"], ["nope"], "unknown command"),
    (["noargs"], ["noargs", "x"], "not allowed"),
    # The pattern is anchored: a matching prefix or suffix is not enough,
    # and each alternative must match the whole argument.
    (["pat", "abc"], ["pat", "abc1"], "not allowed"),
    (["pat", "abc"], ["pat", "1abc"], "not allowed"),
    (["pat", "x-1"], ["pat", "x-1x"], "not allowed"),
    (["pat", "abc"], ["pat", "abc", "ABC"], "not allowed"),
    (["pat", "abc"], ["pat", "a\nb"], "not allowed"),
    (["two", "a", "b"], ["two", "a", "b", "c"], "not allowed"),
    (["near"], ["far"], "not allowed"),
])
def test_refused_request_runs_nothing(rig, tmp_path, allowed, refused, error):
    marker = tmp_path / "ran"
    d = rig.daemon(_entries(marker))

    if allowed != ["nope-at-all"]:
        r = rig.run(d, allowed)
        assert r.returncode == 0, r.stderr
        assert marker.exists(), "the allowed request did not run"
        marker.unlink()
        d.wait_audit(allowed[0], decision="allow")  # read before the mark

    mark = d.mark()
    r = rig.run(d, refused)
    assert r.returncode == 255
    assert client_error(r.stderr) == error, r.stderr
    assert r.stdout == b""
    assert not marker.exists(), "a refused request ran"
    a = d.wait_audit(refused[0], since=mark)
    assert [x["decision"] for x in a] == ["deny"], a
    assert a[0]["status"] == f"error:{error}" and a[0]["reason"], a[0]
    assert d.audits(since=mark, decision="allow") == []


def test_refusal_keeps_the_connection_usable(rig, tmp_path):
    # Interactive mode sends all requests over one connection: after a
    # refusal the next request on it still runs.
    marker = tmp_path / "ran"
    d = rig.daemon(_entries(marker) | {"echo": {"path": "/bin/echo", "args": "any"}})
    r = rig.run(d, [], input=b"nope\nnoargs x\necho still here\n")
    assert r.stdout == b"still here\n", r.stderr
    assert b"tcpexec: unknown command: " in r.stderr
    assert b"tcpexec: not allowed: " in r.stderr
    assert r.returncode == 0
    assert not marker.exists()
    peers = {a["peer"] for a in d.wait_audit("echo") + d.audits(command="nope")
             + d.audits(command="noargs")}
    assert len(peers) == 1, f"expected one connection, got {peers}"
