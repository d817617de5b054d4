"""Hostile features directories (issue 14): every bad file is a recipe error naming it (exit 2, nothing written, no
traceback, no hang), and a file that changes or shrinks while a run reads it stops the run with exit 1 naming it,
instead of training on rows decoded with a stale header, or dying of SIGBUS.

Mid-run changes are injected by wrapping ``FeatureSplit.get_batch`` (the one place batches are read): the file is
replaced or truncated just before the k-th batch is read. Cases that would hang or crash the test process on a
reader without these checks run under an alarm, or in a subprocess.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import lightning  # noqa: F401 - imported at collection, see below
import mmcore
import numpy as np
import pytest
from mmcore.testing import cli
from mmcore_features import stream
from mmcore_features.reader import NpyRows

# Lightning gives its logger a StreamHandler bound to the sys.stderr of the moment it is first imported. Imported
# first inside another test's capsys, that stream is closed by the time these tests run the CLI in-process, and
# every Lightning log line then prints "--- Logging error --- Traceback" into the stderr they check.

ROWS = 200


def _write(root: Path, rows: int = ROWS) -> Path:
    """A small valid directory: image [rows, 6] float32, text [rows, 4] float32 present in 70% of rows, labels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, rows)
    shared = np.eye(4)[labels] * 3 + rng.normal(size=(rows, 4))
    for name, width in (("image", 6), ("text", 4)):
        x = shared @ rng.normal(size=(4, width)) + 0.5 * rng.normal(size=(rows, width))
        np.save(root / f"{name}.npy", x.astype(np.float32))
    np.save(root / "text.present.npy", rng.random(rows) < 0.7)
    np.save(root / "labels.npy", labels)
    return root


def _recipe(tmp_path: Path, data: Path, **dataset) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in dataset.items())
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'embed_dim = 8\n[dataset]\nname = "features"\npath = "{data}"\n{extra}'
                      '[encoders.image]\nname = "mlp"\nhidden = [16]\n[encoders.text]\nname = "mlp"\nhidden = [16]\n'
                      '[anchor]\nname = "pairwise"\n'
                      '[trainer]\nmax_epochs = 3\nbatch_size = 32\naccelerator = "cpu"\nlog_every_n_steps = 1\n')
    return recipe


@pytest.fixture
def deadline():
    """Fail (instead of hanging) when the test is still running after 60 s: an open() of a FIFO blocks forever."""
    with mmcore.testing.deadline(60):
        yield


def _labels(d, value, row=5, dtype=np.int64):
    labels = np.load(d / "labels.npy").astype(dtype)
    labels[row] = value
    np.save(d / "labels.npy", labels)


def _replace(path: Path, make) -> None:
    path.unlink()
    make(path)


def _huge_classes(d):
    (d / "classes.json").write_text(json.dumps(["a" * (17 * 2**20)] + ["b"] * 3))


def _beyond_float32(d):
    x = np.load(d / "image.npy").astype(np.float64)
    x[7, 2] = 1e300
    np.save(d / "image.npy", x)


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def _unsigned_ids(d):
    ids = np.arange(ROWS, dtype=np.uint64)
    ids[9] = 2**63 + 9
    np.save(d / "ids.npy", ids)


# (id, change to a valid directory, file named, words in the message)
BAD = [
    ("fifo-features", lambda d: _replace(d / "image.npy", os.mkfifo), "image.npy", "not a regular file (a FIFO (named pipe)"),
    ("fifo-presence", lambda d: _replace(d / "text.present.npy", os.mkfifo), "text.present.npy", "not a regular file"),
    ("fifo-labels", lambda d: _replace(d / "labels.npy", os.mkfifo), "labels.npy", "not a regular file"),
    ("fifo-classes", lambda d: os.mkfifo(d / "classes.json"), "classes.json", "not a regular file"),
    ("dev-zero", lambda d: _replace(d / "image.npy", lambda p: p.symlink_to("/dev/zero")), "image.npy",
     "not a regular file (a character device)"),
    ("zeros-file", lambda d: (d / "image.npy").write_bytes(bytes(4096)), "image.npy", "not a .npy array file"),
    ("empty-file", lambda d: (d / "image.npy").write_bytes(b""), "image.npy", "not a .npy array file"),
    ("truncated", lambda d: _truncate(d / "image.npy", 500), "image.npy", "truncated: its header promises float32"),
    ("directory", lambda d: _replace(d / "image.npy", Path.mkdir), "image.npy", "not a regular file (a directory)"),
    ("directory-classes", lambda d: (d / "classes.json").mkdir(), "classes.json", "not a regular file (a directory)"),
    ("symlink-loop", lambda d: _replace(d / "image.npy", lambda p: p.symlink_to(p.name)), "image.npy",
     "cannot be read: Too many levels of symbolic links"),
    ("symlink-loop-classes", lambda d: (d / "classes.json").symlink_to("classes.json"), "classes.json",
     "cannot be read"),
    ("dangling-presence", lambda d: _replace(d / "text.present.npy", lambda p: p.symlink_to("nowhere.npy")),
     "text.present.npy", "cannot be read: No such file"),
    ("label-1e9", lambda d: _labels(d, 10**9), "labels.npy", "label 1000000000 (row 5) is too large"),
    ("label-2^63", lambda d: _labels(d, 2**63 + 5, dtype=np.uint64), "labels.npy", "(row 5) is too large"),
    ("label-negative", lambda d: _labels(d, -3, row=8), "labels.npy", "labels must be >= 0, found -3 at row 8"),
    ("label-without-name", lambda d: (_labels(d, 9, row=11), (d / "classes.json").write_text('["a","b","c","d"]')),
     "labels.npy", "label 9 has no name (row 11)"),
    ("classes-too-large", _huge_classes, "classes.json", "is too large for such a file (at most 16,777,216)"),
    ("classes-nested", lambda d: (d / "classes.json").write_text("[" * 100000 + "]" * 100000), "classes.json",
     "nested too deeply"),
    ("classes-not-utf8", lambda d: (d / "classes.json").write_bytes(b'["\xff", "b", "c", "d"]'), "classes.json",
     "not UTF-8 text"),
    ("beyond-float32", _beyond_float32, "image.npy", "row 7 is present but holds NaN, infinite or out-of-float32"),
    ("ids-beyond-int64", _unsigned_ids, "ids.npy", "id 9223372036854775817 at row 9 does not fit in int64"),
]


@pytest.mark.parametrize("change, file, words", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_file_is_a_recipe_error_naming_it_and_nothing_is_written(tmp_path, deadline, change, file, words):
    data = _write(tmp_path / "d")
    change(data)
    out = tmp_path / "run"
    status, _, err = cli("run", _recipe(tmp_path, data), "--out", out)
    assert status == 2, err
    assert f"{data / file}: " in err and words in err, err
    assert err.startswith("mmcore: error:") and "Traceback" not in err
    assert not out.exists()
    status, _, err = cli("validate", _recipe(tmp_path, data))
    assert status == 2 and words in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode, so chmod 000 stops nothing")
def test_an_unreadable_file_is_named(tmp_path):
    data = _write(tmp_path / "d")
    (data / "labels.npy").chmod(0)
    status, _, err = cli("run", _recipe(tmp_path, data), "--out", tmp_path / "run")
    assert status == 2 and f"{data / 'labels.npy'}: cannot be read: Permission denied" in err, err
    assert not (tmp_path / "run").exists()


def _inject(monkeypatch, at: int, fault) -> None:
    """Run ``fault()`` just before the ``at``-th batch is read (1: the build's probe; then sanity val, training)."""
    original, calls = stream.FeatureSplit.get_batch, []

    def get_batch(self, indices):
        calls.append(1)
        if len(calls) == at:
            fault()
        return original(self, indices)

    monkeypatch.setattr(stream.FeatureSplit, "get_batch", get_batch)


def _stopped(status: int, err: str, path: Path, run: Path, words: str) -> None:
    assert status == 1, err
    assert f"mmcore: stopped: bad input data: {path}: {words}" in err, err
    assert f"resume with: mmcore run --resume {run}" in err and "Traceback" not in err
    assert (run / "checkpoints").is_dir()


def test_a_feature_file_replaced_during_training_stops_the_run_naming_it(tmp_path, monkeypatch):
    # an atomic os.replace by a float64 copy of the same data, after the first epoch (160 training rows: 5 batches)
    data = _write(tmp_path / "d")
    image = data / "image.npy"

    def replace():
        np.save(tmp_path / "new.npy", np.load(image).astype(np.float64))
        os.replace(tmp_path / "new.npy", image)

    _inject(monkeypatch, 1 + 1 + 5 + 1 + 1, replace)  # probe, sanity val, epoch 0 (5), val; then epoch 1
    run = tmp_path / "run"
    status, _, err = cli("run", _recipe(tmp_path, data), "--out", run)
    _stopped(status, err, image, run, "changed while the run was reading it: replaced by another file")
    assert f"header float32 ({ROWS}, 6) -> float64 ({ROWS}, 6)" in err
    assert not (run / "metrics.json").exists()


def test_a_nan_met_in_training_stops_the_run_naming_the_file_and_row(tmp_path):
    # without the build-time scan the batch that reads the row says it; the row is not among the probe's rows
    data = _write(tmp_path / "d")
    x = np.load(data / "image.npy")
    split = np.zeros(ROWS, dtype=np.int8)
    split[-40:-20], split[-20:] = 1, 2
    x[150, 1] = np.nan
    np.save(data / "image.npy", x)
    np.save(data / "split.npy", split)
    run = tmp_path / "run"
    status, _, err = cli("run", _recipe(tmp_path, data, check_values=False), "--out", run)
    _stopped(status, err, data / "image.npy", run, "row 150 is present but holds NaN")


SHRINK = """
import os, sys
from mmcore_features import stream
path, calls = sys.argv[1], []
original = stream.FeatureSplit.get_batch
def get_batch(self, indices):
    calls.append(1)
    if len(calls) == 4:
        os.truncate(path, 128)  # in place: the header stays, the rows are gone
    return original(self, indices)
stream.FeatureSplit.get_batch = get_batch
from mmcore.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_presence_file_that_shrinks_during_training_stops_the_run_instead_of_sigbus(tmp_path):
    # 6000 rows: the presence map spans two pages, so a read past the new end faults (SIGBUS) without the check
    data = _write(tmp_path / "d", rows=6000)
    presence = data / "text.present.npy"
    run = tmp_path / "run"
    env = {**os.environ, "CI": "true"}
    env.pop("MMCORE_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-c", SHRINK, str(presence), "run", str(_recipe(tmp_path, data)),
                           "--set", "trainer.batch_size=512", "--set", "trainer.max_epochs=1", "--out", str(run)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != -signal.SIGBUS, "killed by SIGBUS"
    _stopped(proc.returncode, proc.stderr, presence, run,
             "changed while the run was reading it: size 6128 -> 128 bytes (it shrank)")


MMAP_SHRINK = """
import os, sys
import mmcore
from mmcore_features.reader import NpyRows
reader = NpyRows(sys.argv[1], "mmap")
reader.read([0, 1])  # mapped
os.truncate(sys.argv[1], 128)
try:
    reader.read([0, 5000])
except mmcore.DataError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_memory_mapped_feature_file_that_shrinks_is_a_data_error_not_sigbus(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((6000, 8), np.float32))
    proc = subprocess.run([sys.executable, "-c", MMAP_SHRINK, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert f"{path}: changed while the run was reading it: size 192128 -> 128 bytes (it shrank)" in proc.stdout


def test_a_reader_reopened_after_a_replacement_refuses_the_new_file(tmp_path):
    # a DataLoader worker started by spawn gets the reader pickled, and reopens the file
    path = tmp_path / "x.npy"
    np.save(path, np.arange(40, dtype=np.float32).reshape(10, 4))
    reader = NpyRows(path)
    np.save(tmp_path / "y.npy", np.arange(40, dtype=np.float64).reshape(10, 4))
    os.replace(tmp_path / "y.npy", path)
    worker = pickle.loads(pickle.dumps(reader))
    with pytest.raises(mmcore.DataError, match=r"x\.npy: changed while the run was reading it: replaced by another "
                                               r"file, size 288 -> 448 bytes.*header float32 \(10, 4\) -> float64"):
        worker.read([0, 1])


@pytest.mark.parametrize("io", ["pread", "mmap"])
def test_a_file_rewritten_in_place_or_removed_is_a_data_error(tmp_path, io):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((10, 4), np.float32))
    reader = NpyRows(path, io)
    assert reader.read([0, 9]).shape == (2, 4)
    _truncate(path, 200)  # same inode, fewer bytes: pread would read short, a map would fault
    with pytest.raises(mmcore.DataError, match=r"x\.npy: changed while the run was reading it: size 288 -> 200"):
        reader.read([9])
    path.unlink()
    with pytest.raises(mmcore.DataError, match=r"x\.npy: removed or unreadable while the run was reading it"):
        reader.read([0])


def test_a_fifo_swapped_in_after_the_build_is_refused_without_blocking(tmp_path, deadline):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((10, 4), np.float32))
    reader = NpyRows(path)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(mmcore.DataError, match=r"x\.npy: "):
        pickle.loads(pickle.dumps(reader)).read([0])

