"""`--mixer-init attention` on vision students: every tensor lands where `conversion/attention_init.py` says
(x rows of in_proj <- W_V, B/C rows of x_proj <- W_K/W_Q of head k through pinv(W_V), identity conv, the rest
untouched), for PlainMamba (one shared parameter set) and ViM (one set per direction), and the report says so."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import ViTConfig, ViTModel
from transmamba.conversion.cli import main
from transmamba.conversion.export import REPORT_NAME
from transmamba.conversion.teachers import load_teacher
from transmamba.modeling_transmamba import TransMambaForImageClassification

HEADS, HIDDEN, STATE, RANK = 2, 32, 8, 2  # head_dim 16 > state 8: B/C take head k's first 8 dims
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
        # x <- W_V on mixer channels 0..hidden-1; the other x channels and all of z keep the standard init
        torch.testing.assert_close(in_w[:HIDDEN], v.weight)
        torch.testing.assert_close(in_b[:HIDDEN], v.bias)
        torch.testing.assert_close(in_w[HIDDEN:], standard[p + "in_proj.weight"][HIDDEN:])
        torch.testing.assert_close(in_b[HIDDEN:], standard[p + "in_proj.bias"][HIDDEN:])
        assert x_proj.shape[0] == sets
        for s in range(sets):
            rows = slice(s * head_dim, s * head_dim + STATE)  # set s reads head s
            B, C = x_proj[s, RANK : RANK + STATE], x_proj[s, RANK + STATE :]
            # on x = W_V h: B x = W_K[head s, :N] h and C x = W_Q[head s, :N] h
            torch.testing.assert_close(B[:, :HIDDEN] @ v.weight, k.weight[rows], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(C[:, :HIDDEN] @ v.weight, q.weight[rows], atol=1e-4, rtol=1e-4)
            assert torch.count_nonzero(B[:, HIDDEN:]) == 0 and torch.count_nonzero(C[:, HIDDEN:]) == 0
        # dt rows, dt_proj, A, D untouched
        torch.testing.assert_close(x_proj[:, :RANK], standard[p + "x_proj_weight"][:, :RANK])
        for name in ("dt_proj_weight", "dt_proj_bias", "A_log", "D"):
            torch.testing.assert_close(ours[p + name], standard[p + name])
        # identity conv: one tap of 1 at the current token (centre of the 2-D kernel, last of the causal 1-D one)
        conv = ours[p + "conv.weight"]
        tap = conv[..., conv.shape[-2] // 2, conv.shape[-1] // 2] if conv.dim() == 4 else conv[..., -1]
        assert torch.all(tap == 1) and conv.sum() == conv.shape[0] and torch.all(ours[p + "conv.bias"] == 0)
        assert conv.shape[0] == inner * (1 if conv.dim() == 4 else sets)
        # out_proj and the rest of subcloning are the same as without the attention init
        torch.testing.assert_close(ours[p + "out_proj.weight"], standard[p + "out_proj.weight"])
        tensors = report["tensors"]
        assert tensors[p + "in_proj.weight"]["status"] == "sliced"
        assert tensors[p + "x_proj_weight"]["source"] == [names[id(t.weight)] for t in (k, q, v)]
        assert tensors[p + "in_proj.weight"]["source"] == [names[id(v.weight)]] and f".{i}." in names[id(v.weight)]
        assert ", ".join(f"set {s}: head {s}" for s in range(sets)) in tensors[p + "x_proj_weight"]["note"]
        assert tensors[p + "conv.weight"]["note"].startswith("identity")


def test_attention_init_is_a_convert_option_for_image_teachers(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--mixer-init" in capsys.readouterr().out
