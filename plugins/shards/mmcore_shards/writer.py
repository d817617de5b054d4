"""Write a built dataset's splits as shards (:mod:`mmcore_shards.layout`), through litdata's ``BinaryWriter``."""

from __future__ import annotations

import json
from pathlib import Path

from .codec import encode_item
from .layout import FORMAT, MANIFEST, SPLITS, VERSION, sha256_of


def media_kinds(inputs: dict) -> dict:
    """modality -> media kind, for the raw-media modalities of ``DatasetSplits.inputs``."""
    return {m: spec.media for m, spec in inputs.items() if spec.media}


def write_split(split, directory: Path, media: dict, chunk_bytes: str, progress=None) -> dict:
    """Write every item of ``split`` (a map-style dataset, read in order) into ``directory`` (which must exist, empty).
    Returns the split's entry of the description: ``{"samples": n, "shards": {file: {"bytes", "samples", "sha256"}}}``.
    """
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(directory), chunk_bytes=chunk_bytes)
    for index in range(len(split)):
        item = split[index]
        writer[index] = encode_item(item, media)
        if progress is not None:
            progress(index + 1)
    writer.done()
    writer.merge(1)
    index = json.loads((directory / "index.json").read_text())
    shards = {chunk["filename"]: {"bytes": (directory / chunk["filename"]).stat().st_size,
                                  "samples": int(chunk["chunk_size"]),
                                  "sha256": sha256_of(directory / chunk["filename"])}
              for chunk in index["chunks"]}
    return {"samples": len(split), "shards": shards}


def describe(splits, entries: dict, source: dict) -> dict:
    """The ``mmcore-shards.json`` of a written dataset (``splits``: its ``DatasetSplits``)."""
    return {
        "format": FORMAT, "version": VERSION,
        "inputs": {m: spec.to_dict() for m, spec in splits.inputs.items()},
        "observed_pairs": sorted(sorted(pair) for pair in splits.observed_pairs),
        "class_names": list(splits.class_names),
        "prompts": list(splits.prompts),
        "source": source,
        "splits": entries,
    }


def write_shards(splits, out: Path, chunk_bytes: str, source: dict, progress=None) -> dict:
    """Write all three splits into the empty directory ``out``, the description last; returns it."""
    media = media_kinds(splits.inputs)
    entries = {}
    for name in SPLITS:
        (out / name).mkdir()
        report = (lambda done, name=name: progress(name, done)) if progress else None
        entries[name] = write_split(getattr(splits, name), out / name, media, chunk_bytes, report)
    description = describe(splits, entries, source)
    (out / MANIFEST).write_text(json.dumps(description, indent=1) + "\n")
    return description
