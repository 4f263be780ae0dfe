"""TransVMamba: SS2D against a sequential per-direction reference, the backbone API, save/load and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification
from transmamba.modeling_transmamba import (
    TransVMambaBackbone,
    TransVMambaConfig,
    TransVMambaForImageClassification,
    TransVMambaModel,
)
from transmamba.modeling_transmamba.mixer import TransMambaMixer
from transmamba.modeling_transmamba.scan_orders import SS2D_DIRECTIONS, scan_permutation


def tiny(**overrides) -> TransVMambaConfig:
    fields = dict(image_size=16, patch_size=2, hidden_sizes=[8, 16, 24], depths=[1, 2, 1], mlp_ratio=2.0, state_size=4)
    return TransVMambaConfig(**{**fields, **overrides})


def test_ss2d_orders_on_3x4_grid():
    raster = torch.arange(12)
    columns = torch.tensor([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
    assert torch.equal(scan_permutation("row_major", 3, 4), raster)
    assert torch.equal(scan_permutation("row_major_reversed", 3, 4), raster.flip(0))
    assert torch.equal(scan_permutation("col_major", 3, 4), columns)
    assert torch.equal(scan_permutation("col_major_reversed", 3, 4), columns.flip(0))


def reference_ss2d(mixer: TransMambaMixer, hidden: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """SS2D written out: each direction gathered into its order, scanned step by step, scattered back, summed."""
    batch, length, _ = hidden.shape
    x, z = mixer.in_proj(hidden).chunk(2, dim=-1)
    image = x.transpose(1, 2).reshape(batch, -1, *grid)
    u = F.silu(mixer.conv(image)).flatten(2).transpose(1, 2)  # (batch, length, inner), raster
    total = torch.zeros_like(u)
    rank, state = mixer.rank, mixer.state
    for k, direction in enumerate(mixer.directions):
        perm = scan_permutation(direction, *grid)
        uk = u[:, perm]
        dt_low, B, C = (uk @ mixer.x_proj_weight[k].T).split([rank, state, state], dim=-1)
        delta = F.softplus(dt_low @ mixer.dt_proj_weight[k].T + mixer.dt_proj_bias[k])
        A = -torch.exp(mixer.A_log[k])
        h = torch.zeros(batch, u.shape[-1], state)
        outputs = []
        for t in range(length):
            h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * uk[:, t, :, None]
            outputs.append((h * C[:, t, None, :]).sum(-1) + mixer.D[k] * uk[:, t])
        y = torch.stack(outputs, dim=1)
        total = total.index_add(1, perm, y)  # back to raster positions
    return mixer.out_proj(mixer.out_norm(total) * F.silu(z))


def _perturbed_mixer(directions: list[str], backend: str) -> TransMambaMixer:
    config = tiny(scan_directions=directions, scan_backend=backend).stage_mixer_config(0)
    torch.manual_seed(0)
    mixer = TransMambaMixer(config)
    mixer.reset_ssm_parameters()
    with torch.no_grad():
        for param in mixer.parameters():  # off the structured init, so every tensor (LN too) matters
            param.add_(0.2 * torch.randn_like(param))
    return mixer


@pytest.mark.parametrize("backend", ["numba", "sequential"])
@pytest.mark.parametrize("directions", [[d] for d in SS2D_DIRECTIONS] + [list(SS2D_DIRECTIONS)])
def test_ss2d_mixer_equals_sequential_reference(backend, directions):
    mixer = _perturbed_mixer(directions, backend)
    grid = (3, 4)
    hidden = torch.randn(2, 12, 8, requires_grad=True)
    out, shares = mixer(hidden, grid, output_direction_outputs=True)
    hidden_ref = hidden.detach().clone().requires_grad_(True)
    expected = reference_ss2d(mixer, hidden_ref, grid)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # Each direction's share, taken back from its scan order to raster, adds up to the output.
    perms = torch.stack([scan_permutation(d, *grid) for d in directions])
    back = torch.zeros_like(out).unsqueeze(1).repeat(1, len(directions), 1, 1)
    back = back.scatter(2, perms[None, :, :, None].expand_as(shares), shares)
    torch.testing.assert_close(back.sum(1), out, rtol=1e-4, atol=1e-5)

    weights = torch.randn_like(out)
    params = [p for p in mixer.parameters()]
    grads = torch.autograd.grad((out * weights).sum(), [hidden, *params])
    grads_ref = torch.autograd.grad((expected * weights).sum(), [hidden_ref, *params])
    for name, mine, ref in zip(["input", *dict(mixer.named_parameters())], grads, grads_ref, strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-3, atol=1e-5, msg=f"gradient of {name}")


def test_one_parameter_set_per_direction():
    mixer = TransMambaMixer(tiny().stage_mixer_config(1))
    assert mixer.x_proj_weight.shape[0] == mixer.A_log.shape[0] == mixer.D.shape[0] == 4
    assert mixer.out_norm is not None and mixer.direction_B is None


def test_stages_shapes_and_backbone_api():
    config = tiny(num_labels=3)
    pixels = torch.randn(2, 3, 16, 16)
    model = TransVMambaForImageClassification(config).eval()
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True, output_direction_outputs=True)
    assert out.logits.shape == (2, 3)
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 8, 8, 8), (2, 8, 8, 8), (2, 16, 4, 4), (2, 24, 2, 2)]
    assert [tuple(d.shape) for d in out.direction_outputs] == [(2, 4, 64, 8)] + [(2, 4, 16, 16)] * 2 + [(2, 4, 4, 24)]

    backbone = TransVMambaBackbone(tiny(out_features=["stage1", "stage3"])).eval()
    assert backbone.stage_names == ["stem", "stage1", "stage2", "stage3"]
    assert backbone.out_indices == [1, 3] and backbone.channels == [8, 24]
    backbone.encoder.load_state_dict(model.vmamba.encoder.state_dict())
    with torch.no_grad():
        features = backbone(pixels, output_hidden_states=True)
    assert [tuple(f.shape) for f in features.feature_maps] == [(2, 8, 8, 8), (2, 24, 2, 2)]
    for mine, stage in zip(features.feature_maps, (1, 3), strict=True):  # the stage map, LayerNorm'd per pixel
        expected = F.layer_norm(out.hidden_states[stage].permute(0, 2, 3, 1), mine.shape[1:2], eps=1e-6)
        torch.testing.assert_close(mine, expected.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert len(features.hidden_states) == 4
    assert TransVMambaBackbone(tiny(out_indices=[-1])).out_features == ["stage3"]


def test_save_load_round_trip_through_the_auto_classes(tmp_path):
    model = TransVMambaForImageClassification(tiny(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "transvmamba"
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    pixels = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits, rtol=0, atol=0)
        base = AutoModel.from_pretrained(tmp_path).eval()
        assert isinstance(base, TransVMambaModel)
        torch.testing.assert_close(base(pixels).pooler_output, model.vmamba(pixels).pooler_output, rtol=0, atol=0)
        # AutoBackbone maps the config to our backbone; transformers 5.24's AutoBackbone.from_pretrained itself
        # rejects local folders (it asks the Hub whether the repo exists), see test_vmamba_remote.py.
        assert type(AutoBackbone.from_config(AutoConfig.from_pretrained(tmp_path))) is TransVMambaBackbone
        backbone = TransVMambaBackbone.from_pretrained(tmp_path, out_features=["stage2"]).eval()
        maps = model(pixels, output_hidden_states=True).hidden_states
        expected = F.layer_norm(maps[2].permute(0, 2, 3, 1), (16,), eps=1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(backbone(pixels).feature_maps[0], expected, rtol=1e-5, atol=1e-5)


def test_bad_image_size_gets_one_clear_message():
    with pytest.raises(ValueError, match=r"Image size 20x20 does not survive the downsampling.*multiples of 8"):
        tiny(image_size=20)
    model = TransVMambaForImageClassification(tiny()).eval()
    with pytest.raises(ValueError, match=r"Image size 12x16 does not survive the downsampling.*e.g. 8 or 16"):
        model(torch.randn(1, 3, 12, 16))


def test_out_features_naming_no_stage_gets_one_clear_message():
    with pytest.raises(ValueError, match=r"out_features \['stage7'\] name no stage.*stem, stage1, stage2, stage3"):
        tiny(out_features=["stage1", "stage7"])


def test_presets():
    tiny_t = TransVMambaConfig.from_preset("vmamba-t")
    assert (tiny_t.hidden_sizes, tiny_t.depths, tiny_t.num_hidden_layers) == ([96, 192, 384, 768], [2, 2, 9, 2], 15)
    assert tiny_t.stage_strides() == [4, 8, 16, 32] and tiny_t.hidden_size == 768
    with pytest.raises(ValueError, match="choose one of vmamba-t, vmamba-s"):
        TransVMambaConfig.from_preset("vmamba-x")
