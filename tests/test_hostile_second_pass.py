"""Cases a second adversarial pass found after issue 14's fixes: outputs that would replace a run's or an index's
own files (or the command's input), ``eval --set`` of a setting that changes what the data is, quoted ``--set``
keys, infinite numbers."""

import numpy as np
import pytest

from core_test_support import RECIPES, TINY, fresh_copy, set_args, snapshot

RECIPE = RECIPES / "imagebind.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny finished run, a text input for it, and an index of it."""
    import mmcore
    from mmcore.cli import main

    root = tmp_path_factory.mktemp("second")
    run = root / "run"
    assert main(["run", str(RECIPE), *set_args(TINY), "--out", str(run)]) == 0
    width = mmcore.load(run).inputs["text"].shape[0]
    text = root / "text.npy"
    np.save(text, np.random.default_rng(0).normal(size=(40, width)).astype(np.float32))
    assert main(["index", str(run), "--modality", "text", str(text), "--out", str(root / "idx")]) == 0
    return root


@pytest.fixture
def copy(trained, tmp_path):
    return fresh_copy(trained, tmp_path)


@pytest.mark.parametrize("target", ["run/model.json", "run/recipe.toml", "run/checkpoints/last.ckpt",
                                    "run/sources/0-imagebind.toml", "idx/index.faiss", "idx/meta.json"])
def test_embed_overwrite_never_replaces_a_file_of_a_run_or_an_index(cli, copy, target):
    before = snapshot(copy)
    status, _, err = cli("embed", copy / "run", "--modality", "text", copy / "text.npy", "--out", copy / target,
                         "--overwrite")
    assert status == 2 and "--overwrite never replaces it" in err and "Traceback" not in err, err
    assert snapshot(copy) == before


def test_embed_overwrite_may_replace_a_file_of_the_users_inside_a_run_directory(cli, copy):
    mine = copy / "run" / "mine.npy"
    np.save(mine, np.zeros(3))
    status, _, err = cli("embed", copy / "run", "--modality", "text", copy / "text.npy", "--out", mine,
                         "--overwrite")
    assert status == 0, err
    assert np.load(mine).shape[0] == 40


def test_embed_overwrite_never_replaces_its_own_input(cli, copy):
    before = snapshot(copy)
    status, _, err = cli("embed", copy / "run", "--modality", "text", copy / "text.npy", "--out", copy / "text.npy",
                         "--overwrite")
    assert status == 2 and "is this command's input" in err
    assert snapshot(copy) == before


def test_search_out_never_replaces_the_index_it_searches(cli, copy):
    before = snapshot(copy)
    status, _, err = cli("search", copy / "idx", "--run", copy / "run", "--modality", "text", copy / "text.npy",
                         "-k", "2", "--out", copy / "idx" / "index.faiss", "--overwrite")
    assert status == 2 and "part of the index directory" in err
    assert snapshot(copy) == before


@pytest.mark.parametrize("override", ["dataset.seed=7", "dataset.test_size=64"])
def test_eval_set_refuses_a_setting_that_changes_what_the_data_is(cli, copy, override):
    status, _, err = cli("eval", copy / "run", "--set", override)
    assert status == 2 and "changes what the data is" in err and "Traceback" not in err


def test_a_quoted_set_key_is_read_as_toml_reads_it(cli):
    status, out, err = cli("show", RECIPE, "--set", 'dataset.modalities."image".noise=0.5')
    assert status == 0, err
    image = out[out.index("[dataset.modalities.image]"):]
    assert "noise = 0.5" in image.split("\n[")[0]
    assert 'modalities."\"image' not in out and '"\"image\""' not in out  # no modality named with its quotes


def test_a_malformed_quoted_set_key_is_refused(cli, tmp_path):
    status, _, err = cli("validate", RECIPE, "--set", 'dataset.modalities."image.noise=0.5', cwd=tmp_path)
    assert status == 2 and "not a valid TOML key" in err


@pytest.mark.parametrize("override", ["optimizer.lr=1e400", "optimizer.weight_decay=inf", "trainer.gradient_clip_val=inf"])
def test_infinite_numbers_are_refused(cli, tmp_path, override):
    status, _, err = cli("validate", RECIPE, "--set", override, cwd=tmp_path)
    assert status == 2 and "must be finite, got inf" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ids", [np.zeros(40, dtype=np.int64), np.array(["a", "b"] * 20)], ids=["ints", "strings"])
def test_index_refuses_duplicate_ids_naming_two_rows(cli, copy, ids):
    np.save(copy / "ids.npy", ids)
    status, _, err = cli("index", copy / "run", "--modality", "text", copy / "text.npy", "--ids", copy / "ids.npy",
                         "--out", copy / "idx2")
    assert status == 2 and "ids must be unique" in err and "rows 0 and" in err, err
    assert not (copy / "idx2").exists()


def test_a_core_section_given_as_a_scalar_is_one_clear_problem(cli, tmp_path):
    status, _, err = cli("validate", RECIPE, "--set", "trainer=3", cwd=tmp_path)
    assert status == 2 and "trainer: expected a table ([trainer] with its settings), got int 3" in err
