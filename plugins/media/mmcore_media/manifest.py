"""Dataset ``manifest``: image, audio and text files listed in a CSV, JSONL or Parquet table, one row per sample.

Recipe::

    [dataset]
    name = "manifest"
    path = "data/manifest.csv"                 # .csv, .jsonl (.ndjson) or .parquet (pyarrow)
    modalities = { image = "image", audio = "audio", text = "text" }   # modality -> kind
    prompts = ["a photo of a {}"]              # zero-shot templates, one {} for the class name

A modality's column is named like the modality (``columns = { audio = "clip" }`` renames it). Its cells are:
image and audio, a file path relative to the manifest's folder (or absolute); text, the text itself. An empty
cell (or a JSON ``null``, a Parquet null) means the modality is absent from that sample: sparse pairing.
``observed_pairs`` are the pairs of modalities present together in some training row.

Only the modalities the recipe has encoders for are read (a modality named like a kind -- ``image``, ``audio``,
``text`` -- needs no ``modalities`` entry). ``label`` names the label column (class names or integers; no such
column: no labels), ``class_names`` fixes the class order (else the sorted names, or ``"0".."K-1"`` for integer
labels). ``split`` names a column of ``train``/``val``/``test``; without one, a stratified split by class with
``val_fraction`` and ``test_fraction``, seeded by the recipe's ``seed``.

Bad media never crash anonymously: every problem names the manifest, its row (CSV and Parquet: the 1-based data
row; JSONL: the line) and the file. At build time (so ``mmcore validate`` reports them, before any training)
every referenced file must exist (a ``ConfigError`` on ``path`` listing the first missing files and their
count), and a text cell holding only whitespace is an empty text. Files are decoded in ``__getitem__``, in the
DataLoader workers (:mod:`mmcore_media.decode`). ``on_bad_media = "error"`` (default) makes an undecodable file
or an empty text an error naming both; ``"skip"`` marks that cell absent, logs a warning, and every item then
carries ``"skipped"``: the number of its cells dropped (0 for most), which the core sums into
``train/skipped_samples``. A missing file is an error either way.

Items: ``{"inputs": {m: PIL RGB image | (waveform [channels, samples] float32, rate) | str | None},
"present": {m: bool}, "id": manifest row number, "label": class index (only with labels), "skipped"?: int}``.
"""

from __future__ import annotations

from typing import Literal

import attrs

import mmcore

MediaKind = Literal["image", "audio", "text"]
KINDS = ("image", "audio", "text")


def _fraction(instance, attribute, value):
    if not 0.0 < value < 1.0:
        raise ValueError(f"'{attribute.name}' must be between 0 and 1 (exclusive), got {value}")


@attrs.frozen
class ManifestConfig:
    """``path``: the manifest (CSV, JSONL or Parquet, by extension); ``modalities``: modality -> kind (``image``,
    ``audio``, ``text``), needed only for modalities not named like their kind; ``columns``: modality -> column
    (default: the modality's name); ``label``: the label column (``""``: none); ``class_names``: the class order;
    ``split``: the split column (``""``: none; values ``train``/``val``/``test``); ``val_fraction``,
    ``test_fraction``: of each class, for the seeded split used without a split column; ``prompts``: zero-shot
    prompt templates with one ``{}``; ``on_bad_media``: ``"error"`` or ``"skip"`` an undecodable cell."""

    path: str
    modalities: dict[str, MediaKind] = attrs.field(factory=dict)
    columns: dict[str, str] = attrs.field(factory=dict)
    label: str = "label"
    class_names: list[str] = attrs.field(factory=list)
    split: str = "split"
    val_fraction: float = attrs.field(default=0.1, validator=_fraction)
    test_fraction: float = attrs.field(default=0.2, validator=_fraction)
    prompts: list[str] = attrs.field(factory=list)
    on_bad_media: Literal["error", "skip"] = "error"


def check_prompts(prompts) -> tuple:
    """The templates, each with exactly one ``{}`` (ConfigError on ``prompts[i]`` otherwise)."""
    for index, template in enumerate(prompts):
        ok = isinstance(template, str) and template.count("{}") == 1
        if ok:
            try:
                template.format("x")
            except (IndexError, KeyError, ValueError):
                ok = False
        if not ok:
            raise mmcore.ConfigError(f"prompts[{index}]", f"a prompt template needs exactly one {{}} for the class "
                                                          f"name (and no other braces), got {template!r}")
    return tuple(prompts)


def modality_kinds(config: ManifestConfig, wanted, header) -> dict:
    """modality -> kind for the modalities used: the recipe's (``wanted``), else every declared one, else every
    column named like a kind."""
    declared = dict(config.modalities)
    names = list(wanted) or list(declared) or [column for column in header if column in KINDS]
    if not names:
        raise mmcore.ConfigError("modalities", "name the modalities and their kinds, e.g. modalities = "
                                               "{ image = \"image\", text = \"text\" }")
    kinds = {}
    for m in names:
        kind = declared.get(m) or (m if m in KINDS else None)
        if kind is None:
            raise mmcore.ConfigError("modalities", f"the recipe has an encoder for {m!r}, but modalities does not "
                                                   f"say its kind: add {m} = \"image\" | \"audio\" | \"text\"")
        if kind not in KINDS:
            raise mmcore.ConfigError(f"modalities.{m}", f"expected \"image\", \"audio\" or \"text\", got {kind!r}")
        kinds[m] = kind
    unknown = [m for m in config.columns if m not in declared and m not in kinds]
    if unknown:
        raise mmcore.ConfigError("columns", f"{unknown[0]!r} is not a modality; modalities: {', '.join(kinds)}")
    return kinds


def build_manifest(config: ManifestConfig, context=None):
    from ._manifest_data import ManifestSplit, read_manifest

    context = context or mmcore.DatasetContext()
    prompts = check_prompts(config.prompts)
    table = read_manifest(config, tuple(context.modalities), modality_kinds)
    if prompts and table.labels is None:
        raise mmcore.ConfigError("prompts", f"zero-shot prompts need class labels, and {table.source} has no "
                                            f"{config.label or 'label'!r} column")
    rows = table.split_rows(config.val_fraction, config.test_fraction, context.seed)
    groups = {frozenset(m for m in table.kinds if table.cells[m][r] is not None) for r in rows["train"]}
    for m in table.kinds:
        if not any(m in group for group in groups):
            raise mmcore.ConfigError("path", f"{table.source}: no training row has modality {m!r} "
                                             f"(column {table.columns[m]!r})")
    splits = {name: ManifestSplit(table, indices, config.on_bad_media) for name, indices in rows.items()}
    return mmcore.DatasetSplits(
        train=splits["train"], val=splits["val"], test=splits["test"],
        inputs={m: mmcore.InputSpec.raw(kind) for m, kind in table.kinds.items()},
        observed_pairs=mmcore.observed_pairs([sorted(group) for group in groups]),
        class_names=table.class_names,
        prompts=prompts,
    )


DATASETS = [mmcore.Component("manifest", ManifestConfig, build_manifest,
                             "image, audio and text files listed in a CSV, JSONL or Parquet manifest (sparse pairing)")]
