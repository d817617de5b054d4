"""The ``infonce`` loss module (imported by its build, so ``mmcore --help`` never imports torch)."""

from torch import nn

from ..contrastive.infonce import add_logit_scale, clamped_logit_scale, info_nce_pair_rows, info_nce_rows


class Temperature(nn.Module):
    """One learnable or fixed temperature (``log_logit_scale``), as set up by :func:`mmcore.add_logit_scale`."""

    def __init__(self, temperature: float, learnable: bool, max_logit_scale: float):
        super().__init__()
        add_logit_scale(self, temperature, learnable, max_logit_scale)

    @property
    def logit_scale(self):
        return clamped_logit_scale(self)


class InfoNCE(nn.Module):
    """Symmetric InfoNCE (the runner applies both directions). Owns the log logit scale, and one per term in
    ``per_term`` (a ``ModuleDict`` keyed by term name: the core checks the names against the strategy's
    ``term_names()`` and logs each one as ``train/temperature/<term>``)."""

    def __init__(self, config):
        super().__init__()
        add_logit_scale(self, config.temperature, config.learnable, config.max_logit_scale)
        self.tile_size = config.tile_size
        self.kernel = config.kernel
        self.per_term = nn.ModuleDict({
            name: Temperature(t.temperature, t.learnable, config.max_logit_scale)
            for name, t in config.per_term.items()
        })

    @property
    def logit_scale(self):
        return clamped_logit_scale(self)

    def scale_of(self, term: str | None):
        """Scalar logit scale of term ``term``: its own if ``per_term`` has one, else the shared one."""
        return self.per_term[term].logit_scale if term in self.per_term else self.logit_scale

    def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
             term=None):
        """``[n]`` row losses; every valid candidate is a negative (``candidate_labels`` are ignored)."""
        return info_nce_rows(query, candidates, targets, self.scale_of(term), None, candidate_valid, self.tile_size,
                             self.kernel)

    def pair_rows(self, query, key, labels=None, valid=None, term=None):
        """Both directions at once (single process): ``(forward [B], reverse [B])``."""
        return info_nce_pair_rows(query, key, self.scale_of(term), None, valid, tile_size=self.tile_size,
                                  kernel=self.kernel)
