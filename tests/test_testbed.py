"""The testbed's own safety: tags and subnets that cannot collide, state files checked before `down` removes
what they name, and a signal during `up` that still removes what was made."""

import json
import os
import signal
import subprocess

import pytest

from launch.errors import UserError
from launch.testbed import hosts as testbed


def test_a_tag_another_testbed_holds_is_never_given_again(tmp_path, monkeypatch):
    monkeypatch.setattr(testbed, "STATE_DIR", tmp_path)
    (tmp_path / "aaaaaa.json").write_text("{}")  # another testbed's
    tags = iter(["aaaaaa", "bbbbbb"])
    monkeypatch.setattr(testbed.secrets, "token_hex", lambda n: next(tags))
    assert testbed._claim_tag() == "bbbbbb"
    assert (tmp_path / "aaaaaa.json").read_text() == "{}"


def test_a_subnet_another_testbed_has_chosen_is_never_given_again(tmp_path, monkeypatch):
    """Chosen and saved, before its bridge has the address that would show it as used."""
    monkeypatch.setattr(testbed, "STATE_DIR", tmp_path)
    first = testbed._free_subnet()
    (tmp_path / "aaaaaa.json").write_text(json.dumps({"subnet": first}))
    (tmp_path / "bbbbbb.json").write_text("")  # a tag claimed, nothing saved yet
    second = testbed._free_subnet()
    assert second != first and second in testbed.SUBNETS


@pytest.mark.parametrize(
    "change",
    [
        {"folder": "/etc"},
        {"bridge": "eth0"},
        {"hosts": [{"name": "node1", "address": "10.78.9.2", "netns": "other", "veth": "md0h1"}]},
    ],
    ids=["folder", "bridge", "netns"],
)
def test_a_state_file_naming_what_the_testbed_does_not_make_is_refused(tmp_path, monkeypatch, change):
    monkeypatch.setattr(testbed, "STATE_DIR", tmp_path)
    state = {
        "tag": "abc123",
        "subnet": "10.78.9.0/24",
        "bridge": "mdbrabc123",
        "bridge_address": "10.78.9.1",
        "hosts": [{"name": "node1", "address": "10.78.9.2", "netns": "mnistdist-abc123-node1", "veth": "mdabc123h1"}],
        "folder": "/tmp/mnist-dist-testbed-abc123-x1",
    }
    (tmp_path / "abc123.json").write_text(json.dumps(state))
    assert testbed.load("abc123").bridge == "mdbrabc123"
    (tmp_path / "abc123.json").write_text(json.dumps({**state, **change}))
    with pytest.raises(UserError, match="names things testbed abc123 does not make: not removing anything"):
        testbed.load("abc123")
    with pytest.raises(UserError, match="not a testbed tag"):
        testbed.load("../etc/x")


@pytest.mark.xdist_group("hosts")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_up_still_removes_what_was_made(monkeypatch, sig):
    made = []
    real_ip = testbed._ip

    def ip(*args, check=True):
        if args[:2] == ("netns", "add"):
            made.append(args[2])
            if len(made) == 2:  # the bridge, one host and half of the second exist
                os.kill(os.getpid(), sig)
        return real_ip(*args, check=check)

    monkeypatch.setattr(testbed, "_ip", ip)
    before = signal.getsignal(sig)
    with pytest.raises(SystemExit) as stopped:
        testbed.Testbed.up(3)
    assert stopped.value.code == 128 + sig
    tag = made[0].split("-")[1]
    assert not [
        ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split() if tag in ns
    ]
    assert f"mdbr{tag}" not in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not (testbed.STATE_DIR / f"{tag}.json").exists()
    assert signal.getsignal(sig) == before  # the handler `up` set is gone again
