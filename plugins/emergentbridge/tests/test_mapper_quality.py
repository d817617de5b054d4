"""The mapper-quality figures of experiments/mapper_quality.py against a hand computation on three-dimensional
unit vectors (the experiment's tables in README.md, "When the lift appears (issue 18)", rest on them)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "mapper_quality.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mapper_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mapper_quality_by_hand():
    e1, e2, e3 = torch.eye(3)
    z_a = torch.stack([e1, e2])
    z_b = torch.stack([e2, e3])
    predicted = torch.stack([(e1 + e2) / math.sqrt(2), e3])
    figures = load_script().mapper_quality(z_a, z_b, predicted)
    # cos(g_0, b_0) = 1/sqrt2, cos(g_1, b_1) = 1; z_a is orthogonal to z_b in both rows
    assert figures["cos_g"] == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert figures["cos_a"] == pytest.approx(0.0)
    # orthogonal to e1, g_0 and b_0 are both along e2; orthogonal to e2, both along e3
    assert figures["cos_g_perp"] == pytest.approx(1.0)
    # g_0 scores (1/sqrt2, 0) and g_1 (0, 1): both right; z_a_0 scores (0, 0) (tie: row 0, right), z_a_1 (1, 0)
    assert figures["r1_g"] == pytest.approx(1.0)
    assert figures["r1_a"] == pytest.approx(0.5)


def test_a_mapper_that_returns_the_anchor_adds_nothing():
    e1, e2, e3 = torch.eye(3)
    z_a = torch.stack([e1, e2])
    z_b = torch.stack([e2, e3])
    figures = load_script().mapper_quality(z_a, z_b, z_a.clone())
    assert figures["cos_g"] == figures["cos_a"] and figures["r1_g"] == figures["r1_a"]
    assert figures["cos_g_perp"] == 0.0  # nothing left orthogonal to z_a: the row counts 0
