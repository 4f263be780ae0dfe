"""The token-major mixer computes what the channel-major one did (issue 5), so checkpoints keep their meaning.

`channel_major_forward` is the mixer's forward before the token-major rewrite: every direction gathered with
index_select into (batch, K * inner, length), parameters expanded K times, one channel-major scan, an index_add back.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err, tiny_config
from test_mixer import make_mixer
from transmamba.modeling_transmamba.configuration_transmamba import PLAIN_MAMBA_8
from transmamba.modeling_transmamba.mixer import TransMambaMixer, _cached_orders, _orders
from transmamba.modeling_transmamba.selective_scan import selective_scan_sequential

STATE_KEYS = {
    "in_proj.weight", "in_proj.bias", "conv.weight", "conv.bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias",
    "A_log", "D", "out_proj.weight", "out_proj.bias",
}  # fmt: skip


def channel_major_forward(mixer: TransMambaMixer, hidden: torch.Tensor, grid: tuple[int, int]):
    batch, length, _ = hidden.shape
    k, inner, cfg = mixer.num_directions, mixer.inner, mixer.config
    perm, codes = _orders(mixer.directions, grid[0], grid[1], length)
    index = perm.reshape(-1)

    def expand(param: torch.Tensor) -> torch.Tensor:
        return param.expand(k, *param.shape[1:])

    x, z = mixer.in_proj(hidden).chunk(2, dim=-1)
    if cfg.conv_dim == 2:
        image = x.transpose(1, 2).reshape(batch, inner, grid[0], grid[1])
        x = F.silu(mixer.conv(image)).flatten(2).transpose(1, 2)
    xs, zs = (
        t.index_select(1, index).view(batch, k, length, inner).permute(0, 1, 3, 2).reshape(batch, k * inner, length)
        for t in (x, z)
    )
    if cfg.conv_dim == 1:
        weight, bias = mixer.conv.weight, mixer.conv.bias
        if weight.shape[0] != k * inner:
            weight, bias = weight.repeat(k, 1, 1), bias.repeat(k)
        conv = F.conv1d(xs, weight, bias, padding=weight.shape[-1] - 1, groups=xs.shape[1])  # causal: keep the head
        xs = F.silu(conv[..., :length])
    projected = torch.einsum("bkel,kre->bkrl", xs.view(batch, k, inner, length), expand(mixer.x_proj_weight))
    dt_low, B, C = projected.split([mixer.rank, mixer.state, mixer.state], dim=2)
    dt = torch.einsum("bkrl,ker->bkel", dt_low, expand(mixer.dt_proj_weight)).reshape(batch, k * inner, length)
    if mixer.direction_B is not None:
        B = B + mixer.direction_B[codes].transpose(1, 2)
    y = selective_scan_sequential(
        xs, dt, -torch.exp(expand(mixer.A_log).float()).reshape(k * inner, -1), B.contiguous(), C.contiguous(),
        expand(mixer.D).reshape(-1), z=zs, delta_bias=expand(mixer.dt_proj_bias).reshape(-1), delta_softplus=True,
    )  # fmt: skip
    y = y.view(batch, k, inner, length).transpose(2, 3)
    scale = 1.0 / k if cfg.combine_directions == "mean" else 1.0
    combined = y.new_zeros(batch, length, inner).index_add(1, index, y.reshape(batch, k * length, inner))
    directions = mixer.out_proj(y * scale)
    if mixer.out_proj.bias is not None:
        directions = directions - mixer.out_proj.bias * (1.0 - 1.0 / k)
    return mixer.out_proj(combined * scale), directions


@pytest.mark.parametrize("backend", ["numba", "sequential"])
@pytest.mark.parametrize(
    "preset,overrides,grid,length",
    [
        ("pmamba-t", {}, (3, 4), 12),
        ("pmamba-t", {"scan_directions": PLAIN_MAMBA_8}, (4, 3), 12),
        ("pmamba-t", {"share_ssm_params": False, "direction_aware_update": False}, (3, 4), 12),
        ("vim-t", {}, (4, 4), 17),
        ("vim-t", {"share_ssm_params": True}, (3, 4), 13),
    ],
    ids=["pmamba", "pmamba-8dir", "pmamba-own-params", "vim", "vim-shared-1d-conv"],
)
def test_mixer_equals_channel_major_mixer(preset, overrides, grid, length, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    mixer = make_mixer(tiny_config(preset, scan_backend=backend, **overrides)).train()
    assert set(mixer.state_dict()) <= STATE_KEYS | {"direction_B"}  # checkpoints keep their keys
    hidden = torch.randn(2, length, mixer.config.hidden_size, requires_grad=True)
    out, directions = mixer(hidden, grid, output_direction_outputs=True)
    plain, _ = mixer(hidden, grid)
    ref_out, ref_directions = channel_major_forward(mixer, hidden, grid)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(plain, ref_out) < 1e-5
    assert rel_err(directions, ref_directions) < 1e-5
    weights = torch.randn(out.shape), torch.randn(directions.shape)
    params = [hidden, *mixer.parameters()]
    grads = torch.autograd.grad((plain * weights[0]).sum() + (directions * weights[1]).sum(), params)
    ref_grads = torch.autograd.grad((ref_out * weights[0]).sum() + (ref_directions * weights[1]).sum(), params)
    names = ["hidden", *(name for name, _ in mixer.named_parameters())]
    for name, grad, ref in zip(names, grads, ref_grads, strict=True):
        assert rel_err(grad, ref) < 1e-4, name


def test_training_after_an_inference_mode_call():
    """The scan orders are cached: built under inference mode they would be unusable for autograd later."""
    mixer = make_mixer(tiny_config("pmamba-t", scan_backend="sequential"))
    hidden = torch.randn(1, 12, mixer.config.hidden_size)
    _cached_orders.cache_clear()
    with torch.inference_mode():
        mixer(hidden, (3, 4))
    out, _ = mixer(hidden.requires_grad_(), (3, 4))
    out.sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
