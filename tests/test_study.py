"""Studies (issue 17): ``mmcore run RECIPE --seeds 0,1 --sweep KEY=V1,V2`` trains every setting with every seed in
one process, each run in its own directory of the study, and writes the mean +- std of the summary metrics. A run
of a study is the separate ``mmcore run`` with the same settings; bad ``--seeds``/``--sweep`` write nothing."""

import json
import tomllib
import statistics

import pytest
import torch

from core_test_support import RECIPES, TINY, set_args
from mmcore.registry import Registry
from mmcore.runs.study import SharedDatasets
from mmcore.testing import cli as in_process_cli

RECIPE = RECIPES / "imagebind.toml"
RUNS = ["optimizer.lr=1e-3-seed-0", "optimizer.lr=1e-3-seed-1", "optimizer.lr=3e-3-seed-0", "optimizer.lr=3e-3-seed-1"]
"""The run directories of the study below, in the order they train."""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 2 x 2 study (two learning rates, seeds 0 and 1) of one epoch each, with one BLAS thread (exact
    comparisons: see tests/test_reliability.py's ONE_THREAD). Returns (study dir, exit status, stdout, stderr,
    how many datasets were really built)."""
    out = tmp_path_factory.mktemp("study") / "lr-study"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    builds = []
    real_build = Registry.build

    def counting_build(self, kind, *args, **kwargs):
        if kind == "datasets":
            builds.append(args[0])
        return real_build(self, kind, *args, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Registry, "build", counting_build)
            status, stdout, stderr = in_process_cli("run", RECIPE, *set_args(TINY), "--sweep",
                                                    "optimizer.lr=1e-3,3e-3", "--seeds", "0,1", "--out", out)
    finally:
        torch.set_num_threads(threads)
    return out, status, stdout, stderr, len(builds)


def test_a_study_writes_one_run_directory_per_setting_and_seed_and_its_summary(study):
    out, status, stdout, stderr, _ = study
    assert status == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(RUNS + ["summary.json", "summary.md"])
    for name in RUNS:
        assert (out / name / "metrics.json").is_file() and (out / name / "checkpoints" / "last.ckpt").is_file()
        recipe = (out / name / "recipe.toml").read_text()
        lr, seed = name.split("-seed-")
        assert f"seed = {seed}\n" in recipe and f"lr = {float(lr.split('=')[1])}\n" in recipe, recipe
    assert "mmcore: study run 4/4: optimizer.lr=3e-3-seed-1" in stderr


def test_the_summary_is_the_mean_and_sample_std_of_the_runs_metrics_files(study):
    out, status, stdout, _, _ = study
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["finished"] == 4 and summary["stopped"] is None
    assert [s["setting"] for s in summary["settings"]] == ["optimizer.lr=1e-3", "optimizer.lr=3e-3"]
    declared = json.loads((out / RUNS[0] / "model.json").read_text())["summary_metrics"]
    markdown = (out / "summary.md").read_text()
    for setting, runs in zip(summary["settings"], [RUNS[:2], RUNS[2:]]):
        assert setting["runs"] == runs and setting["seeds"] == [0, 1] and setting["n"] == 2
        assert list(setting["metrics"]) == declared
        files = [json.loads((out / run / "metrics.json").read_text()) for run in runs]
        for key in declared:
            values = [m[key] for m in files]
            stats = setting["metrics"][key]
            assert stats["n"] == 2 and stats["values"] == values
            assert stats["mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
            assert stats["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)  # n - 1
            cell = f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
            assert cell in markdown and cell in stdout
    assert "| metric " in stdout and "optimizer.lr=3e-3 (n=2)" in stdout


def test_a_study_builds_each_dataset_once_per_seed_it_receives(study):
    """Four runs, each checked and then trained, of two seeds: the dataset's build receives two distinct
    contexts (the seed is in them), so two builds instead of eight."""
    assert study[4] == 2


def test_a_run_of_a_study_equals_the_separate_mmcore_run_with_its_settings(study, tmp_path):
    out = study[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status, _, err = in_process_cli("run", RECIPE, *set_args([*TINY, "optimizer.lr=3e-3", "seed=1"]), "--out",
                                        tmp_path / "alone")
    finally:
        torch.set_num_threads(threads)
    assert status == 0, err
    alone = tmp_path / "alone"
    assert (alone / "recipe.toml").read_text() == (out / RUNS[3] / "recipe.toml").read_text()
    expected = json.loads((alone / "metrics.json").read_text())
    assert json.loads((out / RUNS[3] / "metrics.json").read_text()) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "a"], "--seeds a: 'a' is not a seed"),
    (["--seeds", "-1"], "--seeds -1: '-1' is not a seed"),
    (["--seeds", ""], "--seeds: give one or more seeds"),
    (["--seeds", "0,1,0"], "--seeds 0,1,0: seed 0 is given twice"),
    (["--sweep", "optimizer.lrr=1e-3,3e-3"], "optimizer.lrr: unknown key; did you mean 'lr'?"),
    (["--sweep", "optimizer.lr=1e-3,abc"], "study run optimizer.lr=abc: invalid recipe"),
    (["--sweep", "optimizer.lr"], "--sweep 'optimizer.lr': expected KEY=V1,V2,..."),
    (["--sweep", "optimizer.lr=[1,"], "--sweep optimizer.lr: value '[1,': not a valid TOML value"),
    (["--sweep", "optimizer.lr=1e-3,0.001"], "--sweep optimizer.lr: '1e-3' and '0.001' are the same value"),
    (["--seeds", "0,1", "--sweep", "loss.temperature=0.07,-1"], "study run loss.temperature=-1-seed-0: invalid"),
    (["--sweep", "trainer.max_epochs=1,2"], "--sweep trainer.max_epochs and --set trainer.max_epochs both set it"),
    (["--seeds", "0", "--set", "seed=1"], "--seeds and --set seed both set the seed"),
    (["--seed-key", "dataset.seed"], "--seed-key dataset.seed gives each run's seed to that key: it needs --seeds"),
    (["--seeds", "0,1", "--seed-key", "dataset.seed", "--set", "dataset.seed=3"],
     "--seed-key dataset.seed and --set dataset.seed both set it"),
    (["--seeds", "0,1", "--seed-key", "dataset.sed"], "study run seed-0: invalid recipe"),
    (["--seeds", "0,1", "--seed-key", ""], "--seed-key: give a recipe key, e.g. --seed-key dataset.seed"),
    (["--seeds", "0,1", "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2"],
     "trainer: 2 processes (devices = 2, num_nodes = 1); a study trains its runs one after another in one process"),
])
def test_bad_seeds_or_sweep_exit_2_naming_them_and_write_nothing(tmp_path, args, message):
    """Checked before anything is written, every run of the study included (without --out the study would go
    under the recipe's output_dir, here in tmp_path)."""
    status, _, err = in_process_cli("run", RECIPE, *set_args(TINY), *args, cwd=tmp_path)
    assert status == 2, err
    assert err.startswith("mmcore: error: ") and message in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_study_refuses_an_out_that_holds_something_and_leaves_it_alone(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    status, _, err = in_process_cli("run", RECIPE, *set_args(TINY), "--seeds", "0,1", "--out", tmp_path)
    assert status == 2 and f"--out {tmp_path} already exists and is not empty" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_ctrl_c_in_a_run_stops_the_study_keeping_the_finished_runs_and_their_summary(tmp_path, monkeypatch):
    from mmcore.runs import train as runs_train

    real_train, calls = runs_train.train, []

    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runs_train, "train", train)
    out = tmp_path / "study"
    status, stdout, err = in_process_cli("run", RECIPE, *set_args(TINY), "--seeds", "0,1,2", "--out", out)
    assert status == 130, err
    assert len(calls) == 2, "the study went on after Ctrl-C"
    assert (out / "seed-0" / "metrics.json").is_file() and not (out / "seed-1" / "metrics.json").exists()
    assert not (out / "seed-2").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["complete"] and summary["stopped"] == {"run": "seed-1", "exit_status": 130}
    assert [r["status"] for r in summary["runs"]] == ["finished", "stopped", "not run"]
    (setting,) = summary["settings"]
    assert setting["runs"] == ["seed-0"] and setting["n"] == 1 and setting["planned"] == 3
    first = json.loads((out / "seed-0" / "metrics.json").read_text())
    assert all(stats["values"] == [first[key]] and stats["std"] is None for key, stats in setting["metrics"].items())
    markdown = (out / "summary.md").read_text()
    assert "The study stopped at run seed-1 (exit status 130): 1 of 3 runs finished." in markdown
    assert "mmcore: interrupted" in err and "(n=1)" in stdout


def test_a_repeated_dataset_build_leaves_the_rng_as_a_fresh_build_would():
    """A dataset that draws from the global RNG: the model built after it starts from the same state whether the
    dataset was built or came from the study's cache; another seed in the context is another build."""
    drawn = []

    class Datasets:
        def build(self, kind, name, config, context, path):
            drawn.append(torch.rand(3))
            return ("splits", context)

    shared = SharedDatasets(Datasets())
    after = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        splits = shared.build("datasets", "d", {"size": 4}, {"seed": seed}, "dataset")
        after.append(torch.rand(1))
        assert splits == ("splits", {"seed": seed})
    assert len(drawn) == 2 and shared.builds == 2
    assert torch.equal(after[0], after[1]) and not torch.equal(after[0], after[2])


def test_run_help_shows_the_study_options(cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli("run", "--help")
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--seeds S1,S2,..." in help_text and "--sweep KEY=V1,V2,..." in help_text
    assert "summary.json and summary.md" in help_text and "the cross product" in help_text


def test_sweep_values_split_outside_brackets_and_quotes_and_run_names_stay_distinct_path_components():
    from mmcore.runs.study import parse_sweep, plan_study

    hidden = parse_sweep("encoders.image.hidden=[64],[128, 64]")
    assert hidden.values == ([64], [128, 64])
    assert parse_sweep('loss.name="a,b",infonce').values == ("a,b", "infonce")
    runs = plan_study((0, 1), [hidden, parse_sweep("dataset.path=a/b,a_b")])
    names = [run.name for run in runs]
    assert len(set(names)) == 8 and all("/" not in name and " " not in name for name in names)
    assert names[:4] == ["encoders.image.hidden=_64_-dataset.path=a_b-seed-0",
                         "encoders.image.hidden=_64_-dataset.path=a_b-seed-1",
                         "encoders.image.hidden=_64_-dataset.path=a_b-seed-0-2",
                         "encoders.image.hidden=_64_-dataset.path=a_b-seed-1-2"]
    assert runs[2].overrides == ("encoders.image.hidden=[64]", "dataset.path=a_b", "seed=0")


def test_seed_key_gives_each_run_its_seed_in_that_key_too(tmp_path):
    """--seed-key dataset.seed: each run draws its own data (the synthetic generator's seed), named as before."""
    from mmcore.runs.study import plan_study

    runs = plan_study((3, 4), [], [], ("dataset.seed",))
    assert [run.name for run in runs] == ["seed-3", "seed-4"]
    assert [run.overrides for run in runs] == [("seed=3", "dataset.seed=3"), ("seed=4", "dataset.seed=4")]
    out = tmp_path / "study"
    status, _, err = in_process_cli("run", RECIPE, *set_args(TINY), "--set", "trainer.max_epochs=1",
                                    "--seeds", "3,4", "--seed-key", "dataset.seed", "--out", out, cwd=tmp_path)
    assert status == 0, err
    for seed in (3, 4):
        recorded = tomllib.loads((out / f"seed-{seed}" / "recipe.toml").read_text())
        assert recorded["seed"] == seed and recorded["dataset"]["seed"] == seed
