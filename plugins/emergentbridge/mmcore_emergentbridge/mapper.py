"""The mapper ``g: z[A] -> z_hat[B]`` and its objective on anchor-proxy pairs.

The mapper predicts the *normalised* embedding of the proxy modality ``B`` from the anchor's normalised embedding,
so its output is L2-normalised (``[n, d] -> [n, d]``, unit rows) and the bridge noise ``sigma`` is relative to a
unit vector. It is trained on detached embeddings: its objective moves only the mapper, never the encoders (our
choice; the paper's method section is not public).
"""

import functools

import mmcore


@functools.cache
def _mapper_class():
    import torch.nn.functional as F
    from torch import nn

    class Mapper(nn.Module):
        """``[n, d] -> [n, d]`` unit rows: ``normalize(net(x))``, ``net`` linear or a one-hidden-layer MLP."""

        def __init__(self, kind: str, dim: int, hidden: int):
            super().__init__()
            if kind == "linear":
                self.net = nn.Linear(dim, dim)
            else:
                self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

        def forward(self, x):
            return F.normalize(self.net(x), dim=-1)

    return Mapper


def build_mapper(kind: str, dim: int, hidden: int):
    """``kind``: ``"mlp"`` (Linear-GELU-Linear, ``hidden`` wide) or ``"linear"``."""
    return _mapper_class()(kind, dim, hidden)


def mapper_loss(kind: str, prediction, target, rows, loss):
    """Scalar objective of the mapper on the rows having both ``A`` and ``B``.

    prediction: ``[n, d]`` unit rows ``g(z[A])``
    target:     ``[n, d]`` unit rows ``z[B]`` (detach it: the mapper must not train the encoders)
    rows:       ``[n]`` bool
    loss:       the runner's term loss ``loss(term) -> scalar`` (used by ``"infonce"``: symmetric InfoNCE over the
                global batch, with the recipe's loss and temperature)
    ``"cosine"``: mean of ``1 - cos(prediction_i, target_i)`` over the rows (0 when there are none).
    """
    if kind == "infonce":
        return loss(mmcore.AlignmentTerm("mapper", prediction, target, rows))
    cosine = (prediction * target).sum(-1)
    count = rows.sum().clamp_min(1)
    return ((1.0 - cosine) * rows).sum() / count
