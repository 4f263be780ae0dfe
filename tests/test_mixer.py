"""Scan orders and the mixer: hand-checked permutations, transformers' MambaMixer as oracle, per-direction outputs."""

from __future__ import annotations

import pytest
import torch
from conftest import rel_err, tiny_config
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer
from transmamba.modeling_transmamba.configuration_transmamba import PLAIN_MAMBA_4, PLAIN_MAMBA_8
from transmamba.modeling_transmamba.mixer import TransMambaMixer
from transmamba.modeling_transmamba.scan_orders import (
    MOVE_DOWN,
    MOVE_LEFT,
    MOVE_RIGHT,
    MOVE_START,
    MOVE_UP,
    move_codes,
    scan_permutation,
    scan_permutations,
)

# 3x4 grid, raster indices:
#   0  1  2  3
#   4  5  6  7
#   8  9 10 11
EXPECTED_3x4 = {
    "rows": [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11],
    "cols": [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3],
    "rows_tr": [3, 2, 1, 0, 4, 5, 6, 7, 11, 10, 9, 8],
    "cols_bl": [8, 4, 0, 1, 5, 9, 10, 6, 2, 3, 7, 11],
}


@pytest.mark.parametrize("direction", list(EXPECTED_3x4))
def test_snake_orders_on_3x4_grid(direction):
    expected = torch.tensor(EXPECTED_3x4[direction])
    assert torch.equal(scan_permutation(direction, 3, 4), expected)
    assert torch.equal(scan_permutation(f"{direction}_reversed", 3, 4), expected.flip(0))


@pytest.mark.parametrize("height,width", [(3, 4), (4, 3), (2, 2), (5, 5), (14, 14), (1, 5)])
def test_plain_mamba_direction_sets_are_distinct_permutations(height, width):
    perms = scan_permutations(PLAIN_MAMBA_8, height, width)
    assert perms.shape == (8, height * width)
    for perm in perms:
        assert torch.equal(perm.sort().values, torch.arange(height * width))
    if min(height, width) > 1:
        assert len({tuple(p.tolist()) for p in perms}) == 8
    assert torch.equal(scan_permutations(PLAIN_MAMBA_4, height, width), perms[:4])


def test_one_d_orders_cover_the_whole_sequence():
    """ViM's sequence has a class token: 1-D orders take the length, not the grid."""
    assert torch.equal(scan_permutation("forward", 2, 2, length=5), torch.arange(5))
    assert torch.equal(scan_permutation("backward", 2, 2, length=5), torch.arange(5).flip(0))


def test_move_codes_hand_checked():
    S, R, L, U, D = MOVE_START, MOVE_RIGHT, MOVE_LEFT, MOVE_UP, MOVE_DOWN
    perms = scan_permutations(["rows", "rows_reversed", "cols", "cols_bl"], 3, 4)
    codes = move_codes(perms, width=4)
    assert codes[0].tolist() == [S, R, R, R, D, L, L, L, D, R, R, R]
    assert codes[1].tolist() == [S, L, L, L, U, R, R, R, U, L, L, L]
    assert codes[2].tolist() == [S, D, D, R, U, U, R, D, D, R, U, U]
    assert codes[3].tolist() == [S, U, U, R, D, D, R, U, U, R, D, D]


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="choose from"):
        scan_permutation("diagonal", 3, 4)


def oracle_config(**overrides):
    """One forward direction, 1-D causal conv, own SSM set, no direction table: exactly Mamba-1's mixer."""
    fields = dict(
        hidden_size=16,
        state_size=4,
        expand=2,
        time_step_rank=3,
        conv_kernel=4,
        conv_dim=1,
        mlp_ratio=0,
        scan_directions=["forward"],
        share_ssm_params=False,
        direction_aware_update=False,
        use_cls_token=False,
        pooling="mean",
    )
    return tiny_config("vim-t", **{**fields, **overrides})


def transformers_mixer(bias: bool) -> MambaMixer:
    config = MambaConfig(
        hidden_size=16,
        state_size=4,
        expand=2,
        time_step_rank=3,
        conv_kernel=4,
        use_bias=bias,
        use_conv_bias=bias,
        num_hidden_layers=1,
    )
    mixer = MambaMixer(config, layer_idx=0).eval()
    with torch.no_grad():
        for param in mixer.parameters():  # move away from the structured init so every tensor matters
            param.add_(0.3 * torch.randn_like(param))
    return mixer


def copy_from_transformers(ours: TransMambaMixer, ref: MambaMixer, param_set: int = 0) -> None:
    """Load a MambaMixer's weights into one parameter set of ours, checking our layout against theirs."""
    inner = ref.intermediate_size
    assert ours.x_proj_weight[param_set].shape == ref.x_proj.weight.shape  # (rank + 2N, inner): [dt | B | C]
    assert ours.dt_proj_weight[param_set].shape == ref.dt_proj.weight.shape  # (inner, rank)
    assert ours.A_log[param_set].shape == ref.A_log.shape
    assert ours.in_proj.weight.shape == ref.in_proj.weight.shape  # (2 inner, hidden): [x | z]
    channels = slice(param_set * inner, (param_set + 1) * inner)
    with torch.no_grad():
        ours.in_proj.load_state_dict(ref.in_proj.state_dict())
        ours.out_proj.load_state_dict(ref.out_proj.state_dict())
        ours.conv.weight[channels] = ref.conv1d.weight
        if ref.conv1d.bias is not None:
            ours.conv.bias[channels] = ref.conv1d.bias
        ours.x_proj_weight[param_set] = ref.x_proj.weight
        ours.dt_proj_weight[param_set] = ref.dt_proj.weight
        ours.dt_proj_bias[param_set] = ref.dt_proj.bias
        ours.A_log[param_set] = ref.A_log
        ours.D[param_set] = ref.D


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("length", [1, 11])
def test_forward_mixer_equals_transformers_mamba_mixer(bias, length):
    ref = transformers_mixer(bias)
    ours = TransMambaMixer(oracle_config(in_proj_bias=bias, out_proj_bias=bias, conv_bias=bias)).eval()
    copy_from_transformers(ours, ref)
    hidden = torch.randn(2, length, 16)
    with torch.no_grad():
        expected = ref(hidden)
        out, _ = ours(hidden, (1, length))
    assert rel_err(out, expected) < 1e-5


def test_backward_direction_is_transformers_mixer_on_the_flipped_sequence():
    ref = transformers_mixer(True)
    ours = TransMambaMixer(oracle_config(scan_directions=["backward"])).eval()
    copy_from_transformers(ours, ref)
    hidden = torch.randn(2, 9, 16)
    with torch.no_grad():
        expected = ref(hidden.flip(1)).flip(1)
        out, _ = ours(hidden, (1, 9))
    assert rel_err(out, expected) < 1e-5


def test_vim_mixer_is_the_mean_of_its_two_directions():
    """Bimamba v2: out_proj((y_f + flip(y_b)) / 2) with each direction on its own conv and SSM set."""
    forward_ref, backward_ref = transformers_mixer(True), transformers_mixer(True)
    backward_ref.in_proj.load_state_dict(forward_ref.in_proj.state_dict())
    backward_ref.out_proj.load_state_dict(forward_ref.out_proj.state_dict())
    ours = TransMambaMixer(oracle_config(scan_directions=["forward", "backward"], combine_directions="mean")).eval()
    copy_from_transformers(ours, forward_ref, param_set=0)
    copy_from_transformers(ours, backward_ref, param_set=1)
    hidden = torch.randn(2, 10, 16)
    with torch.no_grad():
        expected = (forward_ref(hidden) + backward_ref(hidden.flip(1)).flip(1)) / 2
        out, _ = ours(hidden, (1, 10))
    assert rel_err(out, expected) < 1e-5


def make_mixer(config) -> TransMambaMixer:
    """A mixer with Mamba's init, then every parameter (direction table included) perturbed so no term vanishes."""
    mixer = TransMambaMixer(config).eval()
    mixer.reset_ssm_parameters()
    with torch.no_grad():
        for param in mixer.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return mixer


def unpermute_sum(contributions: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Gather per-direction contributions (b, K, L, C), in scan order, back to raster order and add them."""
    total = torch.zeros_like(contributions[:, 0])
    for k, perm in enumerate(perms):
        total[:, perm] += contributions[:, k]
    return total


@pytest.mark.parametrize(
    "preset,directions,grid,length",
    [
        ("pmamba-t", PLAIN_MAMBA_4, (4, 4), 16),
        ("pmamba-t", PLAIN_MAMBA_8, (3, 4), 12),
        ("vim-t", ["forward", "backward"], (4, 4), 17),
    ],
    ids=["pmamba-4dir", "pmamba-8dir", "vim-cls"],
)
def test_direction_outputs_sum_to_mixer_output(preset, directions, grid, length):
    config = tiny_config(preset, scan_directions=directions)
    mixer = make_mixer(config)
    hidden = torch.randn(2, length, config.hidden_size)
    with torch.no_grad():
        plain, none = mixer(hidden, grid)
        out, contributions = mixer(hidden, grid, output_direction_outputs=True)
    assert none is None
    assert torch.equal(plain, out)
    assert contributions.shape == (2, config.num_directions, length, config.hidden_size)
    perms = scan_permutations(config.scan_directions, grid[0], grid[1], length)
    assert rel_err(unpermute_sum(contributions, perms), out) < 1e-5


def test_vim_backward_direction_equals_forward_direction_on_flipped_input():
    """With both parameter sets equal, direction 1 on x is direction 0 on flip(x), step for step (scan order)."""
    config = tiny_config("vim-t")
    mixer = make_mixer(config)
    inner = config.intermediate_size
    with torch.no_grad():
        for name in ("x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A_log", "D"):
            getattr(mixer, name)[1] = getattr(mixer, name)[0]
        mixer.conv.weight[inner:] = mixer.conv.weight[:inner]
        mixer.conv.bias[inner:] = mixer.conv.bias[:inner]
        hidden = torch.randn(2, 17, config.hidden_size)
        _, on_x = mixer(hidden, (4, 4), output_direction_outputs=True)
        _, on_flipped = mixer(hidden.flip(1), (4, 4), output_direction_outputs=True)
    assert rel_err(on_x[:, 1], on_flipped[:, 0]) < 1e-5
    assert rel_err(on_x[:, 0], on_flipped[:, 1]) < 1e-5


def single_direction_state(mixer: TransMambaMixer, k: int) -> dict[str, torch.Tensor]:
    """The weights a one-direction mixer needs to act as direction ``k`` of ``mixer``."""
    state = mixer.state_dict()
    if mixer.config.share_ssm_params:
        return state
    inner = mixer.inner
    for name in ("x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A_log", "D"):
        state[name] = state[name][k : k + 1]
    for name in ("conv.weight", "conv.bias"):
        state[name] = state[name][k * inner : (k + 1) * inner]
    return state


@pytest.mark.parametrize(
    "preset,overrides",
    [("pmamba-t", {}), ("vim-t", {}), ("vim-t", {"share_ssm_params": True})],
    ids=["pmamba", "vim", "vim-shared-1d-conv"],
)
def test_stacked_directions_equal_single_direction_mixers(preset, overrides):
    """Stacking K directions into one conv and one scan call equals running each direction alone, then combining."""
    config = tiny_config(preset, **overrides)
    mixer = make_mixer(config)
    length = 12 + (1 if config.use_cls_token else 0)
    hidden = torch.randn(2, length, config.hidden_size)
    bias = mixer.out_proj.bias
    with torch.no_grad():
        out, _ = mixer(hidden, (3, 4))
        total = torch.zeros_like(out)
        for k, direction in enumerate(config.scan_directions):
            single = TransMambaMixer(tiny_config(preset, **overrides, scan_directions=[direction])).eval()
            single.load_state_dict(single_direction_state(mixer, k))
            total += single(hidden, (3, 4))[0] - bias
    scale = 1 / config.num_directions if config.combine_directions == "mean" else 1
    assert rel_err(scale * total + bias, out) < 1e-5


def test_direction_aware_update_changes_the_output():
    """The (5, N) move table is added to B: a non-zero table must change the result (and zeros must not)."""
    config = tiny_config("pmamba-t")
    mixer = make_mixer(config)
    hidden = torch.randn(1, 16, config.hidden_size)
    with torch.no_grad():
        with_table, _ = mixer(hidden, (4, 4))
        mixer.direction_B.zero_()
        without, _ = mixer(hidden, (4, 4))
        plain = TransMambaMixer(tiny_config("pmamba-t", direction_aware_update=False)).eval()
        plain.load_state_dict({k: v for k, v in mixer.state_dict().items() if k != "direction_B"})
        reference, _ = plain(hidden, (4, 4))
    assert rel_err(with_table, without) > 1e-3
    assert torch.equal(without, reference)
