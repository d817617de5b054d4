"""Components that break their contracts in ways only building or running them shows, plus one that keeps it
without the optional parts (a loss with no ``logit_scale``). ``mmcore validate`` must reject each broken one."""

import attrs

import mmcore


@attrs.frozen
class NoConfig:
    pass


def build_not_a_loss(config, context):
    return {"rows": "not a module"}


def build_wide_encoder(config, context):
    from torch import nn

    return nn.Linear(context.input_dim, context.embed_dim + 1)  # one column too many


def build_lying_strategy(config, context):
    from torch import nn

    class Lying(nn.Module):
        def forward(self, z, present, batch):
            a, b = context.modalities[:2]
            return mmcore.Alignment([mmcore.AlignmentTerm(f"{a}-{b}-typo", z[a], z[b], present[a] & present[b])])

        def term_names(self):
            a, b = context.modalities[:2]
            return (f"{a}-{b}",)

        def trained_pairs(self, observed):
            return set(observed)

    return Lying()


def build_clashing_strategy(config, context):
    import torch
    from torch import nn

    class Clashing(nn.Module):
        def forward(self, z, present, batch):
            a, b = context.modalities[:2]
            term = mmcore.AlignmentTerm(f"{a}-{b}", z[a], z[b], present[a] & present[b])
            return mmcore.Alignment([term], {f"{a}-{b}": torch.zeros(())})

        def term_names(self):
            a, b = context.modalities[:2]
            return (f"{a}-{b}",)

        def trained_pairs(self, observed):
            return set(observed)

    return Clashing()


def build_wordy_evaluator(config, context):
    return mmcore.evaluator(lambda split: {"wordy/score": "high"}, ("wordy/score",))


def build_plain_loss(config, context):
    """A loss with ``rows`` only: no logit_scale, no pair_rows (both optional)."""
    from torch import nn

    class Plain(nn.Module):
        def rows(self, query, candidates, targets, candidate_labels=None, candidate_valid=None, direction="forward",
                 term=None):
            return mmcore.info_nce_rows(query, candidates, targets, 10.0, None, candidate_valid)

    return Plain()


@mmcore.hookimpl
def mmcore_losses():
    return [mmcore.Component("not_a_loss", NoConfig, build_not_a_loss),
            mmcore.Component("plain_loss", NoConfig, build_plain_loss)]


@mmcore.hookimpl
def mmcore_encoders():
    return [mmcore.Component("wide_encoder", NoConfig, build_wide_encoder)]


@mmcore.hookimpl
def mmcore_anchor_strategies():
    return [mmcore.Component("lying_strategy", NoConfig, build_lying_strategy),
            mmcore.Component("clashing_strategy", NoConfig, build_clashing_strategy)]


@mmcore.hookimpl
def mmcore_evaluators():
    return [mmcore.Component("wordy_evaluator", NoConfig, build_wordy_evaluator)]
