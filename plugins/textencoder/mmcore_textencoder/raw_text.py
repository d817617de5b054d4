"""``SentenceText``: the sentence-transformers model run on arbitrary text (``InputSpec.raw("text")``), then the
trainable head.

::

    str --model.tokenizer--> {input_ids, attention_mask[, token_type_ids]} [L]        (preprocess, one sample)
        --tokenizer.pad--> [B, L]                                                     (collate)
        --SentenceTransformer (transformer + pooling [+ normalize])--> [B, D] --head--> [B, embed_dim]

Frozen (``tower = "frozen"``, the default): the sentence model runs in eval mode under ``no_grad`` whatever the
module's mode, and its weights are not checkpointed (as the vocabulary table: they come from ``model`` at every
build), so a checkpoint holds only the head. The model is then the process-wide instance of
:func:`mmcore_textencoder.sentences.load_model`, shared, never modified. ``tower = "train"``: a private copy that
trains with the head and is checkpointed with it.

Tokenisation truncates to the model's ``max_seq_length`` (256 for all-MiniLM-L6-v2), as ``encode`` does.
Imported by the plugin's build only (torch at module level).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .projection import head

SENTENCE = "sentence."


def read_text(raw) -> str:
    """The text, surrounding whitespace stripped; a ``ValueError`` naming the value unless a non-empty string."""
    if not isinstance(raw, str):
        raise ValueError(f"{repr(raw)[:80]}: expected a string, got {type(raw).__name__}")
    text = raw.strip()
    if not text:
        raise ValueError(f"{raw!r}: empty text")
    return text


class SentenceText(nn.Module):
    """See the module docstring. ``forward(inputs: {name: [b, L]}) -> [b, embed_dim]`` (not normalised)."""

    def __init__(self, sentence_model, hidden: list, embed_dim: int, normalize: bool, trainable: bool = False):
        super().__init__()
        self.trainable = trainable
        self.sentence = copy.deepcopy(sentence_model) if trainable else sentence_model
        self.head = head(_embedding_width(self.sentence), hidden, embed_dim)
        self.normalize = normalize
        self.max_length = self.sentence.max_seq_length
        self.sentence.requires_grad_(trainable)
        if not trainable:
            self.sentence.eval()
            self.register_state_dict_post_hook(_drop_sentence_weights)
            self.register_load_state_dict_pre_hook(_keep_sentence_weights)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.sentence.eval()  # frozen: no dropout, ever
        return self

    def preprocess(self, raw, train: bool = False) -> dict:
        """One text -> ``{name: [L] int64}``; ``train`` changes nothing (text has no augmentation)."""
        encoded = self.sentence.tokenizer(read_text(raw), truncation=True, max_length=self.max_length,
                                          return_tensors="pt")
        return {name: values[0].long() for name, values in encoded.items()}

    def collate(self, values: list) -> dict:
        """Per-sample dicts -> ``{name: [B, L_max]}`` padded by the tokenizer (attention mask 0 on padding)."""
        return dict(self.sentence.tokenizer.pad(list(values), return_tensors="pt"))

    def sentence_embedding(self, inputs: dict):
        """``[b, D]``: the sentence model's embedding (L2-normalised if ``normalize``), as ``encode`` gives it."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            vectors = self.sentence(dict(inputs))["sentence_embedding"]
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def forward(self, inputs: dict):
        return self.head(self.sentence_embedding(inputs))

    @torch.no_grad()
    def embed_new(self, texts: list):
        """``[len(texts), embed_dim]`` (not normalised) for strings, through the same model and head."""
        device = next(self.head.parameters()).device
        batch = self.collate([self.preprocess(text) for text in texts])
        return self({name: values.to(device) for name, values in batch.items()})


def _embedding_width(model) -> int:
    """The sentence embedding width ``D`` (sentence-transformers >= 6 renamed the method)."""
    width = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(width())


def _drop_sentence_weights(module, state_dict, prefix, local_metadata):
    """state_dict post-hook: the frozen sentence model's weights are not part of a checkpoint."""
    for key in [k for k in state_dict if k.startswith(prefix + SENTENCE)]:
        del state_dict[key]


def _keep_sentence_weights(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                           error_msgs):
    """load_state_dict pre-hook: a checkpoint without the frozen model's weights keeps the loaded ones."""
    for key, value in module.sentence.state_dict().items():
        state_dict.setdefault(prefix + SENTENCE + key, value)
