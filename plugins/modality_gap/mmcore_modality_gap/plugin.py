"""Evaluator ``modality_gap``: how far apart the modalities sit in the shared space, and whether post-hoc remedies
close the gap (Liang et al. 2022, "Mind the Gap"; Yi, Douady & Chen 2025, "Decipher the Modality Gap").

Metrics (``a``, ``b`` modalities; unordered pairs ``a-b`` in recipe order, ordered pairs ``a->b``)::

    modality_gap/<m>/erank                 effective rank of modality m (test rows where m is present)
    modality_gap/<m>/k99                   directions holding 99% of the energy (k95 for energy = 0.95, ...)
    modality_gap/<a>-<b>/gap               |mean(z_a) - mean(z_b)| on test rows having both
    modality_gap/<a>-<b>/mean_angle_deg    angle between the two mean vectors
    modality_gap/<a>-<b>/cos_true          mean cos of true pairs; cos_random: of a seeded derangement
    modality_gap/<a>-<b>/align_error       mean(1 - cos) of true pairs
    modality_gap/<a>-<b>/angle_min_deg     smallest principal angle between the principal subspaces (also
                                           angle_mean_deg, angle_max_deg)
    modality_gap/<a>-<b>/shared_dims       directions kept by the shared-space projection
    modality_gap/<a>-><b>/R@1               Recall@1 as is (equals retrieval/<a>-><b>/R@1)
    modality_gap/<a>-><b>/R@1_shared        after shared-space projection
    modality_gap/<a>-><b>/R@1_rotated       after hyperplane rotation (Procrustes)
    modality_gap/<a>-<b>/rotation_fit_on_test, shared_fit_on_test
                                           1 when a remedy had to be fitted on the test split (see below)
    modality_gap/<trained|emergent>/<key>  means over pairs, split like the ``retrieval`` evaluator

Fitting the remedies: the rotation is fitted on the ``reference`` (training) rows where both modalities are present,
and the shared directions on the reference rows of each modality, when the reference has at least ``min_fit_pairs``
such rows; remedies are then applied to the test split. Otherwise (no reference, as from ``TrainedModel.embed_split``,
or a pair never observed together in training) they are fitted on the test rows themselves, which is optimistic;
``*_fit_on_test = 1`` says so.
"""

import itertools

import attrs

import mmcore


def _unit_interval(instance, attribute, value):
    if not 0.0 < value <= 1.0:
        raise ValueError(f"'{attribute.name}' must be in (0, 1]: {value}")


def _angle(instance, attribute, value):
    if not 0.0 < value <= 90.0:
        raise ValueError(f"'{attribute.name}' must be in (0, 90] degrees: {value}")


@attrs.frozen
class ModalityGapConfig:
    """``energy``: fraction of ``sum(s**2)`` kept by ``k`` and the principal subspaces (0.99 -> ``k99``);
    ``center``: centre each modality before its spectrum (default: raw second moment, see ``measures``);
    ``shared_max_angle_deg``: principal pairs below this angle form the shared space; ``shared_rank``: if > 0, keep
    that many smallest-angle pairs instead; ``min_fit_pairs``: reference rows needed to fit a remedy there rather
    than on the test split; ``seed``: of the random-pair derangement."""

    energy: float = attrs.field(default=0.99, validator=_unit_interval)
    center: bool = False
    shared_max_angle_deg: float = attrs.field(default=45.0, validator=_angle)
    shared_rank: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    min_fit_pairs: int = attrs.field(default=50, validator=attrs.validators.ge(2))
    seed: int = 0


SUMMARISED = ("gap", "mean_angle_deg", "cos_true", "align_error", "angle_min_deg", "R@1", "R@1_shared", "R@1_rotated")


def _fit_rows(split, rows_of, minimum: int):
    """``(source split, rows, fitted_on_test)``: the reference when it has ``minimum`` rows, else the test split."""
    reference = split.reference
    if reference is not None:
        rows = rows_of(reference)
        if int(rows.sum()) >= minimum:
            return reference, rows, False
    return split, rows_of(split), True


def _pair_metrics(split, a: str, b: str, config: ModalityGapConfig) -> tuple[dict, dict]:
    """``({key: value} of the unordered pair, {(q, g): {key: value}} of its two ordered pairs)``."""
    from .measures import gap, pair_cosines, principal_angles, principal_basis
    from .remedies import procrustes_rotation, project, shared_directions

    rows = split.present[a] & split.present[b]
    za, zb = split.z[a][rows], split.z[b][rows]
    pair = {**gap(za, zb), **pair_cosines(za, zb, config.seed)}
    ordered = {(a, b): {"R@1": mmcore.recall_at_1(za, zb)}, (b, a): {"R@1": mmcore.recall_at_1(zb, za)}}

    theta = principal_angles(principal_basis(za, config.energy, config.center),
                             principal_basis(zb, config.energy, config.center))
    if len(theta):
        pair.update(angle_min_deg=float(theta.min()), angle_mean_deg=float(theta.mean()),
                    angle_max_deg=float(theta.max()))

    # shared-space projection: principal subspaces of each modality, from the reference when it is big enough
    source, fit_a, on_test_a = _fit_rows(split, lambda s: s.present[a], config.min_fit_pairs)
    basis_a = principal_basis(source.z[a][fit_a], config.energy, config.center)
    source, fit_b, on_test_b = _fit_rows(split, lambda s: s.present[b], config.min_fit_pairs)
    basis_b = principal_basis(source.z[b][fit_b], config.energy, config.center)
    shared = shared_directions(basis_a, basis_b, config.shared_max_angle_deg, config.shared_rank)
    pair["shared_dims"] = float(shared.shape[1])
    pair["shared_fit_on_test"] = float(on_test_a or on_test_b)
    if shared.shape[1]:
        pa, pb = project(za, shared), project(zb, shared)
        ordered[a, b]["R@1_shared"] = mmcore.recall_at_1(pa, pb)
        ordered[b, a]["R@1_shared"] = mmcore.recall_at_1(pb, pa)

    # hyperplane rotation: b rotated onto a, fitted on paired reference rows when there are enough
    source, fit, on_test = _fit_rows(split, lambda s: s.present[a] & s.present[b], config.min_fit_pairs)
    rotation = procrustes_rotation(source.z[b][fit], source.z[a][fit])
    zb_rotated = project(zb, rotation)  # re-normalised (R is orthogonal, so only rounding changes)
    pair["rotation_fit_on_test"] = float(on_test)
    pair["rotation_fit_pairs"] = float(fit.sum())
    ordered[a, b]["R@1_rotated"] = mmcore.recall_at_1(za, zb_rotated)
    ordered[b, a]["R@1_rotated"] = mmcore.recall_at_1(zb_rotated, za)
    return pair, ordered


def modality_gap(split, config: ModalityGapConfig = ModalityGapConfig()) -> dict:
    """All metrics of the module docstring for an :class:`mmcore.EmbeddedSplit`."""
    from .measures import collapse

    metrics, by_pair = {}, []
    k_name = f"k{round(config.energy * 100)}"
    for m in split.modalities:
        if int(split.present[m].sum()) >= 2:
            values = collapse(split.z[m][split.present[m]], config.energy, config.center)
            metrics[f"modality_gap/{m}/erank"] = values["erank"]
            metrics[f"modality_gap/{m}/{k_name}"] = float(values["k"])
    for a, b in itertools.combinations(split.modalities, 2):
        if int((split.present[a] & split.present[b]).sum()) < 2:
            continue
        pair, ordered = _pair_metrics(split, a, b, config)
        metrics.update({f"modality_gap/{a}-{b}/{key}": value for key, value in pair.items()})
        for (q, g), values in ordered.items():
            metrics.update({f"modality_gap/{q}->{g}/{key}": value for key, value in values.items()})
        by_pair += [((a, b), pair), *ordered.items()]
    # means over pairs (ordered pairs for the R@1 keys), split like the retrieval evaluator's
    mmcore.summarise_pairs(metrics, by_pair, "modality_gap", split.trained_pairs, keys=SUMMARISED)
    return metrics


SUMMARY = ("modality_gap/trained/gap", "modality_gap/emergent/gap")


def build_modality_gap(config: ModalityGapConfig, context=None):
    return mmcore.evaluator(lambda split: modality_gap(split, config), SUMMARY)


@mmcore.hookimpl
def mmcore_evaluators():
    return [mmcore.Component("modality_gap", ModalityGapConfig, build_modality_gap,
                             "modality gap, collapse, principal angles, shared-space and rotation remedies")]
