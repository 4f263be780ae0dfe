"""The recipe of `transmamba run`: the teacher-quality gate warns (and the card says so) when the teacher is not
clearly better than a scratch student; WSAB + logits KD equals hand-computed values; bad options fail clearly."""

from __future__ import annotations

import math
import re

import pytest
import torch
from transformers.testing_utils import CaptureLogger
from transmamba.model_cards.card import build_card
from transmamba.model_cards.results import RunResults
from transmamba.modeling_transmamba import TransMambaConfig
from transmamba.trainers.features import StudentFeatures, TeacherFeatures
from transmamba.trainers.wrapper import build_distiller

from transmamba import recipe
from transmamba.recipe import RecipeOptions, teacher_gate


def test_gate_warns_when_the_teacher_is_weaker_than_the_student():
    with CaptureLogger(recipe.logger) as captured:
        gate = teacher_gate(teacher_top1=0.6350, scratch_top1=0.7070, margin_points=2.0, eval_images=2000)
    assert not gate["passed"] and gate["margin_points"] == -7.2
    assert "teacher-quality gate FAILED" in captured.out
    assert "teacher 63.50 % vs scratch student 70.70 %" in captured.out and "margin -7.20 points" in captured.out
    assert "leave no room" not in gate["message"]


def test_gate_names_a_ceiling_when_the_scratch_student_is_near_perfect():
    gate = teacher_gate(teacher_top1=0.9944, scratch_top1=0.9889, margin_points=2.0, eval_images=360)
    assert not gate["passed"] and "already at 98.89 %" in gate["message"] and "leave no room" in gate["message"]


@pytest.mark.parametrize("teacher, passed", [(0.7170, False), (0.7270, True), (0.83, True)])
def test_gate_needs_the_margin(teacher, passed):
    with CaptureLogger(recipe.logger) as captured:
        gate = teacher_gate(teacher_top1=teacher, scratch_top1=0.7070, margin_points=2.0, eval_images=100)
    assert gate["passed"] is passed
    assert ("FAILED" in captured.out) is not passed


def _results(gate: dict, distillation: str = "wsab+logits") -> RunResults:
    return RunResults.from_dict({
        "format": "transmamba-results/1", "model_name": "m", "license": None, "repo_id": None,
        "teacher": {"source": "dinov2", "class": "Dinov2ForImageClassification", "trained_here": False},
        "student": {"family": "PlainMamba"},
        "dataset": {"name": "fashion_mnist", "train_size": 5000, "eval_size": 2000, "train_split": "train",
                    "eval_split": "test"},
        "budget": {"steps": 150, "distillation": distillation},
        "accuracy": {"teacher": gate["teacher_top1"], "scratch": gate["scratch_top1"], "transmamba": 0.70},
        "teacher_gate": gate,
    })  # fmt: skip


def test_card_records_a_failed_gate_in_numbers():
    failed = teacher_gate(teacher_top1=0.6350, scratch_top1=0.7070, margin_points=2.0, eval_images=2000)
    text = build_card(_results(failed)).text
    assert "**Warning: teacher-quality gate FAILED: teacher 63.50 % vs scratch student 70.70 %" in text
    assert "subcloned + WSAB + logits KD" in text
    passed = teacher_gate(teacher_top1=0.83, scratch_top1=0.7070, margin_points=2.0, eval_images=2000)
    text = build_card(_results(passed)).text
    assert "Teacher-quality gate: passed (teacher 83.00 % vs scratch student 70.70 %" in text and "Warning" not in text


@pytest.mark.parametrize("distillation", ["logits", "wsab", "wsab+logits", "feature", "none"])
def test_card_describes_the_loss_the_model_had(distillation):
    gate = teacher_gate(teacher_top1=0.83, scratch_top1=0.7070, margin_points=2.0, eval_images=2000)
    method = build_card(_results(gate, distillation)).text.split("## Method", 1)[1].split("## Data", 1)[0]
    assert ("calibration MLP maps the direction's mixer output" in method) is distillation.startswith("wsab")
    assert ("teacher head's logits" in method) is distillation.endswith("logits")
    assert ("(stage 2): none: the student trains on the task loss only" in method) is (distillation == "none")


def test_card_names_the_wsab_layer_weighting():
    gate = teacher_gate(teacher_top1=0.83, scratch_top1=0.7070, margin_points=2.0, eval_images=2000)
    results = _results(gate, "wsab")
    results.budget.update(weighting="uniform", alpha=0.5)
    assert "| Distillation | wsab, uniform layer weights, α = 0.5 |" in build_card(results).text
    results.budget.update(distillation="logits")  # no WSAB, no layer weights to name
    assert "| Distillation | logits, α = 0.5 |" in build_card(results).text
    results.budget.update(distillation="feature")  # `transmamba run` records no metric: it always uses cosine
    assert "| Distillation | feature, cosine, α = 0.5 |" in build_card(results).text
    results.budget.update(feature_metric="mse")  # `transmamba train --feature_metric mse`
    assert "| Distillation | feature, mse, α = 0.5 |" in build_card(results).text


def test_wsab_plus_logits_matches_hand_computed_values():
    """Two layers, two directions, 2x2 grid, width 2. Calibration MLPs with zero weights output their last bias b_l
    for every token, and every teacher patch token is t = (1, 1): s_l = cos(b_l, t) in each direction."""
    config = TransMambaConfig(hidden_size=2, num_hidden_layers=2, scan_directions=["rows", "rows_reversed"],
                              image_size=4, patch_size=2, num_labels=2)  # fmt: skip
    distiller = build_distiller("wsab+logits", config, teacher_dim=2, temperature=2.0, logits_weight=0.5)
    with torch.no_grad():
        for layer, bias in zip(distiller.wsab.calibration, ([1.0, 0.0], [1.0, 1.0]), strict=True):
            for linear in (layer.fc1, layer.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
            layer.fc2.bias.copy_(torch.tensor(bias))
    directions = tuple(torch.randn(1, 2, 4, 2) for _ in range(2))  # ignored by the zeroed calibration
    student = StudentFeatures(logits=torch.tensor([[0.0, 0.0]]), direction_outputs=directions)
    tokens = torch.cat([torch.randn(1, 1, 2), torch.ones(1, 4, 2)], dim=1)  # class token first, then the patches
    teacher = TeacherFeatures(tokens=tokens, logits=torch.tensor([[math.log(3.0), 0.0]]))
    out = distiller(student, teacher)

    s = [1 / math.sqrt(2), 1.0]  # cos((1, 0), (1, 1)), cos((1, 1), (1, 1))
    w0 = math.exp(1 - s[0]) / (math.exp(1 - s[0]) + math.exp(1 - s[1]))  # softmax over layers of (1 - s) / tau
    wsab = 2 * (w0 * (1 - s[0]) + (1 - w0) * (1 - s[1]))  # two directions
    p = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]  # softmax(teacher / T), T = 2
    kd = 4 * sum(pi * math.log(pi / 0.5) for pi in p)  # T^2 KL(p || uniform student)
    assert out.logs["wsab_loss"].item() == pytest.approx(wsab, abs=1e-5)
    assert out.logs["kd_loss"].item() == pytest.approx(kd, abs=1e-5)
    assert out.loss.item() == pytest.approx(wsab + 0.5 * kd, abs=1e-5)
    assert out.loss.item() == pytest.approx(0.33549 + 0.5 * 0.145336, abs=1e-4)  # the same numbers, by hand


@pytest.mark.parametrize("options, message", [
    ({"distillation": "wsab+feature"}, "--distillation must be one of"),
    ({"mixer_init": "random"}, "--mixer-init must be one of"),
    ({"weighting": "softmax"}, "--weighting must be one of misaligned, aligned, uniform, got 'softmax'"),
    ({"teacher_learning_rate": 0.0}, "--teacher-learning-rate must be positive"),
    ({"teacher_warmup_ratio": 1.0}, "--teacher-warmup-ratio must be in [0, 1)"),
    ({"logits_weight": -1.0}, "--logits-weight must be at least 0"),
    ({"inherited_lr_scale": 0.0}, "--inherited-lr-scale must be in (0, 1]"),
    ({"inherited_lr_scale": 2.0}, "--inherited-lr-scale must be in (0, 1]"),
])  # fmt: skip
def test_bad_recipe_options_fail_clearly(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RecipeOptions(**options)


def test_pretrained_teachers_get_their_own_defaults():
    options = RecipeOptions()
    assert (options.teacher_lr(True), options.teacher_warmup(True)) == (1e-4, 0.1)
    assert (options.teacher_lr(False), options.teacher_warmup(False)) == (1e-3, 0.05)
