"""The EmergentBridge anchor strategy module: anchor alignment plus orthogonal proxy alignment.

Notation: ``A`` the anchor modality, ``B`` (setting ``proxy``) an already-aligned modality, ``N`` every other
("new") modality. ``z[m]`` are unit rows ``[n, d]`` for a batch of ``n`` samples.

- Anchor terms: symmetric InfoNCE between ``z[m]`` and ``z[A]`` for every ``m != A`` (rows having both).
- Mapper ``g``: ``z[A] -> z_hat[B]``, trained on ``A``-``B`` rows with its own loss (``aux_losses["mapper"]``),
  on detached embeddings.
- Bridge anchor ``b = normalize(g(z[A]) + sigma * eps)``, ``eps ~ N(0, I_d)``, detached: no gradient reaches ``g``
  (nor ``z[A]``) from the new modalities.
- Direction ``u_i = stopgrad(z[A]_i)``, projector ``P_i v = v - (v . u_i) u_i``.
- ``projection = "loss"``: proxy term ``lambda * info_nce(normalize(P z[N]), normalize(P b))`` (query -> key only),
  on rows having ``N`` and ``A``. Its gradient w.r.t. ``z[N]_i`` lies in ``u_i``-perp.
- ``projection = "gradient"``: proxy term ``lambda * info_nce(z[N], b)`` unprojected; in the backward pass its
  gradient w.r.t. ``z[N]_i`` loses its component along the anchor loss's gradient w.r.t. ``z[N]_i`` and (setting
  ``orthogonal_to_anchor``, default true) along ``u_i``.
"""

import torch
import torch.nn.functional as F
from torch import nn

import mmcore

from .mapper import build_mapper, mapper_loss
from .projection import orthonormal_directions, project_gradient, project_out


class EmergentBridge(nn.Module):
    """``forward(z, present, batch) -> mmcore.Alignment``; the mapper is a submodule (optimised, saved)."""

    def __init__(self, config, context):
        super().__init__()
        self.config = config
        self.loss = context.loss
        self.modalities = tuple(context.modalities)
        self.anchor = config.anchor
        self.proxy = config.proxy
        self.new = tuple(m for m in self.modalities if m not in (config.anchor, config.proxy))
        self.mapper = build_mapper(config.mapper, context.embed_dim, config.mapper_hidden)

    def term_names(self):
        """The anchor terms ``m-A`` and the proxy terms ``proxy/N-B``, in both variants (``"gradient"``
        scores them itself, through the context's loss)."""
        return (*mmcore.anchor_term_names(self.anchor, self.modalities),
                *(f"proxy/{n}-{self.proxy}" for n in self.new))

    def trained_pairs(self, observed):
        """The anchor pairs: the only pairs aligned directly. ``N``-``B`` pairs are emergent."""
        return mmcore.pairs_with(self.anchor, observed)

    def bridge(self, z_anchor):
        """``[n, d] -> [n, d]``: the detached noisy bridge anchor ``normalize(g(u) + sigma * eps)``."""
        with torch.no_grad():
            predicted = self.mapper(z_anchor.detach())
            noise = self.config.sigma * torch.randn_like(predicted)
            return F.normalize(predicted + noise, dim=-1)

    def anchor_terms(self, z, present):
        return mmcore.anchor_terms(z, present, self.anchor, self.modalities)

    def forward(self, z, present, batch=None):
        a, p, config = self.anchor, self.proxy, self.config
        u = z[a].detach()
        aux = {"mapper": mapper_loss(config.mapper_loss, self.mapper(u), z[p].detach(),
                                     present[a] & present[p], self.loss)}
        b = self.bridge(u)
        terms = self.anchor_terms(z, present)
        if config.projection == "loss":
            key = F.normalize(project_out(b, u), dim=-1)
            for n in self.new:
                query = F.normalize(project_out(z[n], u), dim=-1)
                terms.append(mmcore.AlignmentTerm(f"proxy/{n}-{p}", query, key, present[n] & present[a],
                                                  weight=config.lambda_, symmetric=False))
            return mmcore.Alignment(terms, aux)
        return self.gradient_variant(z, present, u, b, terms, aux)

    def gradient_variant(self, z, present, u, b, terms, aux):
        """Anchor and proxy losses computed here (``aux_losses``), the proxy gradient projected per sample."""
        anchor_losses = {term.name: term.weight * self.loss(term) for term in terms}
        anchor_total = sum(anchor_losses.values())
        for n in self.new:
            query = z[n]
            if query.requires_grad and torch.is_grad_enabled():
                (grad,) = torch.autograd.grad(anchor_total, query, retain_graph=True, allow_unused=True)
                grad = torch.zeros_like(query) if grad is None else grad
                directions = [grad, u] if self.config.orthogonal_to_anchor else [grad]
                query = project_gradient(query, orthonormal_directions(torch.stack(directions, dim=1)))
            term = mmcore.AlignmentTerm(f"proxy/{n}-{self.proxy}", query, b, present[n] & present[self.anchor],
                                        symmetric=False)
            aux[term.name] = self.config.lambda_ * self.loss(term)
        return mmcore.Alignment([], {**anchor_losses, **aux})


def build_strategy(config, context):
    """The strategy module for a validated config (see :mod:`mmcore_emergentbridge.plugin`)."""
    return EmergentBridge(config, context)
