"""A log.dir others can write to (docs/security.md): what another user plants there is refused or
replaced, never followed, and never read as this user's own. Another user is played by chown to
`nobody`, which needs root (the suite runs as root in CI)."""

import os

import pytest

from launch.atomic_files import _umask, append_only, own_folder, write_text
from launch.cluster.world import World
from launch.config import load_config
from launch.errors import UserError
from launch.outputs.rundir import create_run_dir, run_dir_for
from launch.outputs.runlock import RunLock, lock_path

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="playing another user needs root (chown)")


def config(tmp_path, *more):
    return load_config(None, [f"log.dir={tmp_path}", "data.dataset=fashion-mnist", *more])


def test_a_symlink_planted_as_the_lock_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock_path(tmp_path / "run").symlink_to(victim)
    with pytest.raises(UserError, match="is a symlink, not a run's lock"):
        RunLock(tmp_path / "run").acquire()
    assert victim.read_text() == "precious"


@needs_root
def test_a_lock_file_of_another_user_is_refused(tmp_path):
    planted = lock_path(tmp_path / "run")
    planted.write_text("{}")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(UserError, match=f"belongs to uid {NOBODY}, not you"):
        RunLock(tmp_path / "run").acquire()


def test_files_written_replace_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").symlink_to(victim)
    create_run_dir(config(tmp_path), run_dir, {"id": "1"})
    assert victim.read_text() == "precious"
    assert not (run_dir / "config.yaml").is_symlink() and "model" in (run_dir / "config.yaml").read_text()
    (run_dir / "held.log").symlink_to(victim)
    with pytest.raises(OSError):
        append_only(run_dir / "held.log")
    assert victim.read_text() == "precious"


def test_a_run_directory_planted_as_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "mine").symlink_to(elsewhere)
    with pytest.raises(UserError, match="is a symlink: another user could swap"):
        create_run_dir(config(tmp_path, "log.run_name=mine"), tmp_path / "mine", {"id": "1"})
    assert list(elsewhere.iterdir()) == []


@needs_root
def test_another_user_s_folder_is_refused_and_a_resume_skips_another_user_s_run(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UserError, match=f"owned by uid {NOBODY}, not you"):
        own_folder(theirs)
    mine = tmp_path / "torch-mlp-fashion-mnist-w2-77.0"
    mine.mkdir()
    planted = tmp_path / "torch-mlp-fashion-mnist-w4-77.0"  # newer, and another user's
    planted.mkdir()
    os.chown(planted, NOBODY, NOBODY)
    assert run_dir_for(config(tmp_path, "checkpoint.resume=true"), "torch", World(size=1, job_id="77.0"), "t") == mine


@needs_root
def test_old_torch_reads_only_the_user_s_own_checkpoints(tmp_path):
    from torch_dist.checkpoint import refuse_foreign

    path = tmp_path / "step-00000001.pt"
    path.write_bytes(b"")
    refuse_foreign(path, (2, 5))  # this user's: read
    os.chown(path, NOBODY, NOBODY)
    refuse_foreign(path, (2, 6))  # torch 2.6's weights_only loader is sound: read
    with pytest.raises(UserError, match="CVE-2025-32434"):
        refuse_foreign(path, (2, 5))


def test_the_umask_is_read_without_setting_it(tmp_path, monkeypatch):
    """os.umask sets the mask for every thread to read it: a file another thread made meanwhile
    would get the stand-in mask."""
    before = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("os.umask called"))
        assert _umask() == 0o027
        write_text(tmp_path / "f", "x")
        assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    finally:
        monkeypatch.undo()
        os.umask(before)
