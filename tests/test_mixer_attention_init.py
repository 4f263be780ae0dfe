"""`--mixer-init attention` on vision students: every tensor lands where `conversion/attention_init.py` says
(x rows of in_proj <- W_V, B/C rows of x_proj <- W_K/W_Q of head k through the truncated pinv(W_V), identity conv,
open gate, D = 1/tokens, the rest untouched), for PlainMamba (one shared parameter set) and ViM (one set per
direction), and the report says so."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import ViTConfig, ViTModel
from transmamba.conversion.attention_init import OPEN_GATE_BIAS, PINV_RTOL
from transmamba.conversion.cli import main
from transmamba.conversion.export import REPORT_NAME, inherited_parameters
from transmamba.conversion.teachers import load_teacher
from transmamba.modeling_transmamba import TransMambaForImageClassification

HEADS, HIDDEN, STATE, RANK = 2, 32, 8, 2  # head_dim 16 > state 8: B/C take head k's first 8 dims
TOKENS = (32 // 8) ** 2  # the teacher's 32 px images in 8 px patches
SSM = f"state_size={STATE},time_step_rank={RANK},scan_backend=sequential"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    config = ViTConfig(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=128,
                       image_size=32, patch_size=8)  # fmt: skip
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
        for layer in model.layers:  # W_V with two near-null directions, as DINOv2's layer 0 has
            u, sigma, vh = torch.linalg.svd(layer.attention.v_proj.weight)
            sigma[-2:] = sigma[0] * torch.tensor([1e-3, 1e-5])
            layer.attention.v_proj.weight.copy_(u @ torch.diag(sigma) @ vh)
    folder = tmp_path_factory.mktemp("vit")
    model.save_pretrained(folder)
    return folder, model


def _convert(folder, output, student, init):
    spec = f"{student},hidden_size={HIDDEN},num_hidden_layers=2,{SSM}"
    assert main(["--teacher", str(folder), "--student", spec, "--output", str(output), "--mixer-init", init]) == 0
    model = TransMambaForImageClassification.from_pretrained(output)
    return model.state_dict(), json.loads((output / REPORT_NAME).read_text())


@pytest.mark.parametrize("student, sets", [("pmamba-t", 1), ("vim-t", 2)])
def test_attention_init_places_every_tensor(teacher, tmp_path, student, sets):
    folder, _ = teacher
    ours, report = _convert(folder, tmp_path / "attn", student, "attention")
    standard, standard_report = _convert(folder, tmp_path / "std", student, "standard")
    assert report["mixer_init"].startswith("attention-informed")
    assert standard_report["mixer_init"].startswith("standard")
    inner, head_dim = 2 * HIDDEN, HIDDEN // HEADS
    loaded = load_teacher(str(folder))
    names = loaded.parameter_names()
    for i, block in enumerate(loaded.blocks):
        q, k, v = block.q, block.k, block.v
        p = f"transmamba.layers.{i}.mixer."
        in_w, in_b, x_proj = ours[p + "in_proj.weight"], ours[p + "in_proj.bias"], ours[p + "x_proj_weight"]
        # x <- W_V on mixer channels 0..hidden-1; the other x channels keep the standard init
        torch.testing.assert_close(in_w[:HIDDEN], v.weight)
        torch.testing.assert_close(in_b[:HIDDEN], v.bias)
        torch.testing.assert_close(in_w[HIDDEN:inner], standard[p + "in_proj.weight"][HIDDEN:inner])
        torch.testing.assert_close(in_b[HIDDEN:inner], standard[p + "in_proj.bias"][HIDDEN:inner])
        # z: zero rows and a bias whose SiLU is 1, so the gate passes y unchanged
        assert torch.count_nonzero(in_w[inner:]) == 0 and torch.all(in_b[inner:] == OPEN_GATE_BIAS)
        torch.testing.assert_close(F.silu(in_b[inner:]), torch.ones(inner))
        assert x_proj.shape[0] == sets
        # W_V's right-singular directions: the kept ones (sigma >= PINV_RTOL * max) and the two near-null ones
        _, sigma, vh = torch.linalg.svd(v.weight)
        kept, dropped = vh[sigma >= PINV_RTOL * sigma[0]], vh[sigma < PINV_RTOL * sigma[0]]
        assert len(dropped) == 2
        for s in range(sets):
            rows = slice(s * head_dim, s * head_dim + STATE)  # set s reads head s
            B, C = x_proj[s, RANK : RANK + STATE], x_proj[s, RANK + STATE :]
            # on x = W_V h, h in the kept directions: B x = W_K[head s, :N] h and C x = W_Q[head s, :N] h
            torch.testing.assert_close(B[:, :HIDDEN] @ v.weight @ kept.T, k.weight[rows] @ kept.T, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(C[:, :HIDDEN] @ v.weight @ kept.T, q.weight[rows] @ kept.T, atol=1e-4, rtol=1e-4)
            # the near-null directions map to nothing, so B/C stay bounded by |W_K| / (PINV_RTOL * sigma_max)
            torch.testing.assert_close(B[:, :HIDDEN] @ v.weight @ dropped.T, torch.zeros(STATE, 2), atol=1e-5, rtol=0)
            bound = torch.linalg.matrix_norm(k.weight[rows], 2) / (PINV_RTOL * sigma[0])
            assert torch.linalg.matrix_norm(B[:, :HIDDEN], 2) <= bound * 1.001
            assert torch.count_nonzero(B[:, HIDDEN:]) == 0 and torch.count_nonzero(C[:, HIDDEN:]) == 0
        # D: a uniform attention's self weight; dt rows, dt_proj and A untouched
        tokens = TOKENS + int(student.startswith("vim"))  # ViM scans its class token too
        torch.testing.assert_close(ours[p + "D"], torch.full_like(ours[p + "D"], 1.0 / tokens))
        torch.testing.assert_close(x_proj[:, :RANK], standard[p + "x_proj_weight"][:, :RANK])
        for name in ("dt_proj_weight", "dt_proj_bias", "A_log"):
            torch.testing.assert_close(ours[p + name], standard[p + name])
        # identity conv: one tap of 1 at the current token (centre of the 2-D kernel, last of the causal 1-D one)
        conv = ours[p + "conv.weight"]
        tap = conv[..., conv.shape[-2] // 2, conv.shape[-1] // 2] if conv.dim() == 4 else conv[..., -1]
        assert torch.all(tap == 1) and conv.sum() == conv.shape[0] and torch.all(ours[p + "conv.bias"] == 0)
        assert conv.shape[0] == inner * (1 if conv.dim() == 4 else sets)
        # out_proj and the rest of subcloning are the same as without the attention init
        torch.testing.assert_close(ours[p + "out_proj.weight"], standard[p + "out_proj.weight"])
        tensors = report["tensors"]
        # derived from the teacher's weights, so inherited: they train at --inherited-lr-scale (measured better)
        mapped = {p + "in_proj.weight", p + "in_proj.bias", p + "x_proj_weight", p + "out_proj.weight"}
        assert {tensors[name]["status"] for name in mapped} == {"sliced"}
        assert mapped <= inherited_parameters(tmp_path / "attn")
        assert tensors[p + "x_proj_weight"]["source"] == [names[id(t.weight)] for t in (k, q, v)]
        assert tensors[p + "in_proj.weight"]["source"] == [names[id(v.weight)]] and f".{i}." in names[id(v.weight)]
        assert ", ".join(f"set {s}: head {s}" for s in range(sets)) in tensors[p + "x_proj_weight"]["note"]
        assert tensors[p + "conv.weight"]["note"].startswith("identity")
        assert "open gate" in tensors[p + "in_proj.weight"]["note"] and f"1/{tokens}" in tensors[p + "D"]["note"]


def test_attention_init_is_a_convert_option_for_image_teachers(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--mixer-init" in capsys.readouterr().out
