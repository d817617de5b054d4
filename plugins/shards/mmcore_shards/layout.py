"""The shards directory: what ``mmcore shard`` writes and the ``shards`` dataset reads.

::

    shards/
      mmcore-shards.json     the dataset's description (below); written last, so a directory without it is incomplete
      train/ val/ test/      one litdata dataset per split: index.json and chunk-*.bin (the shards)

``mmcore-shards.json``: ``format`` (``"mmcore-shards"``), ``version`` (1), ``inputs`` (modality ->
``InputSpec.to_dict()``), ``observed_pairs`` (``[[a, b], ...]``), ``class_names``, ``prompts``, ``source`` (the
recipe and dataset it was written from) and ``splits``: split -> ``{"samples": n, "shards": {file: {"bytes": b,
"samples": k, "sha256": hex}}}``. Each stored sample is ``{"id": int, "meta": str, "tensors": bytes}``
(safetensors and JSON, no code in the file): see :mod:`mmcore_shards.codec`.

Standard library only (the dataset's recipe check imports this module).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "mmcore-shards.json"
FORMAT, VERSION = "mmcore-shards", 1
SPLITS = ("train", "val", "test")


class ShardsError(Exception):
    """A shards directory that cannot be read as one; the message names the file."""


def read_description(path: str | Path) -> dict:
    """The checked ``mmcore-shards.json`` of directory ``path``."""
    path = Path(path)
    file = path / MANIFEST
    if not path.is_dir():
        raise ShardsError(f"{path}: no such directory" if not path.exists() else f"{path}: not a directory")
    if not file.is_file():
        raise ShardsError(f"{file}: missing: not a shards directory written by `mmcore shard`, or its writing did "
                          "not finish")
    try:
        description = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardsError(f"{file}: cannot be read as JSON ({exc})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ShardsError(f"{file}: not an mmcore shards description (no \"format\": \"{FORMAT}\")")
    if description.get("version") != VERSION:
        raise ShardsError(f"{file}: version {description.get('version')!r}; this mmcore-shards reads version "
                          f"{VERSION}")
    for key in ("inputs", "splits"):
        if not isinstance(description.get(key), dict):
            raise ShardsError(f"{file}: {key!r} is missing or not a table")
    for split in SPLITS:
        entry = description["splits"].get(split)
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), dict) or not entry.get("samples"):
            raise ShardsError(f"{file}: split {split!r} is missing or has no samples")
    return description


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_problems(directory: Path, shards: dict, checksums: bool) -> dict:
    """The bad shards of one split's directory -> ``{file: reason}``: missing, not a regular file, a size other
    than the one written (truncated or extended), or (``checksums``) a SHA-256 other than the one written."""
    problems = {}
    for name, expected in shards.items():
        file = directory / name
        if not file.is_file():
            problems[name] = "missing" if not file.exists() else "not a regular file"
            continue
        size = file.stat().st_size
        if size != expected["bytes"]:
            problems[name] = f"{size} bytes, {expected['bytes']} written (truncated or changed)"
        elif checksums and sha256_of(file) != expected["sha256"]:
            problems[name] = "its SHA-256 differs from the one written (corrupt)"
    return problems
