"""Built-in evaluators: cross-modal retrieval, zero-shot classification and per-modality kNN.

Every evaluator is a function ``(EmbeddedSplit) -> dict[str, float]``. Search is exact cosine search with faiss
(``IndexFlatIP`` on L2-normalised float32 vectors), in query chunks, so memory stays at ``chunk x N``, never
``N x N``. Pairs are split into *trained* (aligned directly by the anchor strategy) and *emergent* (never trained
together); both averages are reported.
"""

from __future__ import annotations

import itertools

import attrs

from ..contracts import Component, ConfigError, EvaluatorContext
from ..hookspecs import hookimpl
from ..protocols import evaluator


def build_index(vectors, factory: str = "Flat", nprobe: int = 16):
    """A faiss inner-product index over ``[N, d]`` L2-normalised vectors (cosine search).

    ``"Flat"`` is exact. For galleries too big for exact search use a faiss factory string: ``"IVF{nlist},Flat"``
    (trained on the gallery; nlist about 4 sqrt(N); ``nprobe`` lists searched), ``"HNSW32,Flat"`` (no training,
    more memory) or ``"IVF{nlist},PQ{m}"`` (compressed). Approximate indexes trade recall for speed: measure it
    against Flat (``benchmarks/retrieval.py`` does).
    """
    import faiss
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if factory == "Flat":
        index = faiss.IndexFlatIP(vectors.shape[1])
    else:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        if "IVF" in factory:
            faiss.extract_index_ivf(index).nprobe = nprobe
    index.add(vectors)
    return index


def ranks_of_positives(queries, gallery, chunk_size: int = 4096, positives=None, owners=None):
    """1-based rank of each query's true partner among the gallery items, by cosine score -> ``[n]``.

    Plain form: ``queries``, ``gallery`` ``[n, d]``, the partner of ``queries[i]`` is ``gallery[i]``. Ties count in
    the query's favour. ``positives`` (``[n, d]``): the partners given separately, for a gallery ``[M, d]`` of any
    size. ``owners = (query_owner [n], gallery_owner [M])``: gallery items with the query's own owner (the other
    correct answers of the query's own sample) are not counted. Computed in query chunks: peak memory
    ``chunk_size x M``.
    """
    import numpy as np

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    positives = gallery if positives is None else np.ascontiguousarray(positives, dtype=np.float32)
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_size):
        q = queries[start:start + chunk_size]
        scores = q @ gallery.T
        positive = np.einsum("ij,ij->i", q, positives[start:start + len(q)])
        beaten = scores > positive[:, None]
        if owners is not None:
            beaten &= owners[1][None, :] != np.asarray(owners[0])[start:start + len(q), None]
        ranks[start:start + len(q)] = 1 + beaten.sum(1)
    return ranks


def summarise_pairs(metrics: dict, per_pair, prefix: str, trained_pairs, keys=None) -> None:
    """Add ``<prefix>/<trained|emergent>/<key>``: the mean of each key over the pairs of each kind.

    ``per_pair``: ``{(a, b): {key: value}}`` or ``[((a, b), {key: value}), ...]`` (a list may name a pair more
    than once, e.g. an unordered pair's values next to its ordered pairs'); a pair is *trained* when
    ``frozenset((a, b))`` is in ``trained_pairs`` (``EmbeddedSplit.trained_pairs``), else *emergent*. ``keys``:
    summarise only these keys (default: all). Means are added in sorted order.
    """
    items = per_pair.items() if isinstance(per_pair, dict) else per_pair
    groups: dict = {}
    for (a, b), values in items:
        kind = "trained" if frozenset((a, b)) in trained_pairs else "emergent"
        for key, value in values.items():
            if keys is None or key in keys:
                groups.setdefault((kind, key), []).append(value)
    for (kind, key), values in sorted(groups.items()):
        metrics[f"{prefix}/{kind}/{key}"] = float(sum(values) / len(values))


def positive_ks(instance, attribute, value):
    """An attrs validator for the K list of Recall@K: at least one K, each an integer >= 1."""
    if not value or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of integers >= 1 (the K of Recall@K), got "
                         f"{list(value)!r}")


@attrs.frozen
class RetrievalConfig:
    """``ks``: the K of Recall@K; ``chunk_size``: queries searched at once; ``index``: faiss factory string
    (``"Flat"`` = exact; see :func:`build_index` for approximate ones; checked when the evaluator is built) and its
    ``nprobe``. ``mean_rank`` is always exact."""

    ks: list[int] = attrs.field(factory=lambda: [1, 5, 10], validator=positive_ks)
    chunk_size: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    index: str = "Flat"
    nprobe: int = attrs.field(default=16, validator=attrs.validators.gt(0))


def recall_at_k(queries, gallery, ks=(1,), chunk_size: int = 4096, index: str = "Flat", nprobe: int = 16) -> dict:
    """``{k: fraction of queries whose partner gallery[i] is among their k nearest gallery rows}``.

    queries, gallery: ``[n, d]`` L2-normalised, row ``i`` of each is a true pair. Cosine search with faiss
    (:func:`build_index`; exact ``"Flat"`` by default), in query chunks: memory ``chunk_size x k``, never ``n x n``.
    """
    import numpy as np

    n = len(queries)
    searcher = build_index(gallery, index, nprobe)
    hits = dict.fromkeys(ks, 0)
    for start in range(0, n, chunk_size):
        chunk = np.ascontiguousarray(queries[start:start + chunk_size], dtype=np.float32)
        _, found = searcher.search(chunk, min(max(ks), n))
        truth = np.arange(start, start + len(chunk))[:, None]
        for k in ks:
            hits[k] += int((found[:, :k] == truth).any(1).sum())
    return {k: hits[k] / max(n, 1) for k in ks}


def recall_at_1(queries, gallery) -> float:
    """Fraction of queries ``[n, d]`` whose nearest gallery row is their own partner ``gallery[i]``: the
    ``retrieval`` evaluator's search (:func:`recall_at_k`), so its ``R@1`` is reproduced exactly."""
    return recall_at_k(queries, gallery, (1,))[1]


def retrieval(split, config: RetrievalConfig = RetrievalConfig()) -> dict:
    """Recall@K and mean rank for every ordered pair ``query -> gallery`` on the samples having both.

    The gallery holds the gallery-modality embeddings of those samples; query ``i``'s true partner is gallery
    item ``i``. Chance Recall@1 is ``1 / n``.
    """
    metrics, per_pair = {}, {}
    for q, g in itertools.permutations(split.modalities, 2):
        rows = split.present[q] & split.present[g]
        if not rows.any():
            continue
        queries, gallery = split.z[q][rows], split.z[g][rows]
        recalls = recall_at_k(queries, gallery, config.ks, config.chunk_size, config.index, config.nprobe)
        values = {f"R@{k}": float(value) for k, value in recalls.items()}
        values["mean_rank"] = float(ranks_of_positives(queries, gallery, config.chunk_size).mean())
        per_pair[q, g] = values
        metrics.update({f"retrieval/{q}->{g}/{key}": value for key, value in values.items()})
    summarise_pairs(metrics, per_pair, "retrieval", split.trained_pairs)
    return metrics


def unit_rows(x, eps: float = 1e-12):
    """Rows scaled to unit L2 length, ``x / max(|x|, eps)`` over the last axis, as the core normalises encoder
    output into the shared space: a torch tensor (``torch.nn.functional.normalize``, gradients flow) or a numpy
    array (same dtype; all-zero rows stay zero)."""
    if type(x).__module__.startswith("torch"):
        import torch.nn.functional as F

        return F.normalize(x, dim=-1, eps=eps)
    import numpy as np

    x = np.asarray(x)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def class_prototypes(z, labels, num_classes: int):
    """Mean embedding per class, re-normalised: ``[N, d], [N] -> [num_classes, d]`` (zeros for absent classes)."""
    import numpy as np

    protos = np.zeros((num_classes, z.shape[1]), dtype=np.float32)
    np.add.at(protos, labels, z)
    return unit_rows(protos)


@attrs.frozen
class PrototypesConfig:
    """No settings: prototypes come from the reference (training) split, or the test split when there is none."""


def prototypes(split, config: PrototypesConfig = PrototypesConfig()) -> dict:
    """Accuracy of classifying modality ``q``'s test samples by the nearest class prototype of modality ``p``: the
    mean embedding of ``p``'s training samples of each class (needs labels, not prompts).

    Metric ``prototypes/<q>-><p>/acc``; chance is ``1 / num_classes``. (Named ``zero_shot`` before the prompt
    zero-shot evaluator existed.)
    """
    import numpy as np

    if split.labels is None:
        return {}
    source = split.reference if split.reference is not None else split
    num_classes = int(max(split.labels.max(), source.labels.max())) + 1
    metrics, per_pair = {}, {}
    for q, p in itertools.permutations(split.modalities, 2):
        ref_rows = source.present[p]
        rows = split.present[q]
        if not ref_rows.any() or not rows.any():
            continue
        protos = class_prototypes(source.z[p][ref_rows], source.labels[ref_rows], num_classes)
        predicted = (split.z[q][rows] @ protos.T).argmax(1)
        accuracy = float(np.mean(predicted == split.labels[rows]))
        per_pair[q, p] = {"acc": accuracy}
        metrics[f"prototypes/{q}->{p}/acc"] = accuracy
    summarise_pairs(metrics, per_pair, "prototypes", split.trained_pairs)
    return metrics


@attrs.frozen
class ZeroShotConfig:
    """``text``: the modality whose encoder embeds the prompts (its input must be raw text); ``templates``: prompt
    templates with one ``{}`` for the class name (empty: the dataset's ``prompts``, else ``"{}"``)."""

    text: str = "text"
    templates: list[str] = attrs.field(factory=list)

    @templates.validator
    def _check(self, attribute, value):
        for index, template in enumerate(value):
            if template.count("{}") != 1:
                raise ValueError(f"'templates[{index}]' {template!r} needs exactly one {{}} for the class name")


def class_text_embeddings(encode, text: str, class_names, templates):
    """``[C, d]``: each class's prompts (every template filled with its name) embedded and averaged, re-normalised
    (CLIP's prompt ensembling)."""
    templates = list(templates) or ["{}"]
    prompts = [template.format(name) for name in class_names for template in templates]
    z = encode(text, prompts).reshape(len(class_names), len(templates), -1).mean(1)
    return unit_rows(z)


def zero_shot(split, config: ZeroShotConfig = ZeroShotConfig()) -> dict:
    """Zero-shot classification from text, as CLIP and ImageBind evaluate it: every test sample of each other
    modality ``m`` takes the class whose mean prompt embedding (see :func:`class_text_embeddings`) is nearest.

    Metric ``zero_shot/<m>/acc`` (chance ``1 / num_classes``), and its means over the modalities trained with the
    text modality and over the emergent ones (``zero_shot/trained/acc``, ``zero_shot/emergent/acc``).
    Needs labels, class names and ``split.encode``; returns nothing without them.
    """
    import numpy as np

    if split.labels is None or not split.class_names or split.encode is None:
        return {}
    classes = class_text_embeddings(split.encode, config.text, split.class_names, config.templates or split.prompts)
    metrics, per_pair = {}, {}
    for m in split.modalities:
        rows = split.present[m]
        if m == config.text or not rows.any():
            continue
        predicted = (split.z[m][rows] @ classes.T).argmax(1)
        accuracy = float(np.mean(predicted == split.labels[rows]))
        metrics[f"zero_shot/{m}/acc"] = accuracy
        per_pair[m, config.text] = {"acc": accuracy}
    summarise_pairs(metrics, per_pair, "zero_shot", split.trained_pairs)
    return metrics


def build_zero_shot(config: ZeroShotConfig, context: EvaluatorContext):
    """The prompt zero-shot evaluator; ConfigError unless ``text`` is a raw-text modality of the recipe."""
    spec = context.inputs.get(config.text)
    if context.inputs and (spec is None or spec.media != "text"):
        raw_text = [m for m, s in context.inputs.items() if s.media == "text"]
        found = (f"the raw-text modality is {', '.join(raw_text)}: set text = \"{raw_text[0]}\"" if raw_text else
                 "no modality of this recipe is raw text (InputSpec.raw(\"text\"))")
        what = "is not in the recipe" if spec is None else f"takes {spec.describe()} input"
        raise ConfigError("text", f"zero_shot embeds class prompts with the {config.text!r} encoder, which {what}; "
                                  f"{found}. For the nearest class prototype of the training split (the evaluator "
                                  "called zero_shot before), use name = \"prototypes\"")
    return evaluator(lambda split: zero_shot(split, config), ("zero_shot/trained/acc", "zero_shot/emergent/acc"))


@attrs.frozen
class KNNConfig:
    """``k``: neighbours voting (cosine similarity, majority vote)."""

    k: int = attrs.field(default=10, validator=attrs.validators.gt(0))


def knn(split, config: KNNConfig = KNNConfig()) -> dict:
    """Per-modality kNN accuracy: each test sample of ``m`` votes among its ``k`` nearest reference samples of
    ``m``. Measures how much class information a modality's embedding keeps. Metric ``knn/<m>/acc``."""
    import numpy as np

    if split.labels is None or split.reference is None:
        return {}
    metrics = {}
    for m in split.modalities:
        ref_rows, rows = split.reference.present[m], split.present[m]
        if not ref_rows.any() or not rows.any():
            continue
        index = build_index(split.reference.z[m][ref_rows])
        _, found = index.search(np.ascontiguousarray(split.z[m][rows], dtype=np.float32), min(config.k, index.ntotal))
        votes = split.reference.labels[ref_rows][found]
        predicted = np.array([np.bincount(v).argmax() for v in votes])
        metrics[f"knn/{m}/acc"] = float(np.mean(predicted == split.labels[rows]))
    if metrics:
        metrics["knn/mean/acc"] = float(np.mean(list(metrics.values())))
    return metrics


def _evaluator(function, summary):
    def build(config, context=None):
        return evaluator(lambda split: function(split, config), summary(config))

    return build


def check_index_factory(factory: str, dim: int) -> None:
    """ConfigError(``index``) unless faiss can make the index ``factory`` for ``dim``-wide vectors (a parse of the
    string only: nothing is trained). ``"Flat"`` needs no check."""
    if factory == "Flat":
        return
    import re

    import faiss

    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError carrying its C++ source location
        reason = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(exc).strip()).removeprefix("Error: ")
        raise ConfigError("index", f"faiss cannot make the index {factory!r} for {dim}-dimensional embeddings: "
                                   f"{reason}") from None


def build_retrieval(config: RetrievalConfig, context: EvaluatorContext | None = None):
    """The retrieval evaluator; its faiss ``index`` string is checked against the recipe's ``embed_dim``."""
    if context is not None and context.embed_dim > 0:
        check_index_factory(config.index, context.embed_dim)
    return evaluator(lambda split: retrieval(split, config), _retrieval_summary(config))


def _retrieval_summary(config: RetrievalConfig) -> tuple:
    return tuple(f"retrieval/{kind}/{key}" for kind in ("trained", "emergent")
                 for key in [*(f"R@{k}" for k in config.ks), "mean_rank"])


@hookimpl
def mmcore_evaluators():
    return [
        Component("retrieval", RetrievalConfig, build_retrieval,
                  "Recall@K and mean rank, every modality pair"),
        Component("prototypes", PrototypesConfig,
                  _evaluator(prototypes, lambda c: ("prototypes/trained/acc", "prototypes/emergent/acc")),
                  "nearest class prototype (training-split mean) of another modality"),
        Component("zero_shot", ZeroShotConfig, build_zero_shot,
                  "zero-shot classification from text prompts (CLIP/ImageBind style)"),
        Component("knn", KNNConfig, _evaluator(knn, lambda c: ("knn/mean/acc",)),
                  "per-modality kNN accuracy against the training split"),
    ]
