"""The features dataset: the README's format example trains, batches hold exactly the files' rows, every bad file
is a recipe error naming it, and a large on-disk set streams while the process's resident memory stays far below
its size.

Expected values are computed here with plain numpy (np.load of the whole small file), not through the plugin.
"""

import json
import re
from pathlib import Path

import mmcore
import numpy as np
import pytest
import torch
from mmcore.testing import cli
from mmcore_features.plugin import FeaturesConfig, build_features
from torch.utils.data import RandomSampler, Subset

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(kind: str) -> list:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_example_writes_a_directory_that_trains(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exec(_blocks("python")[0], {})  # the format example, as printed in the README
    recipe = tmp_path / "my_features.toml"
    recipe.write_text(_blocks("toml")[0])
    status, _, err = cli("run", recipe, "--set", "trainer.max_epochs=2", "--set", "trainer.accelerator=cpu",
                         "--out", tmp_path / "run")
    assert status == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["samples"] == 300  # test_fraction 0.1 of 3000
    pairs = json.loads((tmp_path / "run" / "pairs.json").read_text())
    assert pairs["observed"] == [["audio", "image"], ["image", "text"]]  # from the presence files
    # text and audio never co-occur: their zero-shot is emergent. Chance is 0.2 (5 classes).
    # measured after 2 epochs (recipe seeds 0, 1, 2): prototypes/text->audio/acc 0.960 / 0.946 / 0.940,
    # retrieval/trained/R@1 0.887 / 0.868 / 0.875 (chance about 1/150)
    assert metrics["prototypes/text->audio/acc"] > 0.5
    assert metrics["retrieval/trained/R@1"] > 0.2


def _write(root: Path, rows=40, **arrays):
    """A small valid directory (image always present, text in even rows only) plus any files given."""
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    files = {"image": rng.normal(size=(rows, 3)).astype(np.float32),
             "text": rng.normal(size=(rows, 2)).astype(np.float64),
             "text.present": np.arange(rows) % 2 == 0,
             "labels": np.arange(rows) % 4,
             "ids": 1000 + np.arange(rows)[::-1]}
    files.update(arrays)
    for name, value in files.items():
        if value is not None:
            np.save(root / f"{name}.npy", value)
    return files


def test_a_batch_holds_the_files_rows_in_the_requested_order(tmp_path):
    files = _write(tmp_path / "d", split=np.arange(40) % 3)
    splits = build_features(FeaturesConfig(str(tmp_path / "d")))
    train_rows = [r for r in range(40) if r % 3 == 0]
    assert len(splits.train) == len(train_rows) and splits.input_dims == {"image": 3, "text": 2}
    assert splits.class_names == ("class 0", "class 1", "class 2", "class 3")
    for io in ("pread", "mmap"):
        split = build_features(FeaturesConfig(str(tmp_path / "d"), io=io)).train
        wanted = [5, 0, 5, 13, 2]  # unsorted, with a repeat
        batch = split.get_batch(wanted)
        for position, index in enumerate(wanted):
            row = train_rows[index]
            assert torch.equal(batch["inputs"]["image"][position], torch.from_numpy(files["image"][row]))
            present = row % 2 == 0
            expected_text = files["text"][row].astype(np.float32) if present else np.zeros(2, np.float32)
            assert torch.equal(batch["inputs"]["text"][position], torch.from_numpy(expected_text)), (io, row)
            assert batch["present"]["text"][position].item() == present
            assert batch["present"]["image"][position].item()
            assert batch["id"][position].item() == 1000 + 39 - row
            assert batch["label"][position].item() == row % 4
        assert batch["inputs"]["image"].dtype == torch.float32 and batch["present"]["text"].dtype == torch.bool
        assert batch["id"].dtype == torch.long and batch["label"].dtype == torch.long
    item = splits.train[3]
    assert torch.equal(item["inputs"]["image"], torch.from_numpy(files["image"][train_rows[3]]))
    # the core's reference set is a Subset of the training split; it batches through get_batch too
    from mmcore.train.data import BindingData

    subset = Subset(splits.train, range(4))
    batch = BindingData(splits, 4).fetch(subset, [1, 3])
    assert batch["id"].tolist() == [1000 + 39 - train_rows[1], 1000 + 39 - train_rows[3]]


def test_the_random_split_is_seeded_and_pairs_are_observed_in_training_rows_only(tmp_path):
    rows = 200
    audio_present = np.zeros(rows, dtype=bool)
    _write(tmp_path / "d", rows=rows, audio=np.ones((rows, 2), np.float32), **{"audio.present": audio_present})
    first = build_features(FeaturesConfig(str(tmp_path / "d"), seed=1))
    again = build_features(FeaturesConfig(str(tmp_path / "d"), seed=1))
    other = build_features(FeaturesConfig(str(tmp_path / "d"), seed=2))
    assert (len(first.train), len(first.val), len(first.test)) == (160, 20, 20)
    assert np.array_equal(first.test.rows, again.test.rows) and not np.array_equal(first.test.rows, other.test.rows)
    everything = np.concatenate([first.train.rows, first.val.rows, first.test.rows])
    assert sorted(everything.tolist()) == list(range(rows))
    # audio is present in one test row only: audio-image is not a training pair
    audio_present[first.test.rows[0]] = True
    np.save(tmp_path / "d" / "audio.present.npy", audio_present)
    splits = build_features(FeaturesConfig(str(tmp_path / "d"), seed=1))
    assert splits.observed_pairs == {frozenset(("image", "text"))}
    audio_present[first.train.rows[0]] = True
    np.save(tmp_path / "d" / "audio.present.npy", audio_present)
    splits = build_features(FeaturesConfig(str(tmp_path / "d"), seed=1))
    assert frozenset(("image", "audio")) in splits.observed_pairs


def _error(tmp_path, **changes) -> mmcore.ConfigError:
    root = tmp_path / "d"
    _write(root, **{k: v for k, v in changes.items() if not k.startswith("_")})
    for name in changes.get("_remove", ()):
        (root / name).unlink()
    for name, text in changes.get("_text", {}).items():
        (root / name).write_text(text)
    with pytest.raises(mmcore.ConfigError) as info:
        build_features(FeaturesConfig(str(root), **changes.get("_config", {})))
    return info.value


def test_nan_in_a_present_row_names_the_file_and_row_but_absent_rows_may_hold_nan(tmp_path):
    text = np.ones((40, 2))
    text[3] = np.nan  # row 3 is odd: text is absent there
    _write(tmp_path / "ok", text=text)
    train = build_features(FeaturesConfig(str(tmp_path / "ok"))).train
    assert torch.isfinite(train.get_batch(list(range(len(train))))["inputs"]["text"]).all()
    text[6, 1] = np.inf  # row 6 is present
    error = _error(tmp_path, text=text)
    assert error.field == "path" and "text.npy" in str(error) and "row 6" in str(error)
    # without the build-time scan, the batch that reads the row says the same
    splits = build_features(FeaturesConfig(str(tmp_path / "d"), check_values=False, test_fraction=0.5))
    part = next(s for s in (splits.train, splits.val, splits.test) if 6 in s.rows.tolist())
    with pytest.raises(ValueError, match=r"text\.npy: row 6 is present but holds NaN"):
        part.get_batch(list(range(len(part))))


@pytest.mark.parametrize("changes, file, words", [
    ({"text": np.zeros((39, 2), np.float32)}, "text.npy", "has 39 rows but image.npy has 40"),
    ({"image": np.zeros((40, 3), np.int64)}, "image.npy", "must be floating point"),
    ({"text.present": np.ones(40, np.int8)}, "text.present.npy", "expected a bool array"),
    ({"text.present": np.ones(41, bool)}, "text.present.npy", "has 41 rows"),
    ({"labels": np.zeros(40)}, "labels.npy", "expected integer class labels"),
    ({"labels": np.arange(40) - 1}, "labels.npy", "labels must be >= 0"),
    ({"ids": np.zeros(40, np.int64)}, "ids.npy", "ids must be unique"),
    ({"split": np.full(40, 3)}, "split.npy", "values must be 0 (train), 1 (val) or 2 (test)"),
    ({"split": np.arange(40) % 2}, "split.npy", "the test split is empty"),
    ({"image": np.zeros((0, 3), np.float32), "text": np.zeros((0, 2)), "text.present": np.zeros(0, bool),
      "labels": np.zeros(0, int), "ids": np.zeros(0, int)}, "image.npy", "has zero rows"),
    ({"image": np.zeros(40, np.float32)}, "image.npy", "expected a 2-D array"),
    ({"image": np.asfortranarray(np.zeros((40, 3), np.float32))}, "image.npy", "Fortran order"),
    ({"image": np.array([None] * 40)}, "image.npy", "cannot be memory-mapped"),
    ({"audio.present": np.ones(40, bool)}, "audio.present.npy", "no audio.npy"),
    ({"_text": {"classes.json": '["a", "b"]'}}, "labels.npy", "label 3 has no name"),
    ({"_text": {"classes.json": '{"a": 1}'}}, "classes.json", "expected a JSON list"),
])
def test_bad_files_are_config_errors_naming_the_file(tmp_path, changes, file, words):
    error = _error(tmp_path, **changes)
    assert error.field == "path"
    assert str(tmp_path / "d" / file) in str(error) and words in str(error), str(error)


def test_missing_directory_or_files(tmp_path):
    with pytest.raises(mmcore.ConfigError, match="is not a directory"):
        build_features(FeaturesConfig(str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "empty" / "labels.npy", np.zeros(3, int))
    with pytest.raises(mmcore.ConfigError, match="holds no <modality>.npy file"):
        build_features(FeaturesConfig(str(tmp_path / "empty")))
    error = _error(tmp_path, _config={"modalities": ["image", "depth"]})
    assert error.field == "modalities" and "depth.npy not found" in str(error)
    # in a recipe, the error names the setting
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[dataset]\nname = "features"\npath = "{tmp_path / "nowhere"}"\n[encoders.image]\nname = "mlp"\n'
                      '[anchor]\nname = "pairwise"\n')
    status, _, err = cli("validate", recipe)
    assert status == 2 and "dataset.path:" in err and "nowhere is not a directory" in err


def _memory() -> dict:
    """MiB of this process's VmRSS and VmHWM (from /proc/self/status)."""
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _write_big(root: Path, rows: int, modalities: int, dim: int) -> int:
    """Float32 features written with plain file writes (no memory map: the writer's memory does not count)."""
    root.mkdir()
    block = np.random.default_rng(0).standard_normal((1 << 16, dim), dtype=np.float32)
    for m in range(modalities):
        with open(root / f"m{m}.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
            for start in range(0, rows, 1 << 16):
                f.write((block[: min(rows - start, 1 << 16)] + np.float32(start % 1000 + m)).tobytes())
    np.save(root / "m1.present.npy", np.arange(rows) % 4 != 0)
    return sum(p.stat().st_size for p in root.glob("m?.npy"))


def _peak_growth_while_streaming(root: Path, io: str, batches: int) -> float:
    """MiB by which the process's peak resident memory exceeds its resident memory before building."""
    before = _memory()["VmRSS"]
    splits = build_features(FeaturesConfig(str(root), io=io))  # includes the NaN scan of every present row
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
        peak = lambda: _memory()["VmHWM"]  # noqa: E731
    except OSError:  # not allowed here: sample after every batch instead
        peak = lambda: _memory()["VmRSS"]  # noqa: E731
    sampler = RandomSampler(splits.train, num_samples=batches * 4096, generator=torch.Generator().manual_seed(0))
    highest, seen = 0.0, 0
    # one get_batch call per 4096 sampled rows, as the core's loader fetches a batched dataset
    for batch in map(splits.train.get_batch, torch.tensor(list(sampler)).split(4096)):
        seen += len(batch["id"])
        assert batch["inputs"]["m0"].shape == (len(batch["id"]), 64)
        highest = max(highest, peak())
    assert seen == batches * 4096
    return highest - before


def test_a_large_set_streams_with_resident_memory_far_below_its_size(tmp_path):
    # 1,000,000 rows x 4 modalities x 64 float32 = 0.95 GiB on disk (benchmarks/features_streaming.py: 2M rows)
    size = _write_big(tmp_path / "big", 1_000_000, 4, 64) / 2**20
    growth = _peak_growth_while_streaming(tmp_path / "big", "pread", batches=30)
    # measured: 22-35 MiB (shared-library pages, the mapped presence file, one batch) for 977 MiB of features;
    # 987 MiB with io = "mmap" below
    assert growth < size / 8, (growth, size)
    # the control: reading the same rows through memory maps makes the file resident, so the measure can see it
    mapped = _peak_growth_while_streaming(tmp_path / "big", "mmap", batches=30)
    assert mapped > size / 2, (mapped, size)
