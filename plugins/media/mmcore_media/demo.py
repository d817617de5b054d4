"""A small real raw-media set, built offline from what packages ship: ``mmcore media-demo OUT``.

- images: scikit-learn's ``load_digits`` scans (``pip install "mmcore-media[demo]"``) (8 x 8, 16 grey levels) written as PNG files, dark ink on white,
  upscaled to ``image_size`` (bicubic) and stored as RGB;
- audio: the digit's word ("seven") spoken by Debian's ``espeak-ng`` (``apt-get install espeak-ng``), each clip
  with its own voice, variant, speed and pitch (22.05 kHz mono 16-bit WAV);
- text: a caption ("a handwritten digit seven", several phrasings).

``OUT/manifest.csv`` has the columns ``image, audio, text, label, split`` (labels ``"zero"`` .. ``"nine"``) for
the ``manifest`` dataset. Per class, ``per_class`` scans: ``round(0.2 * per_class)`` (at least 1) are test rows
with all three modalities, ``round(0.1 * per_class)`` (at least 1) val rows, the rest train rows. Train and val
rows pair as in ImageBind: image+text or image+audio, alternating, never text+audio, so text <-> audio is
emergent; the test rows measure it. Everything (which scans, voices, captions, splits) follows ``seed``; the
files are byte-identical for the same settings and package versions.

``OUT/manifest_text_anchor.csv`` pairs the same files as LanguageBind does, text being the anchor: train and val
rows are image+text or audio+text, never image+audio (the test rows are the same).

``OUT/.mmcore-media-demo`` marks a demo set, so ``--overwrite`` replaces one and never a folder of other files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ESPEAK_INSTALL = "apt-get install espeak-ng"
MARKER = ".mmcore-media-demo"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTIONS = (
    "a handwritten digit {}",
    "a scan of the handwritten number {}",
    "the digit {} written by hand",
    "a small grey picture of a handwritten {}",
    "the number {}, handwritten",
)
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd", "en-gb-x-gbclan")
VARIANTS = ("", "+m1", "+m3", "+m5", "+f1", "+f2", "+f4", "+klatt")
SPEEDS = (130, 200)  # words per minute, drawn uniformly
PITCHES = (25, 75)  # espeak-ng's 0..99
TEXT_ANCHOR_MANIFEST = "manifest_text_anchor.csv"
"""The same files paired as LanguageBind does: image+text or audio+text (never image+audio) in train and val."""
PROMPTS = ("a handwritten digit {}", "a photo of the number {}", "the spoken word {}")
"""Zero-shot templates suited to this set (for a recipe's ``prompts``)."""


class DemoError(Exception):
    """The demo set cannot be built (no espeak-ng, an output folder that holds other files, bad settings)."""


def _espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise DemoError(f"the demo's audio is spoken by espeak-ng, which is not installed: {ESPEAK_INSTALL}")
    return found


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DemoError(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DemoError(f"{out} is not empty and is not a demo set; choose a new or empty folder")
        if not overwrite:
            raise DemoError(f"{out} holds a demo set already; pass --overwrite to replace it")
        for name in ("images", "audio"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("manifest.csv", MARKER):
            (out / name).unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(exist_ok=True)


def plan(per_class: int, seed: int, labels) -> list:
    """The rows, without files: dicts ``{scan, label, index, split, image, audio, text, voice}`` in class order.

    ``labels``: the class of every scan of ``load_digits`` ``[1797]``. ``voice``: espeak-ng's ``(voice, speed,
    pitch)`` for rows with audio, else None."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_test, n_val = max(1, round(per_class * 0.2)), max(1, round(per_class * 0.1))
    rows = []
    for c, word in enumerate(WORDS):
        scans = np.flatnonzero(labels == c)
        if per_class > len(scans):
            raise DemoError(f"per_class = {per_class}: class {word!r} has only {len(scans)} scans")
        chosen = np.sort(rng.choice(scans, per_class, replace=False))
        order = rng.permutation(per_class)  # which scans go to test, val, train
        split = np.empty(per_class, dtype=object)
        split[order[:n_test]], split[order[n_test:n_test + n_val]], split[order[n_test + n_val:]] = \
            "test", "val", "train"
        paired = 0  # round-robin image+text / image+audio within the class's train and val rows
        for k, scan in enumerate(chosen.tolist()):
            name = f"{word}_{k:03d}"
            if split[k] == "test":
                with_text = with_audio = True
            else:
                with_text, with_audio = paired % 2 == 0, paired % 2 == 1
                paired += 1
            caption = CAPTIONS[int(rng.integers(len(CAPTIONS)))].format(word)
            voice = (VOICES[int(rng.integers(len(VOICES)))] + VARIANTS[int(rng.integers(len(VARIANTS)))],
                     int(rng.integers(SPEEDS[0], SPEEDS[1] + 1)), int(rng.integers(PITCHES[0], PITCHES[1] + 1)))
            rows.append({"scan": scan, "label": word, "index": k, "split": str(split[k]),
                         "image": f"images/{name}.png", "audio": f"audio/{name}.wav" if with_audio else "",
                         "text": caption if with_text else "", "voice": voice if with_audio else None,
                         "caption": caption})
    return rows


def text_anchor_row(row: dict) -> list:
    """The row as LanguageBind pairs it (text is the anchor): a train/val row with audio holds audio+text and no
    image; image+text and the all-three test rows are unchanged. Columns ``image, audio, text, label, split``."""
    if row["split"] != "test" and row["audio"]:
        return ["", row["audio"], row["caption"], row["label"], row["split"]]
    return [row["image"], row["audio"], row["text"], row["label"], row["split"]]


def write_scan(pixels, path: Path, size: int) -> None:
    """One ``[8, 8]`` scan (0..16, ink high) -> an RGB PNG ``[size, size]``, dark ink on white."""
    import numpy as np
    from PIL import Image

    grey = (255 - np.asarray(pixels, dtype=np.float64) * (255 / 16)).round().astype(np.uint8)
    Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC).convert("RGB").save(path)


def speak(jobs: list, workers: int) -> None:
    """Run espeak-ng for every ``(word, (voice, speed, pitch), path)``, ``workers`` processes at a time."""
    import subprocess

    espeak = _espeak()
    running = []

    def finish(proc, path):
        _, err = proc.communicate()
        if proc.returncode != 0 or not path.is_file():
            raise DemoError(f"espeak-ng failed on {path} (exit {proc.returncode}): {err.decode(errors='replace')}")

    for word, (voice, speed, pitch), path in jobs:
        if len(running) >= workers:
            finish(*running.pop(0))
        proc = subprocess.Popen([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        running.append((proc, path))
    for proc, path in running:
        finish(proc, path)


SKLEARN_INSTALL = 'pip install "mmcore-media[demo]"'
"""The extra that brings scikit-learn, whose ``load_digits`` scans are the demo's images."""
MAX_SEED = 2**32 - 1
MAX_IMAGE_SIZE = 1024


def check_settings(per_class, seed, image_size) -> None:
    """:class:`DemoError` unless ``per_class`` is 3..174 (the scans of the rarest digit), ``seed`` 0..2^32-1 and
    ``image_size`` 8..1024 pixels (all integers). Checked before anything is imported or written."""
    for name, value, low, high in (("per_class", per_class, 3, 174), ("seed", seed, 0, MAX_SEED),
                                   ("image_size", image_size, 8, MAX_IMAGE_SIZE)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            note = " (the scans of the rarest digit)" if name == "per_class" else ""
            raise DemoError(f"{name.replace('_', '-')} must be an integer from {low} to {high}{note}, got {value!r}")


def _load_digits():
    """scikit-learn's digit scans, or :class:`DemoError` with the pip line when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DemoError(f"media-demo needs scikit-learn (its digit scans are the images): {SKLEARN_INSTALL}") from None
    return load_digits()


def build_demo(out_dir, per_class: int = 20, seed: int = 0, image_size: int = 32, overwrite: bool = False,
               workers: int = 4) -> Path:
    """Write the demo set into ``out_dir`` (new or empty, or a previous demo set with ``overwrite``); returns
    the path of its ``manifest.csv``. ``per_class``: scans per digit (3 to 174); ``image_size``: PNG side (8 to
    1024). Settings, scikit-learn and espeak-ng are checked before anything is written."""
    import csv

    check_settings(per_class, seed, image_size)
    digits = _load_digits()
    _espeak()
    out = Path(out_dir)
    _prepare(out, overwrite)
    rows = plan(per_class, seed, digits.target)
    for row in rows:
        write_scan(digits.images[row["scan"]], out / row["image"], image_size)
    speak([(row["label"], row["voice"], out / row["audio"]) for row in rows if row["voice"]], workers)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "audio", "text", "label", "split"])
        writer.writerows([row["image"], row["audio"], row["text"], row["label"], row["split"]] for row in rows)
    with open(out / TEXT_ANCHOR_MANIFEST, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "audio", "text", "label", "split"])
        writer.writerows(text_anchor_row(row) for row in rows)
    (out / MARKER).write_text(json.dumps({"per_class": per_class, "seed": seed, "image_size": image_size,
                                          "rows": len(rows)}) + "\n")
    return manifest


def _command(args) -> int:
    import sys
    import time

    start = time.perf_counter()
    try:
        manifest = build_demo(args.out, per_class=args.per_class, seed=args.seed, image_size=args.image_size,
                              overwrite=args.overwrite)
    except DemoError as exc:
        print(f"mmcore: error: {exc}", file=sys.stderr)
        return 2
    with open(manifest) as file:
        rows = sum(1 for _ in file) - 1
    print(f"wrote {manifest} ({rows} rows: {args.per_class} scans per digit; image+text or image+audio in train "
          f"and val, all three in test) in {time.perf_counter() - start:.1f} s")
    return 0


def add_commands(subparsers) -> None:
    """``mmcore media-demo OUT [--per-class N] [--seed S] [--image-size PX] [--overwrite]`` (the
    ``mmcore_commands`` hook's body)."""
    parser = subparsers.add_parser("media-demo", help="build the small real image/audio/text demo set offline "
                                                      "(digit scans, espeak-ng speech, captions) with its manifest")
    parser.add_argument("out", metavar="OUT", help="a new or empty folder (or a previous demo set, with --overwrite)")
    parser.add_argument("--per-class", type=int, default=20, help="scans per digit, 3 to 174 (default 20: 200 rows)")
    parser.add_argument("--seed", type=int, default=0,
                        help="which scans, voices, captions and splits, 0 to 2^32-1 (default 0)")
    parser.add_argument("--image-size", type=int, default=32, help="PNG side in pixels, 8 to 1024 (default 32)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous demo set in OUT")
    parser.set_defaults(func=_command)
