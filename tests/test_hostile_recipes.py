"""Hostile recipes that a static file in tests/bad_recipes/ cannot express: FIFOs and devices where a recipe is
expected, files too large or nested too deeply, non-UTF-8 file names, ``--set`` values that are cut, malformed or
too deep, trainer settings only Lightning can judge on this machine, and datasets that leave nothing to train.

Each is refused by ``validate`` and by ``run`` alike: exit status 2, one ``mmcore: error:`` message naming the key,
file or override, no traceback, nothing written.
"""

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from core_test_support import RECIPES

RECIPE = RECIPES / "imagebind.toml"
SMALL = ["dataset.train_size=256", "dataset.val_size=64", "dataset.test_size=64", "trainer.max_epochs=1",
         "trainer.batch_size=64"]


def refused_everywhere(cli, tmp_path, recipe, *overrides, expected):
    """``validate`` and ``run`` both exit 2 with ``expected`` in their message, and nothing is written in the
    working directory (tmp_path, empty apart from the given inputs)."""
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [x for o in overrides for x in ("--set", o)]
    for command in ("validate", "run"):
        status, out, err = cli(command, recipe, *args, cwd=tmp_path)
        assert status == 2, (command, out, err)
        assert expected in err, (command, err)
        assert "Traceback" not in err
        assert err.startswith("mmcore: error:"), err
        assert sorted(p.name for p in tmp_path.iterdir()) == before, command


# ------------------------------------------------------------------------------------------ files that never end


class Rescuer:
    """Unblocks whoever opens a FIFO for reading (writing ``text`` into it), so a regression fails the test
    instead of hanging it."""

    def __init__(self, fifo: Path, text: str = "name = 1\n"):
        self.fifo, self.text, self.done = fifo, text, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.done.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
            except OSError:
                time.sleep(0.05)
                continue
            os.write(fd, self.text.encode())
            os.close(fd)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(5)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_the_recipe_is_refused_without_reading_it(cli, tmp_path):
    fifo = tmp_path / "recipe.toml"
    os.mkfifo(fifo)
    with Rescuer(fifo):
        refused_everywhere(cli, tmp_path, fifo, expected="not a regular file (a FIFO (named pipe))")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_the_extends_target_is_refused_without_reading_it(cli, tmp_path):
    fifo = tmp_path / "base.toml"
    os.mkfifo(fifo)
    recipe = tmp_path / "child.toml"
    recipe.write_text('extends = "base.toml"\n')
    with Rescuer(fifo):
        refused_everywhere(cli, tmp_path, recipe, expected=f"extends: {fifo}: not a regular file (a FIFO")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_as_the_recipe_is_refused_without_reading_it(cli, tmp_path):
    refused_everywhere(cli, tmp_path, "/dev/zero", expected="/dev/zero: not a regular file (a character device)")


def test_a_recipe_of_megabytes_is_refused_by_its_size(cli, tmp_path):
    recipe = tmp_path / "huge.toml"
    recipe.write_text(f'extends = "{RECIPE}"\n' + "# padding\n" * 500_000)  # 5 MB of comments
    refused_everywhere(cli, tmp_path, recipe, expected="5,000,0")
    _, _, err = cli("validate", recipe, cwd=tmp_path)
    assert "bytes is too large for a recipe (at most 4,194,304)" in err


# ---------------------------------------------------------------------------------------------- deep nesting


@pytest.mark.parametrize("line", [
    "x = " + "[" * 3000 + "1" + "]" * 3000,
    "x = " + "{a = " * 3000 + "1" + "}" * 3000,
], ids=["arrays", "inline-tables"])
def test_a_recipe_nested_3000_deep_is_refused(cli, tmp_path, line):
    recipe = tmp_path / "deep.toml"
    recipe.write_text(f'extends = "{RECIPE}"\n{line}\n')
    refused_everywhere(cli, tmp_path, recipe, expected=f"{recipe}: nested too deeply")


def test_dotted_keys_3000_deep_are_refused(cli, tmp_path):
    # tomllib parses these; the 3000-deep tables broke the override step and the structuring after it
    recipe = tmp_path / "deep.toml"
    recipe.write_text(f'extends = "{RECIPE}"\n' + ".".join(["a"] * 3000) + " = 1\n")
    refused_everywhere(cli, tmp_path, recipe, "trainer.max_epochs=1", expected=f"{recipe}: nested too deeply")


def test_an_extends_chain_of_thousands_of_files_is_refused(cli, tmp_path):
    for i in range(1, 200):
        (tmp_path / f"{i}.toml").write_text(f'extends = "{i + 1}.toml"\n')
    (tmp_path / "200.toml").write_text(f'extends = "{RECIPE}"\n')
    refused_everywhere(cli, tmp_path, tmp_path / "1.toml", expected="extends: a chain of more than 32 files")


@pytest.mark.parametrize("override, expected", [
    ("x=" + "[" * 3000 + "1" + "]" * 3000, "nested too deeply"),
    ("x=" + "[" * 40 + "1" + "]" * 40, "nested too deeply"),
    (".".join(["a"] * 3000) + "=1", "nested too deeply"),
], ids=["value-3000", "value-40", "key-3000"])
def test_an_override_nested_too_deeply_is_refused_naming_it(cli, tmp_path, override, expected):
    refused_everywhere(cli, tmp_path, RECIPE, override, expected=expected)
    _, _, err = cli("validate", RECIPE, "--set", override, cwd=tmp_path)
    assert "--set " in err and len(err) < 1000, err  # named, and not echoed in full


# ---------------------------------------------------------------------------------------------- --set values


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epochs=1\nx = 2", "--set trainer.max_epochs='1\\nx = 2': one TOML value expected"),
    ("name=my\nrun", "--set name='my\\nrun': a bare (unquoted) value cannot span lines"),
    ("encoders.image.hidden=[1,2", "--set encoders.image.hidden='[1,2': not a valid TOML value"),
    ("dataset.pairing=[[\"image\"", "--set dataset.pairing='[[\"image\"': not a valid TOML value"),
    ("evaluators=[1,", "--set evaluators='[1,': not a valid TOML value"),
    ("trainer.devices=[1,2", "--set trainer.devices='[1,2': not a valid TOML value"),
    ("name=\"unterminated", "--set name='\"unterminated': not a valid TOML value"),
    ("name=\udcff", "not valid UTF-8"),
], ids=["newline-cut", "newline-bare", "list-hidden", "list-pairing", "list-evaluators", "list-devices",
        "open-quote", "surrogate"])
def test_a_bad_override_value_is_one_error_naming_the_override(cli, tmp_path, override, expected):
    refused_everywhere(cli, tmp_path, RECIPE, override, expected=expected)
    _, _, err = cli("validate", RECIPE, "--set", override, cwd=tmp_path)
    assert len([line for line in err.splitlines() if line.startswith("  ")]) == 1, err  # one problem, not per char


def test_a_bare_word_override_is_still_a_string(cli, tmp_path):
    status, out, err = cli("validate", RECIPE, "--set", "anchor.anchor=text", *[f"--set={o}" for o in SMALL],
                           cwd=tmp_path)
    assert status == 0, err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- file names


def test_a_recipe_file_name_that_is_not_utf8_is_refused(cli, tmp_path):
    recipe = tmp_path / os.fsdecode(b"r\xff.toml")
    try:
        recipe.write_text(f'extends = "{RECIPE}"\n')
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take non-UTF-8 names")
    refused_everywhere(cli, tmp_path, recipe, *SMALL, expected="the file name is not valid UTF-8")


def test_a_recipe_file_name_that_cannot_name_a_run_is_refused(cli, tmp_path):
    recipe = tmp_path / "my\nrecipe.toml"
    recipe.write_text(f'extends = "{RECIPE}"\n')
    refused_everywhere(cli, tmp_path, recipe, *SMALL, expected="name: the recipe file's name 'my\\nrecipe' cannot "
                                                               "name the run")
    status, _, err = cli("validate", recipe, "--set", "name=fine", *[f"--set={o}" for o in SMALL], cwd=tmp_path)
    assert status == 0, err


# ---------------------------------------------------------------------------------------------- trainer


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_accelerator_without_a_gpu_is_refused(cli, tmp_path):
    refused_everywhere(cli, tmp_path, RECIPE, "trainer.accelerator=gpu",
                       expected="trainer.accelerator: 'gpu' is refused by Lightning on this machine")


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed is installed")
def test_deepspeed_without_deepspeed_is_refused(cli, tmp_path):
    refused_everywhere(cli, tmp_path, RECIPE, "trainer.strategy=deepspeed",
                       expected="trainer.strategy: 'deepspeed' is refused by Lightning on this machine")


def test_several_nodes_with_no_cluster_to_join_are_refused(cli, tmp_path, monkeypatch):
    # Lightning accepts num_nodes = 2 here, and the run would then wait for the second node forever
    for name in ("MASTER_ADDR", "SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    refused_everywhere(cli, tmp_path, RECIPE, "trainer.num_nodes=2", "trainer.accelerator=cpu",
                       expected="trainer.num_nodes: 2 is refused by Lightning on this machine: 2 nodes, but this "
                                "process was not started by a cluster launcher")


def test_the_trainer_check_writes_nothing_and_accepts_cpu_ddp(cli, tmp_path):
    # two CPU processes are legal DDP; the check constructs a Trainer but starts no process and writes nothing
    status, _, err = cli("validate", RECIPE, "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2",
                         "--set", "trainer.strategy=ddp", *[f"--set={o}" for o in SMALL], cwd=tmp_path)
    assert status == 0, err
    assert "GPU available" not in err  # Lightning's notes are printed by the run's own Trainer only
    assert list(tmp_path.iterdir()) == []


def test_check_trainer_names_the_first_setting_lightning_refuses():
    import attrs
    from mmcore.recipe import RecipeError, TrainerSettings, load_recipe
    from mmcore.train.settings import check_trainer

    recipe, _ = load_recipe(RECIPE)
    check_trainer(attrs.evolve(recipe, trainer=TrainerSettings(accelerator="cpu", devices=2, strategy="ddp")))
    bad = attrs.evolve(recipe, trainer=TrainerSettings(accelerator="cpu", devices=1, precision="fp16"))
    with pytest.raises(RecipeError) as caught:
        check_trainer(bad)
    assert caught.value.problems[0].startswith("trainer.precision: 'fp16' is refused by Lightning")


# ---------------------------------------------------------------------------------------------- nothing to train


def test_a_features_directory_with_every_modality_absent_is_refused(cli, tmp_path):
    import numpy as np

    data = tmp_path / "feat"
    data.mkdir()
    rows = 64
    for name, width in (("image", 8), ("text", 6)):
        np.save(data / f"{name}.npy", np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32))
        np.save(data / f"{name}.present.npy", np.zeros(rows, dtype=bool))
    recipe = tmp_path / "absent.toml"
    recipe.write_text('[dataset]\nname = "features"\npath = "feat"\n[encoders.image]\nname = "mlp"\n'
                      '[encoders.text]\nname = "mlp"\n[anchor]\nname = "pairwise"\n'
                      '[trainer]\nmax_epochs = 1\nbatch_size = 16\naccelerator = "cpu"\ndevices = 1\n')
    refused_everywhere(cli, tmp_path, recipe, expected="dataset: no two modalities of the recipe (image, text) are "
                                                       "ever observed together in the training split")


@pytest.mark.parametrize("anchor", [["anchor.name=centrobind"], ["anchor.name=pairwise"], ["anchor.anchor=text"]],
                         ids=["centrobind", "pairwise", "imagebind-text"])
def test_a_modality_never_paired_is_refused_unless_frozen_while_the_strategy_trains_the_others(cli, tmp_path, anchor):
    # image alone, text with audio: text-audio still trains, but the image encoder would keep its initial weights
    overrides = [*SMALL, 'dataset.pairing=[["image"], ["text", "audio"]]', *anchor]
    status, _, err = cli("validate", RECIPE, *[f"--set={o}" for o in overrides], cwd=tmp_path)
    assert status == 2 and "modality 'image'" in err and "would keep its initial weights" in err, err
    status, _, err = cli("validate", RECIPE, *[f"--set={o}" for o in [*overrides, "encoders.image.frozen=true"]],
                         cwd=tmp_path)
    assert status == 0, err
