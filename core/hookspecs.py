"""The hooks a plugin implements. Each returns a list of :class:`mmcore.Component`.

A plugin is a module registered under the ``mmcore`` entry-point group::

    # pyproject.toml
    [project.entry-points.mmcore]
    myplugin = "my_package.plugin"

    # my_package/plugin.py
    import attrs, mmcore

    @attrs.define
    class TwoLayerConfig:
        hidden: int = 256

    def build_two_layer(config, context):   # context: mmcore.EncoderContext
        import torch                         # import torch lazily: `mmcore --help` stays fast
        return torch.nn.Sequential(...)

    @mmcore.hookimpl
    def mmcore_encoders():
        return [mmcore.Component("two_layer", TwoLayerConfig, build_two_layer)]

Implement only the hooks you need. What ``build(config, context)`` receives and returns, per kind:

========================  =======================  ====================================================
hook                      context                  build returns
========================  =======================  ====================================================
``mmcore_encoders``       ``EncoderContext``       ``nn.Module``: ``[B, input_dim] -> [B, embed_dim]``
``mmcore_anchor_strategies`` ``AnchorContext``     ``nn.Module`` with ``forward(z, present, batch)
                                                   -> Alignment``; optionally ``trained_pairs(observed)``
``mmcore_losses``         ``LossContext``          ``nn.Module`` with ``rows(query, candidates,
                                                   targets, ...) -> [n]`` (see ``mmcore.info_nce_rows``)
``mmcore_evaluators``     ``None``                 callable ``(EmbeddedSplit) -> dict[str, float]``
``mmcore_datasets``       ``None``                 ``DatasetSplits``
========================  =======================  ====================================================
"""

import pluggy

hookspec = pluggy.HookspecMarker("mmcore")
hookimpl = pluggy.HookimplMarker("mmcore")


@hookspec
def mmcore_encoders():
    """Return encoders: per-modality networks into the shared space."""


@hookspec
def mmcore_anchor_strategies():
    """Return anchor strategies: what each modality is aligned to (a fixed modality, a centroid, a bridge...)."""


@hookspec
def mmcore_losses():
    """Return losses: row-wise contrastive objectives of queries against a candidate pool."""


@hookspec
def mmcore_evaluators():
    """Return evaluators: functions from the embedded test split to named metrics."""


@hookspec
def mmcore_datasets():
    """Return datasets: train/val/test splits of multimodal samples with presence masks."""


@hookspec
def mmcore_commands(subparsers):
    """Add subcommands to the ``mmcore`` command line (not a component kind: an extension of the CLI).

    ``subparsers`` is argparse's: ``p = subparsers.add_parser("align", help=...)``, add arguments, then
    ``p.set_defaults(func=handler)`` where ``handler(args) -> int`` is the exit status. Import heavy modules inside
    the handler, not here: this hook runs for every ``mmcore`` invocation, ``--help`` included.
    """
