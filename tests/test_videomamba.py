"""TransVideoMamba: the (t n) bidirectional scan against a sequential reference, inflated subcloning placement,
interpolation, and one clear message per malformed clip or command line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, rel_err
from transformers import AutoModelForVideoClassification, ViTConfig, ViTModel
from transmamba.conversion.cli import main as convert_main
from transmamba.conversion.export import REPORT_NAME
from transmamba.conversion.subclone_video import inflate_patch_kernel, teacher_video_tokens
from transmamba.modeling_transmamba import TransMambaForVideoClassification, TransVideoMambaConfig

SPEC = (
    "videomamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2,state_size=4,time_step_rank=2,scan_backend=sequential"
)


def tiny_video(**overrides) -> TransVideoMambaConfig:
    fields = {**TINY, "num_hidden_layers": 2, "num_frames": 4, "tubelet_size": 2, **overrides}
    return TransVideoMambaConfig.from_preset("videomamba-t", **fields)


def _sequential_direction(mixer, x: torch.Tensor, k: int, reverse: bool) -> torch.Tensor:
    """Direction k of a ViM-style mixer as a plain loop over the tokens in visiting order (Mamba-1 recurrence)."""
    inner, state, rank = mixer.inner, mixer.state, mixer.rank
    xz = mixer.in_proj(x)
    u, z = xz[..., :inner], xz[..., inner:]
    order = torch.arange(x.shape[1]).flip(0) if reverse else torch.arange(x.shape[1])
    u, z = u[:, order], z[:, order]
    conv = mixer.conv.weight[k * inner : (k + 1) * inner]
    bias = mixer.conv.bias[k * inner : (k + 1) * inner]
    u = F.silu(F.conv1d(u.transpose(1, 2), conv, bias, padding=conv.shape[-1] - 1, groups=inner)[..., : x.shape[1]])
    u = u.transpose(1, 2)  # (batch, length, inner), visiting order
    proj = u @ mixer.x_proj_weight[k].t()
    dt, B, C = proj.split([rank, state, state], dim=-1)
    delta = F.softplus(dt @ mixer.dt_proj_weight[k].t() + mixer.dt_proj_bias[k])
    A = -torch.exp(mixer.A_log[k])
    h = x.new_zeros(x.shape[0], inner, state)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + mixer.D[k] * u[:, t])
    y = torch.stack(ys, 1) * F.silu(z)
    return y[:, order.argsort()]  # back to token positions


def test_spatio_temporal_scan_equals_per_direction_sequential_reference():
    """Both directions run over [cls, (t n)]: forward from the class token frame by frame, backward from the
    last frame's last patch; each one equals the loop, and their mean through out_proj is the mixer output."""
    model = TransMambaForVideoClassification(tiny_video()).eval()
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        tokens, (t, h, w) = model.transmamba.embeddings(clip)
        mixer = model.transmamba.layers[0].mixer
        x = model.transmamba.layers[0].layernorm_before(tokens)
        out, directions = mixer(x, (t * h, w), output_direction_outputs=True)
        forward = _sequential_direction(mixer, x, 0, reverse=False)
        backward = _sequential_direction(mixer, x, 1, reverse=True)
    assert tokens.shape[1] == 1 + t * h * w == 1 + 2 * 16
    assert rel_err(out, mixer.out_proj((forward + backward) / 2)) < 1e-5
    bias = mixer.out_proj.bias / 2
    assert rel_err(directions[:, 0], F.linear(forward / 2, mixer.out_proj.weight) + bias) < 1e-5
    assert rel_err(directions[:, 1], (F.linear(backward / 2, mixer.out_proj.weight) + bias).flip(1)) < 1e-5


def test_tokens_are_class_first_then_frame_by_frame():
    """A change in tubelet 1 only touches tokens 1 + n .. 1 + 2n of the embedding ((t n) order, class first)."""
    model = TransMambaForVideoClassification(tiny_video()).eval()
    clip = torch.randn(1, 4, 3, 32, 32)
    changed = clip.clone()
    changed[:, 2:4] += 1.0  # frames 2, 3 = tubelet 1
    with torch.no_grad():
        diff = (model.transmamba.embeddings(changed)[0] - model.transmamba.embeddings(clip)[0]).abs().sum(-1)[0]
    assert diff[:17].max() == 0 and diff[17:].min() > 0


@pytest.fixture(scope="module")
def vit_teacher(tmp_path_factory):
    torch.manual_seed(0)
    teacher = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                                 patch_size=8, intermediate_size=64))  # fmt: skip
    with torch.no_grad():
        for param in teacher.parameters():  # random norms and biases too: a misplaced tensor cannot hide
            param.normal_(0.0, 0.3).add_(1.0 if param.dim() == 1 else 0.0)
    path = tmp_path_factory.mktemp("teacher") / "vit"
    teacher.eval().save_pretrained(path)
    return path


@pytest.mark.parametrize("inflation", ["centre", "mean"])
def test_inflated_subcloning_placement_on_a_static_clip(vit_teacher, tmp_path, inflation):
    """Mixers and the teacher's attention zeroed, a static clip: every frame's tokens are the teacher's."""
    argv = ["--teacher", str(vit_teacher), "--student", f"{SPEC},num_frames=4,tubelet_size=2", "--output",
            str(tmp_path / "out"), "--inflation", inflation]  # fmt: skip
    assert convert_main(argv) == 0
    student = AutoModelForVideoClassification.from_pretrained(tmp_path / "out").eval()
    assert isinstance(student, TransMambaForVideoClassification)
    teacher = ViTModel.from_pretrained(vit_teacher).eval()
    clip = torch.randn(2, 1, 3, 32, 32).expand(2, 4, 3, 32, 32)
    with torch.no_grad():
        mixing = student.transmamba(clip).last_hidden_state
        for layer in student.transmamba.layers:
            layer.mixer.out_proj.weight.zero_()
            layer.mixer.out_proj.bias.zero_()
        for module in teacher.modules():
            if hasattr(module, "o_proj"):  # transformers 5 names; found by module so a rename cannot skip it
                module.o_proj.weight.zero_()
                module.o_proj.bias.zero_()
        ours = student.transmamba(clip).last_hidden_state
        theirs = teacher(pixel_values=clip.flatten(0, 1)).last_hidden_state
    target = teacher_video_tokens(theirs, batch=2, tubelet_size=2, num_patches=16)
    torch.testing.assert_close(ours, target, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[:, 1:17], theirs[::4, 1:], rtol=1e-5, atol=1e-5)  # per frame, raster order
    assert not torch.allclose(mixing, ours)  # with the mixers on, tokens differ: the check has teeth
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert report["tensors"]["transmamba.embeddings.temporal_position_embeddings"]["status"] == "initialised"
    assert student.transmamba.embeddings.temporal_position_embeddings.abs().max() == 0
    kernel = student.transmamba.embeddings.patch_embeddings.projection.weight
    teacher_kernel = teacher.embeddings.patch_embeddings.projection.weight
    if inflation == "centre":
        torch.testing.assert_close(kernel[:, :, 1], teacher_kernel)
        assert kernel[:, :, 0].abs().max() == 0
    else:
        torch.testing.assert_close(kernel.sum(2), teacher_kernel)


def test_inflation_rejects_unknown_choice():
    with pytest.raises(ValueError, match="centre, mean"):
        inflate_patch_kernel(torch.zeros(2, 3, 4, 4), 2, "random")


def test_interpolation_to_another_frame_count_and_size():
    model = TransMambaForVideoClassification(tiny_video()).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 8, 3, 48, 48), interpolate_pos_encoding=True).logits
    assert logits.shape == (1, 5)
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(torch.randn(1, 8, 3, 32, 32))


def test_bad_clips_get_one_clear_message():
    model = TransMambaForVideoClassification(tiny_video()).eval()
    with pytest.raises(ValueError, match=r"4-D tensor .* add a frame axis"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="3 frames, not divisible by the tubelet size 2"):
        model(torch.randn(2, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="not divisible by tubelet_size"):
        tiny_video(num_frames=5)


def test_convert_refuses_bad_video_specs_before_loading(vit_teacher, tmp_path, capsys):
    for spec, expected in [
        (f"{SPEC},num_frames=6,tubelet_size=4", "num_frames 6 is not divisible by tubelet_size 4"),
        ("videomamba-t,hidden_size=64", "wider than the teacher's 32"),
        ("videomamba-t,frames=8", "Bad student override"),
    ]:
        code = convert_main(["--teacher", str(vit_teacher), "--student", spec, "--output", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert not (tmp_path / "x").exists()


def test_convert_pushes_a_video_student_up_to_the_network_boundary(vit_teacher, tmp_path, capsys, monkeypatch):
    """--dry-run lists the files and the repo; a real push offline keeps the complete folder and says how to push."""
    from huggingface_hub import constants

    base = ["--teacher", str(vit_teacher), "--student", f"{SPEC},num_frames=4,tubelet_size=2", "--output"]
    assert convert_main([*base, str(tmp_path / "x"), "--dry-run"]) == 2  # before any weight is read
    assert "pass --push-to-hub ORG/NAME too" in capsys.readouterr().err and not (tmp_path / "x").exists()

    assert convert_main([*base, str(tmp_path / "a"), "--push-to-hub", "me/trans-videomamba-t", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload" in out and "https://huggingface.co/me/trans-videomamba-t" in out
    assert all(f"  {name}  (" in out for name in ("config.json", "model.safetensors", "README.md", REPORT_NAME))
    assert "me/trans-videomamba-t" in (tmp_path / "a" / "README.md").read_text()  # the card's usage names the repo

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert convert_main([*base, str(tmp_path / "b"), "--push-to-hub", "me/trans-videomamba-t"]) == 1
    err = capsys.readouterr().err
    assert "offline mode (HF_HUB_OFFLINE=1)" in err and "Traceback" not in err
    assert f"hf upload me/trans-videomamba-t {tmp_path / 'b'}" in err
    AutoModelForVideoClassification.from_pretrained(tmp_path / "b")  # the folder is complete


def _videomamba_checkpoint(path, layers=2, inner=64, state=4, rank=2, kernel=4, hidden=32):
    """A file laid out like OpenGVLab/VideoMamba's checkpoints: ``{"model": state_dict, "epoch": ...}``, bimamba
    mixers ``layers.{i}.mixer.*`` with the backward direction suffixed ``_b``, random values."""
    generator = torch.Generator().manual_seed(7)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    state_dict = {"patch_embed.proj.weight": rand(hidden, 3, 1, 8, 8), "norm_f.weight": rand(hidden)}
    for i in range(layers):
        m = f"layers.{i}.mixer."
        for b in ("", "_b"):
            state_dict |= {f"{m}conv1d{b}.weight": rand(inner, 1, kernel), f"{m}conv1d{b}.bias": rand(inner),
                           f"{m}x_proj{b}.weight": rand(rank + 2 * state, inner),
                           f"{m}dt_proj{b}.weight": rand(inner, rank), f"{m}dt_proj{b}.bias": rand(inner),
                           f"{m}{'A_b_log' if b else 'A_log'}": rand(inner, state),
                           f"{m}D{b}": rand(inner)}  # fmt: skip
        state_dict |= {f"{m}in_proj.weight": rand(2 * inner, hidden), f"layers.{i}.norm.weight": rand(hidden)}
    torch.save({"model": state_dict, "epoch": 3}, path)
    return state_dict


def _videomamba_branch(mixer, layer: dict, x: torch.Tensor, backward: bool) -> torch.Tensor:
    """One VideoMamba direction from the checkpoint's own tensors, as its mixer computes it (the ``_b`` branch runs
    on the flipped sequence), with our in_proj: a loop over the tokens, before out_proj."""
    b = "_b" if backward else ""
    u, z = mixer.in_proj(x).chunk(2, dim=-1)
    if backward:
        u, z = u.flip(1), z.flip(1)
    weight, kernel = layer[f"conv1d{b}.weight"], layer[f"conv1d{b}.weight"].shape[-1]
    u = F.silu(F.conv1d(u.transpose(1, 2), weight, layer[f"conv1d{b}.bias"], padding=kernel - 1,
                        groups=weight.shape[0])[..., : x.shape[1]]).transpose(1, 2)  # fmt: skip
    rank, state = layer[f"dt_proj{b}.weight"].shape[1], layer["A_log"].shape[1]
    dt, B, C = (u @ layer[f"x_proj{b}.weight"].t()).split([rank, state, state], dim=-1)
    delta = F.softplus(dt @ layer[f"dt_proj{b}.weight"].t() + layer[f"dt_proj{b}.bias"])
    A = -torch.exp(layer["A_b_log" if backward else "A_log"])
    h, ys = x.new_zeros(x.shape[0], u.shape[-1], state), []
    for t in range(x.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + layer[f"D{b}"] * u[:, t])
    y = torch.stack(ys, 1) * F.silu(z)
    return y.flip(1) if backward else y


def test_ssm_from_a_videomamba_checkpoint_computes_its_directions(vit_teacher, tmp_path, capsys):
    """--ssm-from: every direction's SSM is the checkpoint's, and each layer's mixer computes what VideoMamba's
    forward and ``_b`` branches compute from those tensors; in_proj and the teacher's out_proj are untouched."""
    checkpoint = _videomamba_checkpoint(tmp_path / "videomamba_t.pth")
    base = ["--teacher", str(vit_teacher), "--student", f"{SPEC},num_frames=4,tubelet_size=2", "--output"]
    assert convert_main([*base, str(tmp_path / "plain")]) == 0
    assert convert_main([*base, str(tmp_path / "ssm"), "--ssm-from", str(tmp_path / "videomamba_t.pth")]) == 0
    plain = AutoModelForVideoClassification.from_pretrained(tmp_path / "plain").eval()
    student = AutoModelForVideoClassification.from_pretrained(tmp_path / "ssm").eval()
    x = torch.randn(2, 9, 32)
    for i, (ours, before) in enumerate(zip(student.transmamba.layers, plain.transmamba.layers, strict=True)):
        mixer, prefix = ours.mixer, f"layers.{i}.mixer."
        layer = {k.removeprefix(prefix): v for k, v in checkpoint.items() if k.startswith(prefix)}
        torch.testing.assert_close(mixer.A_log[1], layer["A_b_log"])
        assert not torch.equal(mixer.A_log, before.mixer.A_log)
        torch.testing.assert_close(mixer.out_proj.weight, before.mixer.out_proj.weight)  # the teacher's
        torch.testing.assert_close(mixer.in_proj.weight, before.mixer.in_proj.weight)  # not the checkpoint's
        with torch.no_grad():
            expected = mixer.out_proj((_videomamba_branch(mixer, layer, x, False)
                                       + _videomamba_branch(mixer, layer, x, True)) / 2)  # fmt: skip
            assert rel_err(mixer(x, (1, 9))[0], expected) < 1e-5
    report = json.loads((tmp_path / "ssm" / REPORT_NAME).read_text())
    entry = report["tensors"]["transmamba.layers.1.mixer.dt_proj_bias"]
    assert entry["status"] == "copied"
    assert entry["source"] == ["layers.1.mixer.dt_proj.bias", "layers.1.mixer.dt_proj_b.bias"]
    assert report["ssm_init"] == "from the VideoMamba checkpoint videomamba_t.pth"
    assert "SSM: from the VideoMamba checkpoint videomamba_t.pth" in (tmp_path / "ssm" / "README.md").read_text()


def test_ssm_from_refuses_a_checkpoint_that_does_not_fit(vit_teacher, tmp_path, capsys):
    base = ["--teacher", str(vit_teacher), "--student", f"{SPEC},num_frames=4,tubelet_size=2", "--output",
            str(tmp_path / "x"), "--ssm-from"]  # fmt: skip
    _videomamba_checkpoint(tmp_path / "wide.pth", inner=128)
    _videomamba_checkpoint(tmp_path / "shallow.pth", layers=1)
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}}, tmp_path / "vit.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    for name, expected in [
        ("missing.pth", "no such file"),
        ("broken.pth", "cannot be read as a checkpoint"),
        ("vit.pth", "is not a VideoMamba checkpoint"),
        ("wide.pth", "A_log is (128, 4), needs (64, 4)"),
        ("shallow.pth", "has 1 layers; the student needs 2"),
    ]:
        code = convert_main([*base, str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert not (tmp_path / "x").exists()
