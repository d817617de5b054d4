"""Run directories under hostile use: ``--overwrite`` replaces only a run, and only once the new one has started;
a run directory in use by another process is refused; ``--resume --set`` cannot change what the checkpoint
depends on, and a refused resume touches nothing."""

import fcntl
import os

import pytest

from core_test_support import RECIPES, TINY, fresh_copy, set_args, snapshot

RECIPE = RECIPES / "imagebind.toml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny finished run, trained once; tests copy it."""
    from mmcore.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", str(RECIPE), *set_args(TINY), "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    return fresh_copy(finished_run, tmp_path)


def test_overwrite_whose_new_run_fails_before_training_keeps_the_old_run(cli, run, monkeypatch):
    import mmcore.runs.train as train_module

    before = snapshot(run)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module, "check_writable", broken)
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--out", run, "--overwrite")
    assert status == 1 and "No space left on device" in err and "Traceback" not in err
    assert "the run that was in" in err and "is back" in err
    assert snapshot(run) == before
    assert [p.name for p in run.parent.iterdir()] == ["run"]  # nothing set aside is left behind


def test_overwrite_of_a_run_with_a_failing_trainer_setting_keeps_the_old_run(cli, run):
    before = snapshot(run)
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--set", 'trainer.accelerator="gpu"', "--out", run,
                         "--overwrite")
    assert status != 0 and "Traceback" not in err
    assert snapshot(run) == before


def test_overwrite_replaces_a_finished_run_once_the_new_one_has_started(cli, run):
    old = (run / "metrics.json").stat().st_mtime_ns
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--out", run, "--overwrite")
    assert status == 0, err
    assert (run / "metrics.json").stat().st_mtime_ns != old
    assert [p.name for p in run.parent.iterdir()] == ["run"]


def test_overwrite_refuses_a_folder_that_is_not_a_run(cli, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--out", folder, "--overwrite")
    assert status == 2 and "holds no recipe.toml" in err
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_overwrite_refuses_a_run_holding_files_mmcore_did_not_write(cli, run):
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--out", run, "--overwrite")
    assert status == 2 and "notes.txt" in err and "did not write" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("where", ["the run itself", "a folder inside it"])
def test_overwrite_never_deletes_the_working_directory_or_a_folder_above_it(cli, run, where):
    cwd = run if where == "the run itself" else run / "sources"
    before = snapshot(run)
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--out", os.path.relpath(run, cwd), "--overwrite", cwd=cwd)
    assert status == 2 and "working directory" in err
    assert snapshot(run) == before


def test_overwrite_refuses_a_file_and_a_symbolic_link(cli, run, tmp_path):
    target = tmp_path / "link"
    target.symlink_to(run)
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--out", target, "--overwrite")
    assert status == 2 and "symbolic link" in err
    assert target.is_symlink() and (run / "metrics.json").is_file()


def _held(folder):
    """Lock ``folder`` as a running mmcore process would (another open file description: flock conflicts with it
    even inside this process)."""
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.parametrize("how", ["--resume", "--overwrite"])
def test_a_run_directory_in_use_by_another_process_is_refused(cli, run, how):
    before = snapshot(run)
    fd = _held(run)
    try:
        args = ("--resume", run) if how == "--resume" else (RECIPE, *set_args(TINY), "--out", run, "--overwrite")
        status, _, err = cli("run", *args)
    finally:
        os.close(fd)
    assert status == 2 and "in use by another mmcore process" in err
    assert snapshot(run) == before


def test_the_lock_is_released_when_the_command_ends(cli, run):
    status, _, err = cli("run", RECIPE, *set_args(TINY), "--out", run, "--overwrite")
    assert status == 0, err
    os.close(_held(run))  # would raise BlockingIOError if the finished command still held it


@pytest.mark.parametrize("override, key", [
    ("embed_dim=32", "embed_dim"),
    ("dataset.seed=7", "dataset.seed"),
    ("seed=3", "seed"),
    ("optimizer.lr=0.5", "optimizer.lr"),
    ("trainer.batch_size=16", "trainer.batch_size"),
    ('anchor.name="centrobind"', "anchor.name"),
])
def test_resume_refuses_changes_the_checkpoint_depends_on_and_touches_nothing(cli, run, override, key):
    before = snapshot(run)
    status, _, err = cli("run", "--resume", run, "--set", override)
    assert status == 2, err
    assert "--resume cannot change" in err and key in err and "Traceback" not in err
    assert snapshot(run) == before


def test_resume_may_extend_the_run(cli, run):
    status, _, err = cli("run", "--resume", run, "--set", "trainer.max_epochs=2")
    assert status == 0, err
    assert "max_epochs = 2" in (run / "recipe.toml").read_text()


def test_resume_with_out_or_overwrite_is_refused(cli, run):
    status, _, err = cli("run", "--resume", run, "--out", run.parent / "elsewhere")
    assert status == 2 and "--resume continues RUN_DIR in place" in err
    assert not (run.parent / "elsewhere").exists()
