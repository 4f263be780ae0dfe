"""The WSAB loss on small hand-built tensors: values, adaptive weights, scan orders, class-token handling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transmamba.trainers.baselines import FeatureDistillation, LogitsDistillation
from transmamba.trainers.features import StudentFeatures, TeacherFeatures, align_teacher_tokens
from transmamba.trainers.wsab import WSABLoss


def identity_wsab(num_layers: int, directions: list[str], grid: tuple[int, int], cls: bool, **options) -> WSABLoss:
    """WSAB with identity calibrations (student width = teacher width), so every cosine can be worked out by hand."""
    loss = WSABLoss(num_layers, 2, 2, directions, grid, cls, **options)
    loss.calibration = nn.ModuleList(nn.Identity() for _ in range(num_layers))
    return loss


def run(loss: WSABLoss, teacher_tokens: torch.Tensor, *layers: torch.Tensor):
    student = StudentFeatures(logits=torch.zeros(1, 3), direction_outputs=layers)
    return loss(student, TeacherFeatures(tokens=teacher_tokens))


# A teacher sequence [cls, p0, p1, p2]; 2-D features so cosines are angles we can read.
CLS = [0.0, -1.0]
PATCHES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
TEACHER = torch.cat([torch.tensor([CLS]), PATCHES])[None]
LAYER1 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])[None, None]  # cosines 1, 0, -1 with the patches


def test_values_and_adaptive_weights_favour_the_less_aligned_layer():
    # Layer 0 equals the teacher's patches (s = 1); layer 1 has cosines 1, 0, -1 (s = 0). Grid 1x3, no class token.
    layer0 = PATCHES[None, None]
    layer1 = LAYER1
    e = math.e
    for weighting, tau, expected_w1 in [
        ("misaligned", 1.0, e / (1 + e)),  # softmax([1 - 1, 1 - 0]) -> the worse layer weighs more
        ("misaligned", 0.5, e**2 / (1 + e**2)),  # sharper with a lower temperature
        ("aligned", 1.0, 1 / (1 + e)),  # the opposite sign, for ablation
        ("uniform", 1.0, 0.5),
    ]:
        out = run(identity_wsab(2, ["forward"], (1, 3), False, weighting=weighting, tau=tau), TEACHER, layer0, layer1)
        # L = w0 (1 - 1) + w1 (1 - 0) = w1
        assert out.loss.item() == pytest.approx(expected_w1, abs=1e-6), weighting
        assert out.logs["layer_weight/forward/1"].item() == pytest.approx(expected_w1, abs=1e-6)
        assert out.logs["layer_weight/forward/0"].item() == pytest.approx(1 - expected_w1, abs=1e-6)
        assert out.logs["distill_loss/forward"].item() == pytest.approx(expected_w1, abs=1e-6)


def test_weights_carry_no_gradient_and_the_similarities_do():
    layer0 = PATCHES[None, None].clone().requires_grad_(True)
    layer1 = LAYER1.clone().requires_grad_(True)
    run(identity_wsab(2, ["forward"], (1, 3), False), TEACHER, layer0, layer1).loss.backward()
    # Layer 0 sits at the maximum of cos: zero gradient. Layer 1 is pulled towards the teacher.
    assert layer0.grad.abs().max().item() < 1e-6
    assert layer1.grad.abs().max().item() > 1e-3


def test_backward_scan_is_compared_with_the_reversed_teacher():
    grid = (1, 3)
    loss = identity_wsab(1, ["forward", "backward"], grid, False)
    # Each direction's output is in its scan order: the backward scan visits p2, p1, p0.
    matched = torch.stack([PATCHES, PATCHES.flip(0)])[None]
    out = run(loss, TEACHER, matched)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    # Backward output left in raster order: cos(p0, p2), cos(p1, p1), cos(p2, p0) = 1/√2, 1, 1/√2.
    unreversed = torch.stack([PATCHES, PATCHES])[None]
    out = run(loss, TEACHER, unreversed)
    expected = 1 - (2 / math.sqrt(2) + 1) / 3
    assert out.logs["distill_loss/backward"].item() == pytest.approx(expected, abs=1e-6)
    assert out.logs["distill_loss/forward"].item() == pytest.approx(0.0, abs=1e-6)


def test_zigzag_rows_order_on_a_2x2_grid():
    teacher = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]])  # cls, p0..p3
    patches = teacher[0, 1:]
    loss = identity_wsab(1, ["rows", "rows_reversed"], (2, 2), False)
    # Row snake: p0, p1, then row 1 right-to-left: p3, p2; its reverse p2, p3, p1, p0.
    snake = patches[[0, 1, 3, 2]]
    out = run(loss, teacher, torch.stack([snake, snake.flip(0)])[None])
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    raster = torch.stack([patches, patches.flip(0)])[None]  # rows direction left in raster order: p2/p3 swapped
    assert run(loss, teacher, raster).logs["distill_loss/rows"].item() > 0.1


def test_class_token_meets_only_the_class_token():
    # ViM on a 2x2 grid: student sequence p0, p1, cls, p2, p3 (class token at num_patches // 2).
    teacher = torch.tensor([[[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]]])
    cls, patches = teacher[0, 0], teacher[0, 1:]
    aligned = torch.cat([patches[:2], cls[None], patches[2:]])
    assert torch.equal(align_teacher_tokens(teacher, 4, True)[0], aligned)
    flipped_cls = aligned.clone()
    flipped_cls[2] = -cls  # patches match (cos 1), class token opposite (cos -1)
    contributions = torch.stack([flipped_cls, flipped_cls.flip(0)])[None]
    for cls_weight, s in [(None, 0.8 * 1 + 0.2 * -1), (0.25, 0.75 * 1 + 0.25 * -1), (0.0, 1.0)]:
        loss = identity_wsab(1, ["forward", "backward"], (2, 2), True, cls_weight=cls_weight)
        out = run(loss, teacher, contributions)
        for direction in ("forward", "backward"):
            assert out.logs[f"distill_loss/{direction}"].item() == pytest.approx(1 - s, abs=1e-6), cls_weight


def test_prefix_tokens_are_dropped_for_students_without_a_class_token():
    # A DeiT-style teacher: cls and distillation tokens before the patches.
    teacher = torch.arange(12.0).view(1, 6, 2)
    assert torch.equal(align_teacher_tokens(teacher, 4, False), teacher[:, 2:])
    assert torch.equal(align_teacher_tokens(teacher, 4, True)[0, 2], teacher[0, 0])
    with pytest.raises(ValueError, match="same patch grid"):
        align_teacher_tokens(teacher, 9, False)


def test_calibration_pads_student_features_to_the_teacher_width():
    loss = WSABLoss(3, 4, 6, ["forward", "backward"], (2, 2), True)
    layers = [torch.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3)]
    out = loss(StudentFeatures(torch.zeros(2, 3), direction_outputs=layers), TeacherFeatures(torch.randn(2, 5, 6)))
    out.loss.backward()
    assert 0 < out.loss.item() < 2 * 2  # each direction's loss is a convex mix of (1 - s) in [0, 2]
    assert all(layer.grad.abs().sum() > 0 for layer in layers)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    weights = torch.tensor([[out.logs[f"layer_weight/{d}/{i}"] for i in range(3)] for d in ("forward", "backward")])
    assert torch.allclose(weights.sum(1), torch.ones(2))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="weighting"):
        WSABLoss(1, 2, 2, ["forward"], (1, 3), False, weighting="inverse")
    with pytest.raises(ValueError, match="tau"):
        WSABLoss(1, 2, 2, ["forward"], (1, 3), False, tau=0.0)
    with pytest.raises(ValueError, match="output_direction_outputs"):
        run(identity_wsab(2, ["forward"], (1, 3), False), TEACHER, PATCHES[None, None])


def test_feature_baseline_compares_the_last_hidden_state_token_by_token():
    teacher = TEACHER
    for metric, expected in [("cosine", 1 - (1 + 0 + -1) / 3), ("mse", ((PATCHES - LAYER1[0, 0]) ** 2).mean())]:
        loss = FeatureDistillation(2, 2, 3, False, metric)
        loss.calibration = nn.Identity()
        out = loss(StudentFeatures(torch.zeros(1, 3), last_hidden_state=LAYER1[0]), TeacherFeatures(teacher))
        assert out.loss.item() == pytest.approx(float(expected), abs=1e-6), metric


def test_logits_baseline_is_temperature_scaled_kl():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    t = 2.0
    p = torch.softmax(teacher / t, dim=-1)[0]  # teacher at temperature 2 vs the student's uniform (0.5, 0.5)
    expected = t * t * (p * (p / 0.5).log()).sum()
    out = LogitsDistillation(t)(StudentFeatures(student), TeacherFeatures(logits=teacher))
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert LogitsDistillation(t)(StudentFeatures(teacher), TeacherFeatures(logits=teacher)).loss.item() < 1e-7
