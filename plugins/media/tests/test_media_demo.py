"""The demo set: digit scans as PNG, espeak-ng speech as WAV, captions, and a manifest with ImageBind-style
sparse pairing (never text+audio in training); deterministic per seed; ``mmcore media-demo`` refuses to overwrite
anything but a previous demo set."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import numpy as np
import pytest

import mmcore
from mmcore_media.decode import read_audio, read_image
from mmcore_media.demo import MARKER, WORDS, build_demo
from mmcore_media.manifest import ManifestConfig, build_manifest

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="the demo set's audio needs espeak-ng: apt-get install espeak-ng")


def _rows(manifest):
    with open(manifest, newline="") as file:
        return list(csv.DictReader(file))


def _per_class(manifest):
    return json.loads((manifest.parent / MARKER).read_text())["per_class"]


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_demo_writes_scans_speech_and_captions_with_sparse_pairing(media_demo):
    rows = _rows(media_demo)
    assert list(rows[0]) == ["image", "audio", "text", "label", "split"]
    assert _per_class(media_demo) == 8 and len(rows) == 80  # the media_demo fixture's size
    for word in WORDS:
        splits = [r["split"] for r in rows if r["label"] == word]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (5, 1, 2), word
    for row in rows:
        assert row["image"] and (media_demo.parent / row["image"]).is_file()
        if row["split"] == "test":  # every modality, to measure emergent text <-> audio
            assert row["audio"] and row["text"]
        else:  # image+text or image+audio, never text+audio
            assert bool(row["audio"]) != bool(row["text"])
        if row["text"]:
            assert row["label"] in row["text"]
    train = [r for r in rows if r["split"] == "train"]
    assert 0.3 < np.mean([bool(r["audio"]) for r in train]) < 0.7
    assert len({r["text"].replace(r["label"], "{}") for r in rows if r["text"]}) >= 3  # several phrasings
    image = read_image(media_demo.parent / rows[0]["image"])
    pixels = np.asarray(image)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert pixels.max() > 200 and pixels.min() < 100  # ink on paper, not a blank


def test_the_demo_wavs_decode_with_read_audio_and_vary(media_demo):
    clips = sorted((media_demo.parent / "audio").glob("*.wav"))
    assert len(clips) == len([r for r in _rows(media_demo) if r["audio"]])
    lengths = set()
    for clip in clips:
        wave, rate = read_audio(clip)
        assert wave.dtype == np.float32 and wave.shape[0] == 1 and rate == 22050
        assert 0.2 < wave.shape[1] / rate < 3.0 and np.abs(wave).max() > 0.05  # a spoken word, not silence
        lengths.add(wave.shape[1])
    assert len(lengths) > len(clips) // 2  # voices and speeds differ from clip to clip


def test_the_demo_is_deterministic_per_seed(media_demo, tmp_path):
    again = build_demo(tmp_path / "again", per_class=_per_class(media_demo), seed=0)
    assert _digest(again.parent) == _digest(media_demo.parent)
    other = build_demo(tmp_path / "other", per_class=_per_class(media_demo), seed=1)
    assert _rows(other) != _rows(media_demo)


def test_the_demo_manifest_builds_with_emergent_text_audio(media_demo):
    splits = build_manifest(ManifestConfig(str(media_demo), class_names=list(WORDS), prompts=["a digit {}"]),
                            mmcore.DatasetContext(0, ("image", "text", "audio")))
    assert splits.observed_pairs == {frozenset({"image", "text"}), frozenset({"image", "audio"})}
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)
    item = splits.test[0]
    assert all(item["present"].values()) and splits.class_names[item["label"]] in item["inputs"]["text"]
    assert item["inputs"]["image"].size == (32, 32) and item["inputs"]["audio"][1] == 22050


def test_media_demo_command_refuses_a_folder_that_is_not_a_demo_set(media_demo, tmp_path):
    import argparse

    from mmcore_media.demo import add_commands

    parser = argparse.ArgumentParser(prog="mmcore")
    add_commands(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(["media-demo", *map(str, argv)])
        return args.func(args)

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    out = tmp_path / "demo"
    assert run(out, "--per-class", 3) == 0 and (out / "manifest.csv").is_file()
    assert run(other, "--per-class", 3, "--overwrite") == 2  # never deletes a folder of other files
    assert (other / "notes.txt").read_text() == "keep me" and not (other / "manifest.csv").exists()
    assert run(out, "--per-class", 3) == 2  # a previous demo set, but no --overwrite
    assert run(out, "--per-class", 4, "--overwrite") == 0 and len(_rows(out / "manifest.csv")) == 40
    assert len(list((out / "images").iterdir())) == 40  # the old files are gone, not mixed in


def test_media_demo_errors_go_to_stderr_with_exit_2(tmp_path, capsys):
    import argparse

    from mmcore_media.demo import add_commands

    parser = argparse.ArgumentParser(prog="mmcore")
    add_commands(parser.add_subparsers())
    (tmp_path / "x").write_text("a file")
    args = parser.parse_args(["media-demo", str(tmp_path), "--per-class", "3"])
    assert args.func(args) == 2
    assert capsys.readouterr().err.startswith(f"mmcore: error: {tmp_path} is not empty and is not a demo set")


def test_the_text_anchor_manifest_pairs_the_same_files_with_text(media_demo):
    """LanguageBind's pairing of the same set: image+text or audio+text in training, never image+audio."""
    from mmcore_media.demo import TEXT_ANCHOR_MANIFEST

    image_anchor, text_anchor = _rows(media_demo), _rows(media_demo.parent / TEXT_ANCHOR_MANIFEST)
    assert len(text_anchor) == len(image_anchor)
    for old, new in zip(image_anchor, text_anchor):
        assert (new["label"], new["split"], new["audio"]) == (old["label"], old["split"], old["audio"])
        if new["split"] == "test":
            assert new == old
        else:
            assert new["text"] and bool(new["image"]) != bool(new["audio"])
            assert new["label"] in new["text"]
    splits = build_manifest(ManifestConfig(str(media_demo.parent / TEXT_ANCHOR_MANIFEST), class_names=list(WORDS)),
                            mmcore.DatasetContext(0, ("image", "text", "audio")))
    assert splits.observed_pairs == {frozenset({"image", "text"}), frozenset({"audio", "text"})}
