"""The ``manifest`` dataset: formats, paths, sparse pairing, splits, labels and prompts, and bad media named by
file and row (missing at build; undecodable or empty on access, or skipped and counted)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import mmcore
from mmcore_media.decode import MediaError
from mmcore_media.manifest import ManifestConfig, build_manifest

COLUMNS = ["image", "audio", "text", "label", "split"]


def _png(path, size=12, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def _wav(path, samples=800, rate=8000):
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.sin(np.arange(samples) / 5.0).astype(np.float32) * 0.3, rate)


def _write(path, rows, fmt=None):
    """rows: dicts with every column of COLUMNS (``""`` = empty); written as CSV, JSONL (null for empty) or
    Parquet (null for empty)."""
    fmt = fmt or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    if fmt == "csv":
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, columns)
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({k: (v if v != "" else None) for k, v in r.items()}) + "\n" for r in rows))
    else:
        pa = pytest.importorskip("pyarrow", reason='pip install "mmcore-media[parquet]"')
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [r[c] if r[c] != "" else None for r in rows] for c in columns}), path)
    return path


def _media_set(folder, per_class=4, classes=("cat", "dog")):
    """A small set: per class, rows alternate image+text and image+audio (never text+audio) in train/val; the
    last row of each class is a test row with all three. Returns the rows (paths relative to ``folder``)."""
    rows = []
    for c, name in enumerate(classes):
        for k in range(per_class):
            image = f"img/{name}{k}.png"
            _png(folder / image, value=40 * c + k)
            test = k == per_class - 1
            audio = f"snd/{name}{k}.wav" if test or k % 2 else ""
            if audio:
                _wav(folder / audio, samples=400 + 100 * k)
            rows.append({"image": image, "audio": audio, "text": f"a {name} number {k}" if test or not k % 2 else "",
                         "label": name, "split": "test" if test else ("val" if k == per_class - 2 else "train")})
    return rows


def _items(split):
    return [split[i] for i in range(len(split))]


def test_csv_jsonl_and_parquet_read_the_same_rows(tmp_path):
    rows = _media_set(tmp_path)
    built = {fmt: build_manifest(ManifestConfig(str(_write(tmp_path / f"m.{fmt}", rows)))) for fmt in
             ("csv", "jsonl", "parquet")}
    reference = built["csv"]
    assert reference.class_names == ("cat", "dog")
    assert {m: s.media for m, s in reference.inputs.items()} == {"image": "image", "audio": "audio", "text": "text"}
    for fmt, splits in built.items():
        assert splits.observed_pairs == reference.observed_pairs, fmt
        assert splits.class_names == reference.class_names, fmt
        for name in ("train", "val", "test"):
            got, want = _items(getattr(splits, name)), _items(getattr(reference, name))
            assert [(i["id"], i["label"], i["present"], i["inputs"]["text"]) for i in got] == \
                   [(i["id"], i["label"], i["present"], i["inputs"]["text"]) for i in want], (fmt, name)
    assert [i["id"] for i in _items(reference.test)] == [4, 8]  # the manifest's 1-based data rows


def test_empty_cells_are_absent_and_give_the_observed_pairs(tmp_path):
    splits = build_manifest(ManifestConfig(str(_write(tmp_path / "m.csv", _media_set(tmp_path)))))
    assert splits.observed_pairs == {frozenset({"image", "text"}), frozenset({"image", "audio"})}  # text-audio only in test
    first, second = splits.train[0], splits.train[1]
    assert first["present"] == {"image": True, "audio": False, "text": True}
    assert first["inputs"]["audio"] is None and first["inputs"]["text"] == "a cat number 0"
    assert second["present"] == {"image": True, "audio": True, "text": False} and second["inputs"]["text"] is None
    wave, rate = second["inputs"]["audio"]
    assert wave.dtype == np.float32 and wave.shape == (1, 500) and rate == 8000
    assert second["inputs"]["image"].mode == "RGB" and second["inputs"]["image"].size == (12, 12)
    assert all(splits.test[i]["present"] == {"image": True, "audio": True, "text": True} for i in range(2))
    assert "skipped" not in first  # only "skip" splits count dropped cells


def test_paths_are_relative_to_the_manifest_folder_or_absolute(tmp_path, monkeypatch):
    data = tmp_path / "data"
    rows = [dict(r, image="../" + r["image"], audio=r["audio"] and "../" + r["audio"]) for r in _media_set(data)]
    rows[0]["image"] = str(data / "img" / "cat0.png")  # absolute
    _write(data / "sub" / "m.csv", rows)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the manifest's own folder, not the working directory, is the base
    splits = build_manifest(ManifestConfig("../data/sub/m.csv"))
    assert np.asarray(splits.train[0]["inputs"]["image"])[0, 0].tolist() == [0, 0, 0]
    assert np.asarray(splits.train[1]["inputs"]["image"])[0, 0].tolist() == [1, 1, 1]
    assert splits.train[1]["inputs"]["audio"][0].shape == (1, 500)


def test_only_the_recipes_modalities_are_read_and_a_missing_column_is_named(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "audio"} for r in _media_set(tmp_path)]
    manifest = str(_write(tmp_path / "m.csv", rows))
    splits = build_manifest(ManifestConfig(manifest), mmcore.DatasetContext(0, ("text", "image")))
    assert list(splits.inputs) == ["text", "image"] and set(splits.train[0]["inputs"]) == {"text", "image"}
    with pytest.raises(mmcore.ConfigError, match="no column 'audio' for modality 'audio'") as info:
        build_manifest(ManifestConfig(manifest), mmcore.DatasetContext(0, ("image", "audio")))
    assert info.value.field == "modalities"
    with pytest.raises(mmcore.ConfigError, match="no column 'clip'") as info:
        build_manifest(ManifestConfig(manifest, columns={"audio": "clip"}), mmcore.DatasetContext(0, ("audio",)))
    assert info.value.field == "columns"
    with pytest.raises(mmcore.ConfigError, match="does not say its kind") as info:
        build_manifest(ManifestConfig(manifest), mmcore.DatasetContext(0, ("image", "caption")))
    renamed = build_manifest(ManifestConfig(manifest, modalities={"caption": "text"}, columns={"caption": "text"}),
                             mmcore.DatasetContext(0, ("image", "caption")))
    assert renamed.inputs["caption"].media == "text" and renamed.train[0]["inputs"]["caption"] == "a cat number 0"


def _labelled(folder, classes=10, per_class=10):
    rows = []
    for c in range(classes):
        for k in range(per_class):
            rows.append({"text": f"sample {c} {k}", "label": str(c)})
    return _write(folder / "labelled.csv", rows)


def test_the_seeded_split_is_deterministic_and_stratified(tmp_path):
    manifest = str(_labelled(tmp_path))
    config = ManifestConfig(manifest, val_fraction=0.1, test_fraction=0.2)

    def ids(s):
        return {name: [split[i]["id"] for i in range(len(split))] for name, split in
                (("train", s.train), ("val", s.val), ("test", s.test))}

    a, b = build_manifest(config, mmcore.DatasetContext(3)), build_manifest(config, mmcore.DatasetContext(3))
    other = build_manifest(config, mmcore.DatasetContext(4))
    assert ids(a) == ids(b) and ids(a) != ids(other)
    assert a.class_names == tuple(str(c) for c in range(10))  # integer labels index classes "0".."9"
    for name, size in (("train", 7), ("val", 1), ("test", 2)):
        split = getattr(a, name)
        counts = np.bincount([split[i]["label"] for i in range(len(split))], minlength=10)
        assert counts.tolist() == [size] * 10, name
    assert sorted(i for split in ids(a).values() for i in split) == list(range(1, 101))  # disjoint, every row once


def test_split_column_class_names_and_prompts(tmp_path):
    rows = _media_set(tmp_path)
    manifest = str(_write(tmp_path / "m.jsonl", rows))
    splits = build_manifest(ManifestConfig(manifest, class_names=["dog", "cat"], prompts=["a photo of a {}"]))
    assert splits.class_names == ("dog", "cat") and splits.prompts == ("a photo of a {}",)
    assert [splits.test[i]["label"] for i in range(2)] == [1, 0]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 2)  # from the split column
    for bad in ("a photo", "a {} of {}", "a {x} {}"):
        with pytest.raises(mmcore.ConfigError, match="exactly one") as info:
            build_manifest(ManifestConfig(manifest, prompts=["{}", bad]))
        assert info.value.field == "prompts[1]"
    with pytest.raises(mmcore.ConfigError, match=r"m.jsonl line 1: label 'cat' is not one of class_names"):
        build_manifest(ManifestConfig(manifest, class_names=["dog", "bird"]))
    rows[5]["split"] = "training"
    with pytest.raises(mmcore.ConfigError, match=r"m.csv row 6: split must be train, val or test, got 'training'"):
        build_manifest(ManifestConfig(str(_write(tmp_path / "m.csv", rows))))


def test_a_missing_file_is_found_at_build_naming_the_file_and_row(tmp_path):
    rows = _media_set(tmp_path)
    (tmp_path / rows[2]["image"]).unlink()
    (tmp_path / rows[5]["audio"]).unlink()
    with pytest.raises(mmcore.ConfigError) as info:
        build_manifest(ManifestConfig(str(_write(tmp_path / "m.csv", rows)), on_bad_media="skip"))
    message = str(info.value)
    assert info.value.field == "path"
    assert "2 referenced files are missing" in message
    assert "row 3 image img/cat2.png" in message and "row 6 audio snd/dog1.wav" in message


def test_validate_reports_a_missing_file_with_exit_2(tmp_path):
    from mmcore.testing import cli

    rows = _media_set(tmp_path)
    (tmp_path / rows[1]["audio"]).unlink()
    _write(tmp_path / "m.csv", rows)
    (tmp_path / "recipe.toml").write_text(
        'name = "m"\nembed_dim = 8\n[dataset]\nname = "manifest"\npath = "m.csv"\n'
        '[encoders.image]\nname = "mlp"\n[encoders.audio]\nname = "mlp"\n[anchor]\nname = "pairwise"\n')
    status, out, err = cli("validate", "recipe.toml", cwd=tmp_path)
    assert status == 2, (out, err)
    assert "dataset.path" in err and "row 2 audio snd/cat1.wav" in err and "1 referenced file is missing" in err


def _bad_media_set(folder):
    rows = _media_set(folder)
    (folder / rows[0]["image"]).write_bytes((folder / rows[0]["image"]).read_bytes()[:40])  # truncated PNG
    (folder / rows[1]["audio"]).write_text("this is not audio, only text bytes\n" * 20)  # a .wav of text
    rows[4]["text"] = "   "  # an empty text
    return _write(folder / "m.csv", rows)


def test_bad_media_are_errors_naming_the_file_and_row(tmp_path):
    manifest = str(_bad_media_set(tmp_path))
    with pytest.raises(mmcore.ConfigError, match=r"m.csv row 5: text \(column 'text'\): empty text") as info:
        build_manifest(ManifestConfig(manifest))
    assert info.value.field == "path"
    splits = build_manifest(ManifestConfig(manifest), mmcore.DatasetContext(0, ("image", "audio")))
    with pytest.raises(MediaError, match=r"m.csv row 1: image: .*img/cat0.png: cannot decode the image"):
        splits.train[0]
    with pytest.raises(MediaError, match=r"m.csv row 2: audio: .*snd/cat1.wav: cannot decode the audio"):
        splits.train[1]
    assert splits.train[2]["present"]["image"]  # good rows still decode


def test_bad_media_are_skipped_and_counted_with_skip(tmp_path):
    splits = build_manifest(ManifestConfig(str(_bad_media_set(tmp_path)), on_bad_media="skip"))
    items = _items(splits.train)
    assert [i["skipped"] for i in items] == [1, 1, 1, 0]
    assert items[0]["present"] == {"image": False, "audio": False, "text": True} and items[0]["inputs"]["image"] is None
    assert items[1]["present"] == {"image": True, "audio": False, "text": False}
    assert items[2]["present"] == {"image": True, "audio": False, "text": False}  # its empty text dropped at read
    assert items[3]["present"]["audio"] and items[3]["skipped"] == 0


def test_a_parquet_manifest_without_pyarrow_names_the_pip_command(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    (tmp_path / "m.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(mmcore.ConfigError, match=r'pip install "mmcore-media\[parquet\]"'):
        build_manifest(ManifestConfig(str(tmp_path / "m.parquet")))
