"""Hostile arguments to the use commands (eval, embed, index, search, export) and to ``TrainedModel.encode``.

Every bad input exits 2 with ``mmcore: error: ...`` naming what is wrong, without a traceback, without writing
anything (no temporary file left behind) and without deleting anything mmcore did not write. One tiny run is
trained for the whole module; the hostile files are made next to it.
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mmcore
from mmcore.testing import run_recipe, tiny_recipe


def _fifo_feeder(path, seconds: float = 8.0):
    """Opens the FIFO ``path`` for writing as soon as someone reads it (within ``seconds``), writes junk and closes
    it: code that (wrongly) opens a FIFO gets an error instead of blocking the test forever."""
    def feed():
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody reads it (the refusal we want)
                time.sleep(0.1)
                continue
            try:
                os.write(fd, b"\x93NUMPY junk" * 10)
            except OSError:
                pass
            os.close(fd)
            return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained run, a copy of it with other weights, hostile inputs and damaged index directories."""
    root = tmp_path_factory.mktemp("hostile_use")
    run = root / "run"
    run_recipe(tiny_recipe(trainer={"max_epochs": 1}), run)
    model = mmcore.load(run)
    test = model.data().splits.test
    inputs = root / "in"
    inputs.mkdir()
    text, audio = test.inputs["text"].numpy(), test.inputs["audio"].numpy()
    np.save(inputs / "text.npy", text)
    np.save(inputs / "audio.npy", audio)
    bad = text.copy()
    bad[3, 2] = np.nan
    np.save(inputs / "nan.npy", bad)
    bad = text.copy()
    bad[5, 0] = np.inf
    np.save(inputs / "inf.npy", bad)
    np.save(inputs / "complex.npy", text.astype(np.complex64))
    np.save(inputs / "empty.npy", np.zeros((0, 16), np.float32))
    np.save(inputs / "objects.npy", np.array([[1] * 16] * 3, dtype=object), allow_pickle=True)
    (inputs / "text_file.npy").write_text("these are not numbers\n")
    os.mkfifo(inputs / "fifo.npy")
    np.save(inputs / "ids_2d.npy", np.zeros((256, 2), np.int64))

    other = root / "other_run"  # the same model, other weights (as another run of the recipe would have)
    shutil.copytree(run, other)
    ckpt = torch.load(other / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in ckpt["state_dict"].items():
        if name.startswith("encoders.text"):
            ckpt["state_dict"][name] = tensor + 0.05
    torch.save(ckpt, other / "checkpoints" / "last.ckpt")
    nobest = root / "no_best_run"
    shutil.copytree(run, nobest)
    for path in (nobest / "checkpoints").glob("best-*.ckpt"):
        path.unlink()
    damaged = root / "damaged_run"
    shutil.copytree(run, damaged)
    record = json.loads((damaged / "model.json").read_text())
    record["inputs"] = "text"
    (damaged / "model.json").write_text(json.dumps(record))

    from mmcore.testing import cli

    status, _, err = cli("index", run, "--modality", "audio", inputs / "audio.npy", "--out", root / "idx")
    assert status == 0, err
    status, _, err = cli("index", run, "--modality", "audio", inputs / "audio.npy", "--out", root / "ivf",
                         "--factory", "IVF4,Flat")
    assert status == 0, err
    indexes = root / "indexes"
    indexes.mkdir()

    def damage(name, change, source="idx", keep_size=False):
        target = indexes / name
        shutil.copytree(root / source, target)
        meta = json.loads((target / "meta.json").read_text())
        if not keep_size:
            meta.pop("index_bytes", None)  # as an index written before sizes were recorded: the header is checked
        (target / "meta.json").write_text(json.dumps(meta))
        change(target, meta)

    def edit_meta(**values):
        def change(target, meta):
            meta.update(values)
            (target / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
        return change

    def patch(offset_of, value):
        def change(target, _):
            data = bytearray((target / "index.faiss").read_bytes())
            at = offset_of(data)
            data[at:at + 8] = struct.pack("<Q", value)
            (target / "index.faiss").write_bytes(data)
        return change

    damage("not_json", lambda t, _: (t / "meta.json").write_text("{not json"))
    damage("no_dim", edit_meta(dim=None))
    damage("text_dim", edit_meta(dim="32"))
    damage("huge_flat", patch(lambda _: 37, 1 << 38))  # the flat index's vector count (faiss allocates it)
    damage("huge_ivf", patch(lambda d: d.index(b"full") + 4, 1 << 38), source="ivf")
    damage("truncated", lambda t, _: (t / "index.faiss").write_bytes((t / "index.faiss").read_bytes()[:1000]))
    damage("short_ids", lambda t, _: np.save(t / "ids.npy", np.arange(3)))

    def fifo(target, _):
        (target / "index.faiss").unlink()
        os.mkfifo(target / "index.faiss")

    damage("fifo", fifo)
    return {"root": root, "run": run, "other": other, "nobest": nobest, "damaged": damaged, "in": inputs,
            "idx": root / "idx", "bad": indexes}


def _snapshot(*folders) -> dict:
    """Every path below ``folders`` (hidden ones included) -> (size, mtime) of files, None for the rest."""
    seen = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            if path.is_file() and not path.is_symlink():
                seen[path] = (path.stat().st_size, path.stat().st_mtime_ns)
            else:
                seen[path] = None
    return seen


def _index_copy(world, place):
    shutil.copytree(world["idx"], place)


def _setup_foreign_index(world, out):
    (out / "mine").mkdir()
    (out / "mine" / "meta.json").write_text("{}")
    (out / "mine" / "precious.txt").write_text("not mmcore's")


def _setup_plain_folder(world, out):
    (out / "mine").mkdir()
    (out / "mine" / "notes.txt").write_text("not mmcore's")


SETUPS = {
    "folder": _setup_plain_folder,
    "foreign_index": _setup_foreign_index,
    "index_as_cwd": lambda world, out: _index_copy(world, out / "mine"),
}

EMBED = ["embed", "{run}", "--modality", "text"]
INDEX = ["index", "{run}", "--modality", "audio", "{in}/audio.npy"]
SEARCH = ["search", "--run", "{run}", "--modality", "text", "{in}/text.npy"]

CASES = [
    # (id, argv, what the message must say, setup, working directory)
    ("embed-batch-size-negative", EMBED + ["{in}/text.npy", "--out", "{out}/e.npy", "--batch-size", "-1"],
     "--batch-size must be a positive integer", None, None),
    ("embed-batch-size-zero", EMBED + ["{in}/text.npy", "--out", "{out}/e.npy", "--batch-size", "0"],
     "--batch-size must be a positive integer", None, None),
    ("embed-nan-row", EMBED + ["{in}/nan.npy", "--out", "{out}/e.npy"], "nan.npy: text: row 3 holds NaN", None, None),
    ("embed-inf-row", EMBED + ["{in}/inf.npy", "--out", "{out}/e.npy"], "inf.npy: text: row 5 holds NaN or inf",
     None, None),
    ("embed-complex", EMBED + ["{in}/complex.npy", "--out", "{out}/e.npy"], "complex.npy: holds complex64", None, None),
    ("embed-no-rows", EMBED + ["{in}/empty.npy", "--out", "{out}/e.npy"], "empty.npy: no rows", None, None),
    ("embed-text-file", EMBED + ["{in}/text_file.npy", "--out", "{out}/e.npy"], "text_file.npy: not a .npy", None,
     None),
    ("embed-object-array", EMBED + ["{in}/objects.npy", "--out", "{out}/e.npy"], "objects.npy: not a readable .npy",
     None, None),
    ("embed-dev-zero", EMBED + ["/dev/zero", "--out", "{out}/e.npy"], "/dev/zero: a character device, not a regular file",
     None, None),
    ("embed-fifo", EMBED + ["{in}/fifo.npy", "--out", "{out}/e.npy"], "fifo.npy: a FIFO (named pipe), not a regular",
     None, None),
    ("embed-out-folder-missing", EMBED + ["{in}/text.npy", "--out", "{out}/nowhere/e.npy"], "nowhere does not exist",
     None, None),
    ("embed-overwrite-a-folder", EMBED + ["{in}/text.npy", "--out", "{out}/mine", "--overwrite"],
     "--overwrite replaces only a file", "folder", None),
    ("embed-run-dir-is-a-file", ["embed", "{in}/text.npy", "--modality", "text", "{in}/text.npy", "--out",
                                 "{out}/e.npy"], "text.npy is not a run directory (a file)", None, None),
    ("embed-damaged-model-json", ["embed", "{damaged}", "--modality", "text", "{in}/text.npy", "--out",
                                  "{out}/e.npy"], "model.json", None, None),
    ("index-batch-size-negative", INDEX + ["--out", "{out}/i", "--batch-size", "-1"],
     "--batch-size must be a positive integer", None, None),
    ("index-bad-factory", INDEX + ["--out", "{out}/i", "--factory", "Bogus"], "--factory 'Bogus': faiss cannot build",
     None, None),
    ("index-factory-needs-more-rows", INDEX + ["--out", "{out}/i", "--factory", "IVF4096,Flat"],
     "4096 inverted lists need at least 4096 rows to train (faiss asks for 159744); the input has 256: use IVF6,Flat",
     None, None),
    ("index-nprobe-zero", INDEX + ["--out", "{out}/i", "--factory", "IVF4,Flat", "--nprobe", "0"],
     "--nprobe must be a positive integer", None, None),
    ("index-ids-2d", INDEX + ["--out", "{out}/i", "--ids", "{in}/ids_2d.npy"], "ids_2d.npy: expected one id per row",
     None, None),
    ("index-out-folder-missing", INDEX + ["--out", "{out}/nowhere/i"], "nowhere does not exist", None, None),
    ("index-overwrite-foreign-files", INDEX + ["--out", "{out}/mine", "--overwrite"],
     "that mmcore did not write (precious.txt)", "foreign_index", None),
    ("index-overwrite-a-plain-folder", INDEX + ["--out", "{out}/mine", "--overwrite"], "holds no meta.json",
     "folder", None),
    ("index-overwrite-the-working-directory", INDEX + ["--out", ".", "--overwrite"], "the working directory",
     "index_as_cwd", "mine"),
    ("search-k-zero", SEARCH[:1] + ["{idx}"] + SEARCH[1:] + ["-k", "0"], "-k must be a positive integer", None, None),
    ("search-k-negative", SEARCH[:1] + ["{idx}"] + SEARCH[1:] + ["-k", "-3"], "-k must be a positive integer", None,
     None),
    ("search-index-of-another-run", ["search", "{idx}", "--run", "{other}"] + SEARCH[3:],
     "was built by another run or checkpoint", None, None),
    ("search-meta-not-json", SEARCH[:1] + ["{bad}/not_json"] + SEARCH[1:], "not_json/meta.json: damaged, not JSON",
     None, None),
    ("search-meta-missing-key", SEARCH[:1] + ["{bad}/no_dim"] + SEARCH[1:], "meta.json: damaged: 'dim' is missing",
     None, None),
    ("search-meta-wrong-type", SEARCH[:1] + ["{bad}/text_dim"] + SEARCH[1:],
     "meta.json: damaged: 'dim' should be a positive integer", None, None),
    ("search-flat-header-claims-too-much", SEARCH[:1] + ["{bad}/huge_flat"] + SEARCH[1:],
     "huge_flat/index.faiss: damaged", None, None),
    ("search-ivf-header-claims-too-much", SEARCH[:1] + ["{bad}/huge_ivf"] + SEARCH[1:],
     "huge_ivf/index.faiss: damaged", None, None),
    ("search-truncated-index", SEARCH[:1] + ["{bad}/truncated"] + SEARCH[1:], "truncated/index.faiss: damaged", None,
     None),
    ("search-index-is-a-fifo", SEARCH[:1] + ["{bad}/fifo"] + SEARCH[1:], "index.faiss: a FIFO", None, None),
    ("search-ids-of-another-length", SEARCH[:1] + ["{bad}/short_ids"] + SEARCH[1:], "ids.npy: 3 ids for 256 rows",
     None, None),
    ("search-out-is-a-folder", SEARCH[:1] + ["{idx}"] + SEARCH[1:] + ["--out", "{out}/mine", "--overwrite"],
     "--overwrite replaces only a file", "folder", None),
    ("eval-best-without-one", ["eval", "{nobest}", "--checkpoint", "best"], "has no best-*.ckpt", None, None),
    ("eval-unknown-checkpoint", ["eval", "{run}", "--checkpoint", "nope"],
     "checkpoints holds: best-", None, None),
    ("eval-checkpoint-outside-checkpoints", ["eval", "{run}", "--checkpoint", "../recipe.toml"],
     "give the name of a file in", None, None),
    ("export-overwrite-a-plain-folder", ["export", "{run}", "--out", "{out}/mine", "--overwrite"],
     "holds no manifest.json", "folder", None),
    ("export-out-folder-missing", ["export", "{run}", "--out", "{out}/nowhere/x"], "nowhere does not exist", None,
     None),
]


@pytest.mark.parametrize("argv, says, setup, cwd", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_use_arguments_exit_2_naming_the_problem_and_write_nothing(world, cli, tmp_path, argv, says, setup,
                                                                           cwd):
    out = tmp_path / "out"
    out.mkdir()
    if setup:
        SETUPS[setup](world, out)
    places = {k: str(v) for k, v in world.items()} | {"out": str(out)}
    args = [a.format(**places) for a in argv]
    for path in [Path(a) for a in args] + [Path(a) / "index.faiss" for a in args]:
        if path.is_fifo():
            _fifo_feeder(path)  # code that wrongly opens it fails instead of hanging
    before = _snapshot(out, world["root"])
    status, stdout, err = cli(*args, cwd=out / cwd if cwd else None)
    assert status == 2, (status, err)
    assert "mmcore: error: " in err and says in err, err
    assert "Traceback" not in err + stdout
    assert _snapshot(out, world["root"]) == before, "something was written, changed or deleted"


def test_a_search_checks_which_run_built_the_index_and_a_moved_copy_still_matches(world, cli, tmp_path):
    moved = tmp_path / "moved_run"
    shutil.copytree(world["run"], moved)
    status, out, err = cli("search", world["idx"], "--run", moved, "--modality", "text", world["in"] / "text.npy",
                           "-k", "2")
    assert status == 0 and "warning" not in err, err
    old = tmp_path / "old_index"  # an index made before fingerprints: searched, with a warning
    shutil.copytree(world["idx"], old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["run_fingerprint"]
    (old / "meta.json").write_text(json.dumps(meta))
    status, _, err = cli("search", old, "--run", world["other"], "--modality", "text", world["in"] / "text.npy")
    assert status == 0 and "mmcore: warning:" in err and "cannot check" in err, err
    status, _, err = cli("search", world["idx"], "--run", world["other"], "--modality", "text",
                         world["in"] / "text.npy")
    assert status == 2 and "another run" in err


def test_an_approximate_index_that_finds_fewer_than_k_hits_marks_them_missing(world, cli, tmp_path):
    status, _, err = cli("index", world["run"], "--modality", "audio", world["in"] / "audio.npy", "--out",
                         tmp_path / "ivf", "--factory", "IVF8,Flat", "--nprobe", "1")
    assert status == 0, err
    status, _, err = cli("search", tmp_path / "ivf", "--run", world["run"], "--modality", "text",
                         world["in"] / "text.npy", "-k", "256", "--out", tmp_path / "hits")
    assert status == 0, err
    hits = np.load(tmp_path / "hits", allow_pickle=False)  # written to exactly --out (no .npz appended)
    ids, scores = hits["ids"], hits["scores"]
    assert ids.shape == (256, 256) and (ids == -1).any()  # one list of 8 holds far fewer than 256 items
    assert np.isneginf(scores[ids == -1]).all() and np.isfinite(scores[ids >= 0]).all()
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in ids)  # never the last id repeated


def test_sigterm_during_embed_leaves_no_temporary_file(world, tmp_path):
    rows = np.random.default_rng(0).standard_normal((200_000, 16)).astype(np.float32)
    np.save(tmp_path / "many.npy", rows)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, CI="true")
    proc = subprocess.Popen([sys.executable, "-m", "mmcore.cli", "embed", str(world["run"]), "--modality", "text",
                             str(tmp_path / "many.npy"), "--out", str(out / "e.npy"), "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".e.npy.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "embed ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "mmcore: stopped: terminated" in err and "Traceback" not in err, err
    assert list(out.iterdir()) == []


# --- the Python API -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, says", [
    (lambda x: np.where(np.arange(len(x))[:, None] == 3, np.nan, x), "row 3 holds NaN or inf"),
    (lambda x: np.where(np.arange(len(x))[:, None] == 7, -np.inf, x), "row 7 holds NaN or inf"),
    (lambda x: torch.from_numpy(x).clone().index_fill_(0, torch.tensor([9]), float("nan")), "row 9 holds NaN"),
    (lambda x: x.astype(np.complex64), "expected real numbers"),
    (lambda x: np.full(x.shape, "a", dtype="<U1"), "expected real numbers"),
], ids=["nan", "inf", "nan-tensor", "complex", "strings"])
def test_encode_refuses_values_it_cannot_embed(world, make, says):
    model = mmcore.load(world["run"])
    text = np.load(world["in"] / "text.npy")
    with pytest.raises(ValueError, match=says):
        model.encode("text", make(text), batch_size=4)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_encode_refuses_a_batch_size_that_is_not_positive(world, batch_size):
    model = mmcore.load(world["run"])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        model.encode("text", np.load(world["in"] / "text.npy"), batch_size=batch_size)


def test_encode_of_one_vector_for_a_dict_input_asks_for_rows(world, monkeypatch):
    """A dict input of 1-d arrays (one sample, not a batch) once came back as one row per element."""
    model = mmcore.load(world["run"])
    monkeypatch.setitem(model.module.inputs, "text", mmcore.InputSpec(fields={"x": mmcore.InputSpec((16,))}))
    with pytest.raises(ValueError, match=r"text\.x: expected inputs \[rows, 16\].*array\[None\]"):
        model.encode("text", {"x": np.zeros(16, np.float32)})


@pytest.mark.parametrize("inputs, says", [
    ("a dog barking", "got one str; for one item pass"),
    (np.zeros(32, np.float32), "not an array of numbers of shape \\[32\\]"),
])
def test_encode_of_raw_text_refuses_a_lone_string_or_a_vector(world, monkeypatch, inputs, says):
    model = mmcore.load(world["run"])
    monkeypatch.setitem(model.module.inputs, "text", mmcore.InputSpec.raw("text"))
    with pytest.raises(ValueError, match=says):
        model.encode("text", inputs)


def test_load_takes_best_and_last_as_checkpoint_names(world):
    best = mmcore.load(world["run"], checkpoint="best")
    assert best.checkpoint.name.startswith("best-epoch")
    assert mmcore.load(world["run"], checkpoint="last").checkpoint.name == "last.ckpt"
    with pytest.raises(mmcore.RunLoadError, match="has no best"):
        mmcore.load(world["nobest"], checkpoint="best")
