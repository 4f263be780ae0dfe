"""Stage 1 subcloning: every copied tensor lands where it belongs, narrow students keep the chosen slices, the three
importance methods behave, and bad input fails early with one clear message."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    BertConfig,
    BertModel,
    DeiTConfig,
    DeiTForImageClassificationWithTeacher,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
)
from transmamba.conversion.cli import main
from transmamba.conversion.export import REPORT_NAME
from transmamba.conversion.importance import finetune, finetune_delta_movement, select_indices
from transmamba.conversion.teachers import load_teacher
from transmamba.modeling_transmamba import TransMambaForImageClassification

from transmamba.data import load_image_dataset, pixel_batches, processor_for_size

SSM = "state_size=4,time_step_rank=2,scan_backend=sequential"
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Random norms, biases and layer scales too: a tensor copied to the wrong place cannot go unnoticed."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3).add_(1.0 if param.dim() == 1 else 0.0)
    return model.eval()


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("teachers")
    built = {
        "vit": ViTForImageClassification(ViTConfig(**SHAPE, intermediate_size=64, num_labels=3)),
        "deit": DeiTForImageClassificationWithTeacher(DeiTConfig(**SHAPE, intermediate_size=64, num_labels=3)),
        "dinov2": Dinov2Model(Dinov2Config(**SHAPE, mlp_ratio=2, layerscale_value=0.5)),
    }
    built["vit"].config.id2label = {0: "cat", 1: "dog", 2: "fox"}
    built["vit"].config.label2id = {"cat": 0, "dog": 1, "fox": 2}
    paths = {}
    for name, model in built.items():
        _randomise(model).save_pretrained(root / name)
        paths[name] = root / name
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(root / "bert")
    paths["bert"] = root / "bert"
    # config only, no weights: a check that passes here provably ran before any weights were read
    ViTConfig(**SHAPE, intermediate_size=64, num_labels=3).save_pretrained(root / "vit-config-only")
    paths["config_only"] = root / "vit-config-only"
    return paths


def _convert(teacher, output, student: str, *extra: str) -> int:
    return main(["--teacher", str(teacher), "--student", f"{student},{SSM}", "--output", str(output), *extra])


def _zero_mixers_and_attention(student, teacher) -> None:
    with torch.no_grad():
        for layer in student.transmamba.layers:
            layer.mixer.out_proj.weight.zero_()
            layer.mixer.out_proj.bias.zero_()
        for module in teacher.modules():
            if hasattr(module, "o_proj"):
                module.o_proj.weight.zero_()
                module.o_proj.bias.zero_()


def _pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("name", "student", "teacher_tokens"),
    [
        ("vit", "vim-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2", "cls+patches"),
        ("deit", "vim-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2", "cls+patches"),
        ("dinov2", "pmamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2", "patches"),
    ],
)
def test_placement_with_mixers_and_attention_zeroed(teachers, tmp_path, name, student, teacher_tokens):
    """With token mixing off on both sides, every token evolves alone through copied weights: identical states."""
    assert _convert(teachers[name], tmp_path / "out", student) == 0
    student_model = TransMambaForImageClassification.from_pretrained(tmp_path / "out").eval()
    auto = AutoModel if name == "dinov2" else AutoModelForImageClassification
    teacher = auto.from_pretrained(teachers[name]).eval()
    pixels = _pixels()
    with torch.no_grad():
        mixing = student_model(pixels).logits
    _zero_mixers_and_attention(student_model, teacher)
    with torch.no_grad():
        ours = student_model(pixels, output_hidden_states=True)
        theirs = teacher(pixel_values=pixels, output_hidden_states=True)
    prefix = 2 if name == "deit" else 1  # DeiT: class + distillation token
    num_patches = 16
    middle = num_patches // 2
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 3
    for mine, ref in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        if teacher_tokens == "cls+patches":
            patches = torch.cat([mine[:, :middle], mine[:, middle + 1 :]], dim=1)
            torch.testing.assert_close(mine[:, middle], ref[:, 0], rtol=1e-5, atol=1e-5)
        else:
            patches = mine
        torch.testing.assert_close(patches, ref[:, prefix:], rtol=1e-5, atol=1e-5)
    if name == "vit":
        torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)
        assert student_model.config.id2label == {0: "cat", 1: "dog", 2: "fox"}
    if name == "deit":  # the class-token head (cls_classifier) is the one copied
        torch.testing.assert_close(ours.logits, theirs.cls_logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixing, ours.logits)  # the check has teeth: with the mixers on, outputs differ
    assert student_model.config.layer_norm_eps == teacher.config.layer_norm_eps


def test_dinov2_layer_scale_is_folded(teachers, tmp_path):
    assert (
        _convert(teachers["dinov2"], tmp_path / "out", "pmamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2") == 0
    )
    student = TransMambaForImageClassification.from_pretrained(tmp_path / "out")
    teacher = AutoModel.from_pretrained(teachers["dinov2"])
    layer, block = student.transmamba.layers[1], teacher.encoder.layer[1]
    lam1, lam2 = block.layer_scale1.lambda1, block.layer_scale2.lambda1
    torch.testing.assert_close(layer.mixer.out_proj.weight[:, :32], block.attention.o_proj.weight * lam1[:, None])
    torch.testing.assert_close(layer.mlp.fc2.bias, block.mlp.fc2.bias * lam2)
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert "lambda2 folded" in report["tensors"]["transmamba.layers.1.mlp.fc2.weight"]["note"]
    assert report["head"].startswith("initialised")


@pytest.mark.parametrize("width", [24, 8])  # mixer width 2C = 48 > 32 (extra columns zero), 16 < 32 (first columns)
def test_narrow_student_copies_the_chosen_slices(teachers, tmp_path, width):
    student = f"vim-t,hidden_size={width},num_hidden_layers=1,mlp_ratio=1"
    assert _convert(teachers["vit"], tmp_path / "out", student) == 0
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    r = torch.tensor(report["importance"]["residual_indices"])
    m = torch.tensor(report["importance"]["mlp_indices"][0])
    assert report["importance"]["method"] == "magnitude" and len(r) == width and len(m) == width
    model = TransMambaForImageClassification.from_pretrained(tmp_path / "out")
    teacher = ViTForImageClassification.from_pretrained(teachers["vit"])
    t, s = teacher.vit, model.transmamba
    block, layer = t.layers[0], s.layers[0]
    expected = {
        "transmamba.embeddings.patch_embeddings.projection.weight": t.embeddings.patch_embeddings.projection.weight[r],
        "transmamba.embeddings.cls_token": t.embeddings.cls_token[..., r],
        "transmamba.embeddings.position_embeddings": t.embeddings.position_embeddings[..., r],
        "transmamba.layers.0.layernorm_before.weight": block.layernorm_before.weight[r],
        "transmamba.layers.0.mlp.fc1.weight": block.mlp.fc1.weight[m][:, r],
        "transmamba.layers.0.mlp.fc1.bias": block.mlp.fc1.bias[m],
        "transmamba.layers.0.mlp.fc2.weight": block.mlp.fc2.weight[r][:, m],
        "transmamba.layers.0.mixer.out_proj.bias": block.attention.o_proj.bias[r],
        "transmamba.layernorm.bias": t.layernorm.bias[r],
        "classifier.weight": teacher.classifier.weight[:, r],
    }
    state = model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, msg=key)
        assert report["tensors"][key]["status"] == "sliced", key
        assert "magnitude" in report["tensors"][key]["index_source"], key
    cols = min(2 * width, 32)
    out_proj = layer.mixer.out_proj.weight
    torch.testing.assert_close(out_proj[:, :cols], block.attention.o_proj.weight[r][:, :cols])
    assert (out_proj[:, cols:] == 0).all()
    assert report["tensors"]["classifier.bias"]["status"] == "copied"
    assert report["tensors"]["transmamba.layers.0.mixer.A_log"]["status"] == "initialised"
    assert set(report["tensors"]) == set(state)  # every student tensor is accounted for


@pytest.fixture(scope="module")
def digit_batches() -> list:
    data = load_image_dataset("digits")
    processor = processor_for_size(ViTImageProcessorPil(), 32)
    return pixel_batches(data["train"], processor, batch_size=8, num_batches=2)


def test_importance_methods_pick_different_valid_deterministic_sets(teachers, digit_batches):
    teacher = load_teacher(str(teachers["vit"]))
    picks = {}
    for method in ("magnitude", "activation", "finetune-delta"):
        first = select_indices(teacher, method, 16, 32, 2, digit_batches, seed=0)
        again = select_indices(teacher, method, 16, 32, 2, digit_batches, seed=0)
        for chosen, size, limit in [(first.residual, 16, 32)] + [(m, 32, 64) for m in first.mlp]:
            assert len(chosen) == size and len(set(chosen.tolist())) == size
            assert 0 <= int(chosen.min()) and int(chosen.max()) < limit
            assert torch.equal(chosen, chosen.sort().values)
        assert torch.equal(first.residual, again.residual), method
        assert all(torch.equal(a, b) for a, b in zip(first.mlp, again.mlp, strict=True)), method
        picks[method] = tuple(first.residual.tolist())
    assert len(set(picks.values())) == 3, picks


def test_finetune_delta_trains_then_keeps_least_moved(teachers, digit_batches):
    teacher = load_teacher(str(teachers["vit"]))
    original = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    delta, losses = finetune(teacher, digit_batches, lr=1e-3, seed=0)
    o_proj = teacher.blocks[0].attn_out.weight
    assert len(losses) == len(digit_batches)
    assert delta[id(o_proj)].abs().max() > 1e-4  # it trained
    for key, value in teacher.model.state_dict().items():  # and gave the teacher its weights back
        assert torch.equal(value, original[key]), key
    moved, mlp_moved, _ = finetune_delta_movement(teacher, digit_batches, 2, lr=1e-3, seed=0)
    chosen = select_indices(teacher, "finetune-delta", 16, 32, 2, digit_batches, lr=1e-3, seed=0)
    least = set(torch.argsort(moved, stable=True)[:16].tolist())
    assert set(chosen.residual.tolist()) == least
    assert set(chosen.mlp[1].tolist()) == set(torch.argsort(mlp_moved[1], stable=True)[:32].tolist())
    kept, dropped = moved[chosen.residual], moved[[i for i in range(32) if i not in least]]
    assert kept.max() <= dropped.min()


def _one_error(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected in err, err


@pytest.mark.parametrize(
    ("student", "expected"),
    [
        ("pmamba-t,hidden_size=64", "wider than the teacher's 32"),
        ("pmamba-t,hidden_size=32,num_hidden_layers=5", "deeper than the teacher's 2"),
        ("pmamba-t,hidden_size=32,patch_size=4", "patch_size=4 does not match the teacher's 8"),
        ("pmamba-x", "Unknown student preset 'pmamba-x'"),
        ("pmamba-t,hidden_sise=16", "Bad student override 'hidden_sise=16'"),
    ],
)
def test_bad_student_fails_before_loading_weights(teachers, tmp_path, capsys, student, expected):
    argv = ["--teacher", str(teachers["config_only"]), "--student", student, "--output", str(tmp_path / "out")]
    _one_error(capsys, argv, expected)
    assert not (tmp_path / "out").exists()


def test_bad_teacher_and_existing_output(teachers, tmp_path, capsys):
    out = tmp_path / "out"
    _one_error(capsys, ["--teacher", str(teachers["bert"]), "--student", "pmamba-t", "--output", str(out)], "'bert'")
    out.mkdir()
    argv = ["--teacher", str(teachers["config_only"]), "--student", "pmamba-t", "--output", str(out)]
    _one_error(capsys, argv, "already exists; pass --overwrite")
    argv = ["--teacher", str(teachers["config_only"]), "--student", "pmamba-t,hidden_size=16,num_hidden_layers=2",
            "--output", str(tmp_path / "b"), "--importance", "activation"]  # fmt: skip
    _one_error(capsys, argv, "needs images: pass --data")


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = ["--teacher", "--student", "--output", "--importance", "--data", "--num-batches", "--batch-size",
             "--finetune-lr", "--num-labels", "--base-model", "--push-to-hub", "--private", "--dry-run", "--overwrite",
             "--seed"]  # fmt: skip
    for flag in flags:
        assert flag in text, flag
    assert "pmamba-s,num_hidden_layers=6,hidden_size=256" in text


def test_activation_from_the_command_line_and_labels_from_data(teachers, tmp_path):
    """A headless teacher (DINOv2) gets a fresh head sized and named by --data; activation reads its batches."""
    argv = ["--importance", "activation", "--data", "digits", "--num-batches", "2", "--batch-size", "4"]
    assert _convert(teachers["dinov2"], tmp_path / "out", "pmamba-t,hidden_size=16,num_hidden_layers=1", *argv) == 0
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["importance"]["method"] == "activation" and report["importance"]["data"] == "digits"
    assert report["importance"]["batches"] == 2
    assert report["tensors"]["classifier.weight"]["status"] == "initialised"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {str(i): str(i) for i in range(10)}
