"""Hierarchical WSAB: teacher tokens resampled to every stage's grid, compared in each scan's order; `transmamba
train` distils a TransVMamba student end to end (gradients reach student and calibration, never the teacher)."""

from __future__ import annotations

import pytest
import torch
from test_train import distill
from test_train_support import digits, save_teacher
from transmamba.modeling_transmamba import TransVMambaConfig, TransVMambaForImageClassification
from transmamba.modeling_transmamba.scan_orders import SS2D_DIRECTIONS, scan_permutations
from transmamba.trainers.combined import WSABLogitsDistillation
from transmamba.trainers.features import StudentFeatures, TeacherFeatures
from transmamba.trainers.wrapper import build_distiller
from transmamba.trainers.wsab_hierarchical import HierarchicalWSABLoss, resample, teacher_grid


def test_teacher_tokens_on_coarser_and_finer_grids():
    tokens = torch.randn(2, 1 + 16, 5)  # class token + a 4x4 grid
    grid = teacher_grid(tokens)
    assert grid.shape == (2, 5, 4, 4)
    torch.testing.assert_close(grid[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # raster order kept
    pooled = resample(grid, 2)  # coarser: each 2x2 block averaged
    torch.testing.assert_close(pooled[:, 1], tokens[:, 1 + torch.tensor([2, 3, 6, 7])].mean(1))
    finer = resample(grid, 8)
    assert finer.shape == (2, 64, 5)
    with pytest.raises(ValueError, match="square patch grid"):
        teacher_grid(torch.randn(1, 13, 5))  # 13 - (1, 2, 0, 5): no square


def test_teacher_tokens_meet_each_scan_in_its_order():
    """Shares that ARE the teacher tokens in each scan's order score 1 (loss 0); raster-ordered ones do not."""
    sides, dim = [4, 2], 6
    loss = HierarchicalWSABLoss([dim, dim], [1, 2], sides, dim, list(SS2D_DIRECTIONS))
    loss.calibration = torch.nn.ModuleList(torch.nn.Identity() for _ in range(3))  # widths equal the teacher's
    tokens = torch.randn(2, 1 + 16, dim)
    grid = teacher_grid(tokens)
    ordered, raster = [], []
    for stage, depth in enumerate([1, 2]):
        target = resample(grid, sides[stage])
        perm = scan_permutations(list(SS2D_DIRECTIONS), sides[stage], sides[stage])
        ordered += [target[:, perm]] * depth
        raster += [target[:, None].expand(-1, 4, -1, -1)] * depth
    perfect = loss(StudentFeatures(torch.zeros(2, 3), None, tuple(ordered)), TeacherFeatures(tokens))
    assert perfect.loss.abs() < 1e-5
    scrambled = loss(StudentFeatures(torch.zeros(2, 3), None, tuple(raster)), TeacherFeatures(tokens))
    assert scrambled.loss > 0.05
    weights = [v for k, v in perfect.logs.items() if k.startswith("layer_weight/row_major/")]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-5  # softmax over all blocks of all stages


def test_wsab_plus_logits_on_a_hierarchical_student_adds_both_parts():
    config = TransVMambaConfig(image_size=16, patch_size=2, hidden_sizes=[6, 6], depths=[1, 1], num_labels=3)
    combined = build_distiller("wsab+logits", config, 6, logits_weight=0.5, temperature=2.0)
    assert isinstance(combined, WSABLogitsDistillation) and isinstance(combined.wsab, HierarchicalWSABLoss)
    tokens, logits = torch.randn(2, 1 + 16, 6), torch.randn(2, 3)
    shares = tuple(torch.randn(2, 4, n, 6) for n in (64, 16))  # stage grids 8x8 and 4x4, four SS2D scans
    student = StudentFeatures(torch.randn(2, 3), None, shares)
    teacher = TeacherFeatures(tokens, logits=logits)
    wsab = combined.wsab(student, teacher).loss
    soft = torch.softmax(logits / 2, -1)
    kd = 4 * (soft * (soft.log() - torch.log_softmax(student.logits / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(combined(student, teacher).loss, wsab + 0.5 * kd)
    with pytest.raises(ValueError, match="not available for hierarchical"):
        build_distiller("feature", config, 6)


def test_transmamba_train_distils_a_vmamba_student(tmp_path):
    teacher = save_teacher(tmp_path / "teacher")  # ViT, 16 px, patch 4: a 4x4 grid
    config = TransVMambaConfig(
        image_size=16, patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], mlp_ratio=1.0, state_size=4, num_labels=10
    )
    TransVMambaForImageClassification(config).save_pretrained(tmp_path / "student")
    trainer = distill(teacher, str(tmp_path / "student"), digits(), tmp_path / "out", max_steps=2,
                      options={"max_train_samples": 16}, per_device_train_batch_size=8)  # fmt: skip
    assert isinstance(trainer.model.distiller, HierarchicalWSABLoss)
    assert len(trainer.model.distiller.calibration) == 2
    assert any("distill_loss" in row for row in trainer.state.log_history)
    model = trainer.model.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.compute_loss(model, batch).backward()
    assert all(p.grad is None for p in trainer.teacher.parameters())
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    saved = TransVMambaForImageClassification.from_pretrained(tmp_path / "out")
    assert saved.config.depths == [1, 1]
