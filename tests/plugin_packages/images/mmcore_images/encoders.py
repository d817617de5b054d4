"""The encoders' modules (imported by their builds)."""

from torch import nn


class TinyConv(nn.Module):
    """``[b, 3, 8, 8] -> [b, embed_dim]``; raises on a row without the dataset's real-image marker."""

    def __init__(self, shape, channels: int, embed_dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(shape[0], channels, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten(), nn.Linear(channels * 4, embed_dim))

    def forward(self, images):
        if images.ndim != 4 or not bool((images[:, 0, 0, 0] == 1.0).all()):
            raise AssertionError("an absent (placeholder) image row reached the encoder")
        return self.body(images)


class TokenBag(nn.Module):
    """``{"ids": [b, L] int64, "mask": [b, L] bool} -> [b, embed_dim]``: masked mean of token embeddings."""

    def __init__(self, vocabulary: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, 32)
        self.head = nn.Linear(32, embed_dim)

    def forward(self, inputs):
        if not bool(inputs["mask"].any(1).all()):
            raise AssertionError("an absent (placeholder) text row reached the encoder")
        mask = inputs["mask"].float()[..., None]
        pooled = (self.embedding(inputs["ids"]) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled)


WORDS = ("a", "an", "square", "of", "red", "green", "blue", "yellow", "colour", "photo", "the")


def word_ids(text: str, length: int) -> list:
    """Token ids of a caption's words (0 = padding, 1 = unknown word), cut to ``length``."""
    return [WORDS.index(w) + 2 if w in WORDS else 1 for w in text.lower().split()][:length]


class CharBag(nn.Module):
    """Raw captions (``str``) -> ``[b, embed_dim]``: ``preprocess`` makes ``{"ids", "mask", "augmented"}``;
    ``collate`` pads. Raises when ``preprocess`` meets an absent (None) caption, and when the batch's preprocessing
    mode (``augmented``) differs from the module's (training batches are augmented, evaluation ones never)."""

    def __init__(self, embed_dim: int, length: int = 8):
        super().__init__()
        self.length = length
        self.embedding = nn.Embedding(len(WORDS) + 2, 32)
        self.head = nn.Linear(32, embed_dim)

    def preprocess(self, raw, train: bool = False):
        import torch

        if not isinstance(raw, str):
            raise AssertionError(f"preprocess got {raw!r}: an absent caption reached the encoder")
        ids = word_ids(raw, self.length)
        return {"ids": torch.tensor(ids, dtype=torch.long), "augmented": torch.tensor(train)}

    def collate(self, values: list):
        import torch

        ids = torch.zeros(len(values), self.length, dtype=torch.long)
        for row, value in enumerate(values):
            ids[row, :len(value["ids"])] = value["ids"]
        return {"ids": ids, "mask": ids > 0, "augmented": torch.stack([v["augmented"] for v in values])}

    def forward(self, inputs):
        import torch

        if not torch.jit.is_tracing() and bool((inputs["augmented"] != self.training).any()):
            raise AssertionError(f"preprocessed with train={not self.training} for a module in "
                                 f"{'training' if self.training else 'eval'} mode")
        mask = inputs["mask"].float()[..., None]
        pooled = (self.embedding(inputs["ids"]) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled)
