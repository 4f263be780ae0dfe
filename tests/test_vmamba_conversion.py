"""Subcloning a ViT into a hierarchical student: the teacher's blocks land in the stage at its stride, narrower
stages keep the chosen slices, everything else is initialised, and bad shapes fail with one message."""

from __future__ import annotations

import json

import pytest
import torch
from test_conversion import _one_error, _randomise
from transformers import AutoModel, Dinov2Config, Dinov2Model, ViTConfig, ViTForImageClassification
from transmamba.conversion.cli import main
from transmamba.conversion.export import REPORT_NAME
from transmamba.conversion.teachers import load_teacher
from transmamba.modeling_transmamba import TransVMambaForImageClassification

# Teacher: width 32, patch 8, 2 blocks. Student strides 2/4/8/16: stage 3 (index 2) sits at the teacher's stride.
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
STUDENT = "vmamba-t,patch_size=2,hidden_sizes=[8,16,{w},48],depths=[1,1,2,1],mlp_ratio=2,state_size=4"


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("vmamba_teachers")
    built = {
        "dinov2": Dinov2Model(Dinov2Config(**SHAPE, mlp_ratio=2, layerscale_value=0.5)),
        "vit": ViTForImageClassification(ViTConfig(**SHAPE, intermediate_size=64, num_labels=3)),
    }
    for name, model in built.items():
        _randomise(model).save_pretrained(root / name)
    ViTConfig(**SHAPE, intermediate_size=64).save_pretrained(root / "config_only")
    return {name: root / name for name in (*built, "config_only")}


def _convert(teacher, output, student: str) -> int:
    return main(["--teacher", str(teacher), "--student", student, "--output", str(output)])


def test_placement_teacher_blocks_equal_student_stage_blocks(teachers, tmp_path):
    """Token mixing off on both sides: each stage-3 block maps the teacher's tokens exactly as the teacher block."""
    assert _convert(teachers["dinov2"], tmp_path / "out", STUDENT.format(w=32)) == 0
    student = TransVMambaForImageClassification.from_pretrained(tmp_path / "out").eval()
    teacher = AutoModel.from_pretrained(teachers["dinov2"]).eval()
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["recipe"].startswith("teacher blocks 0..1 -> stage 3 (stride 8, width 32)")
    stage = student.vmamba.encoder.stages[2]
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = teacher(pixel_values=pixels, output_hidden_states=True).hidden_states[0][:, 1:]
        mixing, _ = stage.layers[0](tokens, (4, 4))
        for layer in stage.layers:
            layer.mixer.out_proj.weight.zero_()
            layer.mixer.out_proj.bias.zero_()
        for block in teacher.encoder.layer:
            block.attention.o_proj.weight.zero_()
            block.attention.o_proj.bias.zero_()
        theirs = teacher(pixel_values=pixels, output_hidden_states=True).hidden_states
        for i, layer in enumerate(stage.layers):
            ours, _ = layer(theirs[i][:, 1:], (4, 4))
            torch.testing.assert_close(ours, theirs[i + 1][:, 1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixing, ours)  # the check has teeth: with the mixers on, outputs differ
    statuses = {name: entry["status"] for name, entry in report["tensors"].items()}
    copied = {name for name, status in statuses.items() if status != "initialised"}
    assert copied and all(name.startswith("vmamba.encoder.stages.2.") for name in copied)
    assert all(".mixer.in_proj." not in n and "A_log" not in n and "out_norm" not in n for n in copied)
    assert statuses["vmamba.encoder.stem.projection.weight"] == "initialised"
    assert statuses["classifier.weight"] == "initialised"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "vmamba" in card and "stage 3, teacher blocks 0..1" in card


def test_narrow_stage_keeps_the_chosen_slices(teachers, tmp_path):
    assert _convert(teachers["vit"], tmp_path / "out", STUDENT.format(w=24).replace("mlp_ratio=2", "mlp_ratio=1")) == 0
    student = TransVMambaForImageClassification.from_pretrained(tmp_path / "out")
    teacher = load_teacher(str(teachers["vit"]))
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    r = torch.tensor(report["importance"]["residual_indices"])
    m = torch.tensor(report["importance"]["mlp_indices"][1])
    assert len(r) == 24 and len(m) == 24
    layer, block = student.vmamba.encoder.stages[2].layers[1], teacher.blocks[1]
    torch.testing.assert_close(layer.mlp.fc1.weight, block.fc1.weight[m][:, r])
    torch.testing.assert_close(layer.mlp.fc2.weight, block.fc2.weight[r][:, m])
    torch.testing.assert_close(layer.layernorm_before.weight, block.norm_before.weight[r])
    torch.testing.assert_close(layer.mixer.out_proj.weight[:, :32], block.attn_out.weight[r])
    assert torch.count_nonzero(layer.mixer.out_proj.weight[:, 32:]) == 0  # mixer width 48 > 32: the rest silent
    assert report["tensors"]["vmamba.encoder.stages.2.layers.1.mlp.fc1.weight"]["status"] == "sliced"


@pytest.mark.parametrize(
    ("student", "expected"),
    [
        ("vmamba-t,image_size=100", "Image size 100x100 does not survive the downsampling"),
        ("vmamba-t,hidden_sizes=[8,16,32,48],depths=[1,5,1,1]", "Stage 2 (the one at the teacher's stride) has 5"),
        ("vmamba-t,image_size=64,hidden_sizes=[64,128,256,512]", "Every student stage is wider than the teacher"),
        ('vmamba-t,out_features=["stage9"]', "out_features ['stage9'] name no stage"),
        ("vmamba-t,widths=[1]", "Bad student override 'widths=[1]'"),
    ],
)
def test_bad_vmamba_student_fails_before_loading_weights(teachers, tmp_path, capsys, student, expected):
    argv = ["--teacher", str(teachers["config_only"]), "--student", student, "--output", str(tmp_path / "out")]
    _one_error(capsys, argv, expected)
    assert not (tmp_path / "out").exists()
