"""Built-in dataset ``mixture``: a union of datasets (e.g. pair datasets of their own sizes) with sampling weights.

Each ``[[dataset.sources]]`` table is a dataset section of its own (``name`` and that dataset's settings, structured
and checked like ``[dataset]``, problems named ``dataset.sources[i].<key>``) plus the mixture's keys:

``tag``       the source's name in the logs (``train/samples/<tag>``); default its dataset's ``name``; unique
``weight``    its share of each training epoch (shares are ``weight / sum of weights``; default 1), or
``upsample``  open_clip's factor: the source contributes ``upsample * its train size`` rows an epoch (one kind of
              the two in one recipe)

Modalities are the union of the sources'; a modality two sources share must have the same :class:`InputSpec`. A
source's rows are absent (``present`` false, zero inputs, ``None`` for raw media) in the modalities it lacks, and
keep their own presence in the others. Observed pairs are the union. Labels and class names are kept when every
source names the same classes, else the mixture has neither (label-based evaluators then report nothing).

The training split holds every source's train rows once, source after source; a training epoch is
``epoch_size`` of them (default: the sum of the sources' train sizes; with ``upsample``, the sum of
``round(upsample * size)``), given by the split's ``epoch_rows(epoch)``, which the core's sampler shuffles by
(seed, epoch). Source ``k`` contributes ``count_k`` rows to each epoch: ``floor(share_k * epoch_size)``, plus one
for the largest remainders (ties to the earlier source) so the counts sum to ``epoch_size`` (``round(upsample_k *
size_k)`` with upsample factors and no ``epoch_size``): whole passes over its train split, then a subsample without
repeats for the remainder, drawn anew for each epoch from ``(seed, epoch)`` (a source drawn below its size shows
other rows in the next epoch; a resumed run draws the same). val and test are the union of the sources' val and test
splits, each row once. Prompts (zero-shot templates) are kept when every source has the same ones.

Items and batches carry ``"source"`` (``[B]`` long, index into ``DatasetSplits.source_names``). Ids are
``source_id * K + k`` for ``K`` sources: unique across sources (evaluation dedupes by id), without reading any
source's ids. When every source split offers ``get_batch`` and every input is a fixed-shape tensor, so does the
mixture: sources that are all :class:`mmcore.TensorSplit` are merged into one (a batch is one gather per tensor,
as for a single TensorSplit; the sources' tensors are copied once), others are read with one ``get_batch`` per
source present in the batch, scattered into the batch's tensors.

A source sees a :class:`DatasetContext` with the recipe's seed and no modality list (each source declares its own
modalities: a ``manifest`` source names them in ``modalities``). A mixture cannot be a source of a mixture.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import attrs

from ..contracts import Component, ConfigError, DataError, DatasetContext
from ..hookspecs import hookimpl

PATH = "dataset"
"""Where a mixture's section is in a recipe (datasets are only ever the ``[dataset]`` section)."""
KEYS = {"weight": ((int, float, type(None)), None), "upsample": ((int, float, type(None)), None)}
"""The mixture's own numeric keys of a source table (``tag`` is checked apart: it is a string)."""
TAG = re.compile(r"^[A-Za-z0-9_.-]+$")


# ------------------------------------------------------------------------------------------ the recipe section


@attrs.frozen
class Source:
    """One structured source: its dataset ``name`` and structured ``config``, its ``tag`` and its ``weight`` (with
    ``upsample`` true: an upsampling factor)."""

    name: str
    config: Any
    tag: str
    weight: float
    upsample: bool


def parse_sources(raw, registry=None) -> list:
    """``[[dataset.sources]]`` tables -> a list of :class:`Source`, or RecipeError naming every problem at its
    path (``dataset.sources[1].views``)."""
    from ..recipe import RecipeError
    from ..recipe.structure import _Structurer, toml_keys
    from ..registry import UnknownComponentError, get_registry

    here = f"{PATH}.sources"
    if not isinstance(raw, (list, tuple)) or not all(isinstance(s, dict) for s in raw):
        got = type(raw).__name__ if not isinstance(raw, (list, tuple)) else "an array holding a non-table"
        raise RecipeError([f"{here}: expected an array of tables ([[{here}]] each with a dataset `name`), got {got}"])
    if not raw:
        raise RecipeError([f"{here}: give at least one source ([[{here}]] with a dataset `name`)"])
    structurer = _Structurer(registry or get_registry())
    sources, positions, kinds = [], [], {}
    for index, table in enumerate(raw):
        path = f"{here}[{index}]"
        table = dict(table)
        tag = table.get("tag")
        if tag is not None and (not isinstance(tag, str) or not TAG.match(tag)):
            structurer.problems.append(f"{path}.tag: expected a name of letters, digits, '_', '-' and '.', "
                                       f"got {tag!r}")
            table.pop("tag")
        name = table.get("name")
        if name == "mixture":
            structurer.problems.append(f"{path}.name: a mixture cannot be a source of a mixture; list its sources here")
            continue
        try:
            component = structurer.registry.get("datasets", name) if isinstance(name, str) else None
        except UnknownComponentError:
            component = None  # reported by the structurer below
        clash = sorted(({"tag"} | set(KEYS)) & set(toml_keys(component.config).values())) if component else []
        if clash:
            structurer.problems.append(f"{path}: the dataset {name!r} has a setting named {clash[0]!r}, which in a "
                                       "mixture source is the mixture's own; it cannot be a source")
            continue
        made = structurer.component(table, "datasets", path, {**KEYS, "tag": ((str, type(None)), None)})
        if made is None:
            continue
        values = made[2]
        given = [k for k in KEYS if values[k] is not None]
        if len(given) == 2:
            structurer.problems.append(f"{path}.upsample: give weight or upsample, not both")
            continue
        kind = given[0] if given else "weight"
        value = values[kind] if given else 1.0
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (math.isfinite(value) and value > 0):
            structurer.problems.append(f"{path}.{kind}: must be a finite number > 0, got {value}")
        if given:
            kinds.setdefault(kind, index)
        sources.append(Source(made[0], made[1], values["tag"] or made[0], float(value), kind == "upsample"))
        positions.append(index)
    if len(kinds) == 2:
        first, second = sorted(kinds.values())
        structurer.problems.append(
            f"{here}[{second}]: mixes weight and upsample with {here}[{first}]; give every source a weight (its "
            "share of each epoch) or every source an upsample factor (its size times the factor), not both kinds")
    if "upsample" in kinds:
        sources = [attrs.evolve(s, upsample=True) for s in sources]
        missing = [i for i, t in enumerate(raw) if "upsample" not in t and "weight" not in t]
        structurer.problems += [f"{here}[{i}].upsample: required when another source has one (1 keeps its size)"
                                for i in missing]
    tags = [s.tag for s in sources]
    for index, tag in zip(positions, tags):
        if tags.index(tag) != positions.index(index):
            structurer.problems.append(f"{here}[{index}].tag: two sources are named {tag!r} (a source is named by "
                                       "its tag, else its dataset's name); give each a distinct tag")
    if structurer.problems:
        raise RecipeError(structurer.problems)
    return sources


def normalise_sources(raw) -> list:
    """The sources as plain tables with every setting filled in (what ``recipe.toml`` stores, and reads back to
    the same): ``{"name", "tag"?, "weight"|"upsample", **the dataset's settings}``. Checks them (see
    :func:`parse_sources`)."""
    from ..recipe.structure import make_converter

    converter = make_converter()
    out = []
    for source, table in zip(parse_sources(raw), raw):
        plain = {"name": source.name}
        if "tag" in table:
            plain["tag"] = source.tag
        plain["upsample" if source.upsample else "weight"] = source.weight
        plain.update(converter.unstructure(source.config))
        out.append(plain)
    return out


def _optional_positive(instance, attribute, value):
    if value is not None and value <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0 (or left out: the sum of the sources' sizes), got {value}")


@attrs.frozen
class MixtureConfig:
    """See the module docstring. ``sources``: the ``[[dataset.sources]]`` tables; ``seed``: of the epoch's draw and
    layout; ``epoch_size``: training rows an epoch (left out: the sum of the sources' sizes)."""

    sources: Any = attrs.field(converter=normalise_sources)
    seed: int = 0
    epoch_size: int | None = attrs.field(default=None, validator=_optional_positive)


# ------------------------------------------------------------------------------------------ the epoch's draw


def epoch_counts(sizes: list, weights: list, upsample: bool, epoch_size: int | None) -> list:
    """Rows each source contributes to a training epoch (see the module docstring); they sum to ``epoch_size``
    when it is given."""
    if upsample:
        weights = [w * n for w, n in zip(weights, sizes)]
        if epoch_size is None:
            return [int(round(w)) for w in weights]
    total = sum(sizes) if epoch_size is None else epoch_size
    exact = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[:total - sum(counts)]:
        counts[k] += 1
    return counts


@attrs.frozen
class EpochDraw:
    """The training rows of each epoch: ``draw(epoch)`` -> ``[E]`` long indices into the split that holds every
    source's rows once, source after source (``sizes[k]`` rows each), ``counts[k]`` of them from source ``k``
    (:func:`draw_rows` with a seed of ``(seed, epoch)``). Depends only on its fields and ``epoch``."""

    sizes: tuple
    counts: tuple
    seed: int

    def __call__(self, epoch: int):
        import torch

        source, local = draw_rows(list(self.sizes), list(self.counts), self.seed * 1_000_003 + int(epoch))
        offsets = torch.tensor([0, *self.sizes]).cumsum(0)
        return offsets[source] + local


def draw_rows(sizes: list, counts: list, seed: int):
    """The training epoch's rows -> ``(source [E] long, local [E] long)``, ``E = sum(counts)``: source ``k``'s
    ``counts[k]`` rows are whole passes over its ``sizes[k]`` rows, then a seeded subsample without repeats for the
    remainder; the whole is laid out in a seeded order. Depends only on the arguments."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    source, local = [], []
    for k, (size, count) in enumerate(zip(sizes, counts)):
        passes, rest = divmod(count, size)
        rows = [torch.arange(size)] * passes + [torch.randperm(size, generator=generator)[:rest]]
        local.append(torch.cat(rows))
        source.append(torch.full((count,), k, dtype=torch.long))
    source, local = torch.cat(source), torch.cat(local)
    order = torch.randperm(len(source), generator=generator)
    return source[order], local[order]


# ------------------------------------------------------------------------------------------ the splits


def _zeros(spec, rows: int):
    """Zeros for ``rows`` absent samples of a tensor input (variable dimensions of size 1)."""
    return _map(lambda x: x.zero_(), spec.example(rows))


def _map(function, value):
    return {k: _map(function, v) for k, v in value.items()} if isinstance(value, dict) else function(value)


def _put(out, rows, value) -> None:
    """``out[rows] = value`` for a tensor input or a dict of them."""
    if isinstance(out, dict):
        for k in out:
            _put(out[k], rows, value[k])
    else:
        out[rows] = value.to(out.dtype)


def _empty_like_rows(value, rows: int):
    if isinstance(value, dict):
        return {k: _empty_like_rows(v, rows) for k, v in value.items()}
    return value.new_zeros((rows, *value.shape[1:]))


class MixtureSplit:
    """Rows of several sources' splits: row ``i`` is row ``local[i]`` of ``parts[source[i]]`` (``[N]`` long each);
    ``modalities[k]``: the modalities of part ``k`` (its dataset's ``inputs``), ``inputs``: modality ->
    :class:`InputSpec` of the union, ``labels``: whether items carry the parts' labels.

    Items follow the batch contract over the union of modalities (see the module docstring), plus ``"source"``.
    ``present``: modality -> ``[N]`` bool over the mixture's rows, when every part exposes its masks (as
    :class:`mmcore.TensorSplit` does), else None.
    """

    def __init__(self, parts: list, modalities: list, source, local, inputs: dict, labels: bool):
        import torch

        self.parts, self.source, self.local = list(parts), source.long(), local.long()
        self.inputs = dict(inputs)
        self.labels = labels
        self.modalities = [[m for m in self.inputs if m in set(names)] for names in modalities]
        self.present = None
        masks = [getattr(part, "present", None) for part in self.parts]
        if all(isinstance(mask, dict) for mask in masks):
            self.present = {m: torch.zeros(len(self.source), dtype=torch.bool) for m in self.inputs}
            for k, mask in enumerate(masks):
                rows = (self.source == k).nonzero().squeeze(1)
                for m in self.modalities[k]:
                    self.present[m][rows] = torch.as_tensor(mask[m]).bool()[self.local[rows]]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index) -> dict:
        import torch

        k, row = int(self.source[index]), int(self.local[index])
        item = self.parts[k][row]
        inputs, present = {}, {}
        for m, spec in self.inputs.items():
            if m in self.modalities[k]:
                inputs[m], present[m] = item["inputs"][m], item["present"][m]
            else:
                inputs[m] = None if spec.media else _map(lambda x: x[0], _zeros(spec, 1))
                present[m] = torch.tensor(False)
        out = {"inputs": inputs, "present": present, "id": item["id"] * len(self.parts) + k,
               "source": torch.tensor(k)}
        if self.labels:
            out["label"] = self._label(item, k)
        if "skipped" in item:
            out["skipped"] = item["skipped"]
        return out

    def _label(self, data: dict, k: int):
        if "label" not in data:
            raise DataError(f"dataset.sources[{k}] names classes but its rows carry no label")
        return data["label"]


class BatchedMixtureSplit(MixtureSplit):
    """A :class:`MixtureSplit` whose parts all offer ``get_batch`` and whose inputs are fixed-shape tensors."""

    def get_batch(self, indices) -> dict:
        """The collated batch of ``indices``: ``{"inputs": {m: [B, *shape]}, "present": {m: [B]}, "id": [B],
        "source": [B], "label"?: [B]}``, from one ``get_batch`` per source in it."""
        import torch

        index = torch.as_tensor(indices, dtype=torch.long)
        source, local, size = self.source[index], self.local[index], len(index)
        inputs, present = {}, {m: torch.zeros(size, dtype=torch.bool) for m in self.inputs}
        ids = torch.zeros(size, dtype=torch.long)
        labels = torch.zeros(size, dtype=torch.long) if self.labels else None
        skipped = 0
        for k in torch.unique(source).tolist():
            rows = (source == k).nonzero().squeeze(1)
            batch = self.parts[k].get_batch(local[rows].tolist())
            for m in self.modalities[k]:
                if m not in inputs:
                    inputs[m] = _empty_like_rows(batch["inputs"][m], size)
                _put(inputs[m], rows, batch["inputs"][m])
                present[m][rows] = torch.as_tensor(batch["present"][m]).bool()
            ids[rows] = torch.as_tensor(batch["id"]).long() * len(self.parts) + k
            if labels is not None:
                labels[rows] = torch.as_tensor(self._label(batch, k)).long()
            skipped += int(batch.get("skipped", 0))
        out = {"inputs": {m: inputs[m] if m in inputs else _zeros(spec, size) for m, spec in self.inputs.items()},
               "present": present, "id": ids, "source": source.clone()}
        if labels is not None:
            out["label"] = labels
        if skipped:
            out["skipped"] = skipped
        return out


def _fixed_tensor(spec) -> bool:
    if spec.media:
        return False
    if spec.fields:
        return all(_fixed_tensor(f) for f in spec.fields.values())
    return None not in spec.shape


class MergedMixtureSplit:
    """Rows of sources that are all :class:`mmcore.TensorSplit`, concatenated into one TensorSplit (``merged``,
    zeros where a source lacks a modality, ids already offset), with ``source`` (``[M]`` long) each row's source.
    A batch is one gather per tensor."""

    def __init__(self, merged, source):
        self.merged, self.source = merged, source.long()
        self.present = merged.present

    def __len__(self) -> int:
        return len(self.merged)

    def __getitem__(self, index) -> dict:
        return {**self.merged[index], "source": self.source[index]}

    def get_batch(self, indices) -> dict:
        """``{"inputs": {m: [B, *shape]}, "present": {m: [B]}, "id": [B], "source": [B], "label"?: [B]}``."""
        import torch

        rows = torch.as_tensor(indices, dtype=torch.long)
        return {**self.merged[rows], "source": self.source[rows]}


def merge_tensor_splits(parts: list, modalities: list, inputs: dict, labels: bool):
    """The rows of TensorSplits ``parts`` in one TensorSplit over the modalities ``inputs`` (zeros and absent where
    part ``k`` lacks one: ``modalities[k]`` are its own), ids ``id * K + k``; and ``[M]`` long the source of each
    row."""
    import torch

    from ..data import TensorSplit

    def cat(values):
        if isinstance(values[0], dict):
            return {key: cat([v[key] for v in values]) for key in values[0]}
        return torch.cat(values)

    merged_inputs, present = {}, {}
    for m, spec in inputs.items():
        merged_inputs[m] = cat([p.inputs[m] if m in own else _zeros(spec, len(p)) for p, own in zip(parts, modalities)])
        present[m] = torch.cat([p.present[m] if m in own else torch.zeros(len(p), dtype=torch.bool)
                                for p, own in zip(parts, modalities)])
    ids = torch.cat([p.ids * len(parts) + k for k, p in enumerate(parts)])
    if labels and any(p.labels is None for p in parts):
        k = next(k for k, p in enumerate(parts) if p.labels is None)
        raise ConfigError(f"sources[{k}]", "names classes but its rows carry no labels")
    merged = TensorSplit(merged_inputs, present, torch.cat([p.labels for p in parts]) if labels else None, ids)
    source = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([len(p) for p in parts]))
    return merged, source


def _union_split(parts: list, modalities: list, inputs: dict, labels: bool):
    """Every row of ``parts`` once, part after part: merged when every part is a TensorSplit, else a
    :class:`BatchedMixtureSplit` when each offers ``get_batch`` over fixed-shape tensors, else item by item."""
    from ..data import TensorSplit

    if all(type(p) is TensorSplit for p in parts):
        return MergedMixtureSplit(*merge_tensor_splits(parts, modalities, inputs, labels))
    batched = all(callable(getattr(p, "get_batch", None)) for p in parts) and all(
        _fixed_tensor(s) for s in inputs.values())
    return (BatchedMixtureSplit if batched else MixtureSplit)(parts, modalities, *_whole(parts), inputs, labels)


def _whole(parts: list):
    """``(source, local)`` of every row of ``parts``, each once, part after part."""
    import torch

    sizes = [len(p) for p in parts]
    source = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(sizes))
    local = torch.cat([torch.arange(n) for n in sizes])
    return source, local


# ------------------------------------------------------------------------------------------ the build


def _config_error(problems: list) -> ConfigError:
    """A source's build problems (``dataset.sources[i].<key>: ...`` lines) as the mixture's ConfigError, so the
    recipe error still names the source's key."""
    field, _, message = problems[0].partition(": ")
    field = field[len(PATH) + 1:] if field.startswith(PATH + ".") else field
    return ConfigError(field, "; ".join([message, *problems[1:]]))


def build_mixture(config: MixtureConfig, context=None):
    from ..contracts import DatasetSplits
    from ..registry import ComponentBuildError, get_registry

    context = context or DatasetContext()
    registry = get_registry()
    sources = parse_sources(config.sources, registry)
    built = []
    for index, source in enumerate(sources):
        try:
            built.append(registry.build("datasets", source.name, source.config, DatasetContext(context.seed, ()),
                                        f"{PATH}.sources[{index}]"))
        except ComponentBuildError as exc:
            raise _config_error(exc.problems) from exc
    inputs, owner = {}, {}
    for index, (source, splits) in enumerate(zip(sources, built)):
        for m, spec in splits.inputs.items():
            if m in inputs and inputs[m] != spec:
                first = owner[m]
                raise ConfigError(f"sources[{index}]", f"modality {m!r} is {spec.describe()} in this source "
                                  f"({source.tag!r}) but {inputs[m].describe()} in {PATH}.sources[{first}] "
                                  f"({sources[first].tag!r}); a modality the sources share needs the same input")
            inputs.setdefault(m, spec)
            owner.setdefault(m, index)
    class_names = {tuple(splits.class_names) for splits in built}
    labels = len(class_names) == 1 and bool(next(iter(class_names)))
    if not labels and any(splits.class_names for splits in built):
        print(f"mmcore: warning: {PATH}.sources: the sources name different classes, so the mixture has no labels "
              "(label-based metrics such as knn and prototypes report nothing)", file=sys.stderr)
    prompts = {tuple(splits.prompts) for splits in built}

    sizes = [len(splits.train) for splits in built]
    counts = epoch_counts(sizes, [s.weight for s in sources], sources[0].upsample, config.epoch_size)
    for index, count in enumerate(counts):
        if count == 0:
            raise ConfigError(f"sources[{index}]", f"contributes no training rows to an epoch ({sizes[index]} rows, "
                                                   "its share rounds to 0); raise its weight or the epoch_size")
    modalities = [list(b.inputs) for b in built]
    parts = [b.train for b in built]
    splits = {"train": _union_split(parts, modalities, inputs, labels)}
    splits["train"].epoch_rows = EpochDraw(tuple(sizes), tuple(counts), config.seed)  # the sampler's epochs
    for name in ("val", "test"):
        parts = [getattr(b, name) for b in built]
        splits[name] = _union_split(parts, modalities, inputs, labels)
    return DatasetSplits(
        train=splits["train"], val=splits["val"], test=splits["test"],
        inputs=inputs,
        observed_pairs=frozenset().union(*(b.observed_pairs for b in built)),
        class_names=next(iter(class_names)) if labels else (),
        prompts=next(iter(prompts)) if len(prompts) == 1 else (),
        source_names=tuple(s.tag for s in sources),
    )


@hookimpl
def mmcore_datasets():
    return [Component("mixture", MixtureConfig, build_mixture,
                      "a union of datasets (e.g. pair datasets) with sampling weights or upsampling factors")]
