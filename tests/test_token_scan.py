"""The token-major multi-direction scan (`selective_scan_tokens`): numba kernel and channel-major adapter against a
per-direction loop over the sequential reference, on strided/permuted views, shared and per-direction inputs."""

from __future__ import annotations

import pytest
import torch
from conftest import rel_err
from transmamba.modeling_transmamba.selective_scan import selective_scan_sequential, selective_scan_tokens

pytest.importorskip("numba")
from transmamba.modeling_transmamba.selective_scan_numba import selective_scan_numba_tokens  # noqa: E402

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_token_inputs(
    batch: int,
    directions: int,
    inner: int,
    state: int,
    length: int,
    *,
    own_inputs: bool,
    own_params: bool,
    with_z: bool = True,
    with_D: bool = True,
    with_bias: bool = True,
    scan_order_inputs: bool = False,
) -> dict:
    """Leaves (requires_grad) plus the strided views the scan reads: ``u, delta`` channel-major underneath
    (transposed views), ``z`` the second half of a wider token-major tensor, as the mixer hands them over."""
    slots = directions if own_inputs else 1
    sets = directions if own_params else 1
    leaves = {
        "u": torch.randn(batch, slots, inner, length),
        "delta": torch.randn(batch, slots, inner, length),
        "A": -torch.exp(0.5 * torch.randn(sets, inner, state)),
        "B": torch.randn(batch, directions, length, state),
        "C": torch.randn(batch, directions, length, state),
        "D": torch.randn(sets, inner) if with_D else None,
        "z": torch.randn(batch, 1, length, 2 * inner) if with_z else None,
        "delta_bias": 0.5 * torch.randn(sets, inner) if with_bias else None,
    }
    for leaf in leaves.values():
        if leaf is not None:
            leaf.requires_grad_(True)
    perm = torch.stack([torch.randperm(length) for _ in range(directions)])
    rows = torch.arange(length).expand(directions, length) if scan_order_inputs else perm
    views = dict(leaves)
    views["u"], views["delta"] = leaves["u"].transpose(2, 3), leaves["delta"].transpose(2, 3)
    views["z"] = leaves["z"][..., inner:] if with_z else None
    return {"leaves": leaves, "views": views, "perm": perm, "rows": rows}


def reference(views: dict, perm: torch.Tensor, rows: torch.Tensor, softplus: bool, separate: bool) -> torch.Tensor:
    """Each direction on its own: gather its tokens, scan with the sequential reference, put results back."""
    u, delta, z = views["u"], views["delta"], views["z"]
    outputs = []
    for k in range(perm.shape[0]):
        slot, param = min(k, u.shape[1] - 1), min(k, views["A"].shape[0] - 1)

        def channels(x: torch.Tensor, order: torch.Tensor, slot: int = slot) -> torch.Tensor:
            return x[:, slot, order].transpose(1, 2)  # (batch, inner, length) in scan order

        y = selective_scan_sequential(
            channels(u, rows[k]),
            channels(delta, rows[k]),
            views["A"][param],
            views["B"][:, k : k + 1].transpose(2, 3),
            views["C"][:, k : k + 1].transpose(2, 3),
            None if views["D"] is None else views["D"][param],
            z=None if z is None else channels(z, perm[k], 0),
            delta_bias=None if views["delta_bias"] is None else views["delta_bias"][param],
            delta_softplus=softplus,
        )
        outputs.append(torch.zeros_like(y.transpose(1, 2)).index_copy(1, perm[k], y.transpose(1, 2)))
    stacked = torch.stack(outputs, dim=1)
    return stacked if separate else stacked.sum(1, keepdim=True)


def grads_of(out: torch.Tensor, leaves: dict) -> dict[str, torch.Tensor]:
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    names = [name for name in NAMES if leaves[name] is not None]
    grads = torch.autograd.grad((out * weights).sum(), [leaves[name] for name in names])
    return dict(zip(names, grads, strict=True))


CASES = [
    # batch, directions, inner, state, length, own_inputs, own_params, scan_order_inputs, with_z/D/bias, softplus
    (2, 4, 8, 16, 37, False, False, False, True, True),  # PlainMamba: everything shared, 4 orders
    (1, 4, 130, 4, 9, False, False, False, True, True),  # 3 channel blocks at batch 1, a ragged last one
    (2, 2, 8, 4, 65, True, True, True, True, True),  # ViM: per-direction u/delta in scan order, own parameters
    (1, 2, 70, 3, 40, False, True, False, True, True),  # shared inputs, per-direction parameters; 2 blocks
    (2, 3, 5, 4, 1, False, False, False, True, True),  # L = 1
    (1, 2, 6, 4, 33, True, False, False, False, False),  # no z / D / bias / softplus
]
IDS = ["pmamba", "blocks-ragged", "vim", "shared-inputs-own-params", "L1", "bare"]


@pytest.mark.parametrize("separate", [False, True], ids=["summed", "separate"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_token_scan_matches_per_direction_reference(case, separate):
    batch, directions, inner, state, length, own_inputs, own_params, scan_order, extras, softplus = case
    data = make_token_inputs(
        batch, directions, inner, state, length, own_inputs=own_inputs, own_params=own_params,
        scan_order_inputs=scan_order, with_z=extras, with_D=extras, with_bias=extras,
    )  # fmt: skip
    leaves, views, perm, rows = data["leaves"], data["views"], data["perm"], data["rows"]
    args = [views[name] for name in NAMES]
    expected = reference(views, perm, rows, softplus, separate)
    expected_grads = grads_of(expected, leaves)
    assert expected.shape == (batch, directions if separate else 1, length, inner)
    for backend in ("numba", "sequential"):
        out = selective_scan_tokens(*args, perm, rows, softplus, separate, backend=backend)
        assert out.shape == expected.shape and out.dtype == torch.float32
        assert rel_err(out, expected) < 1e-4, backend
        grads = grads_of(out, leaves)
        assert grads.keys() == expected_grads.keys()
        for name, grad in grads.items():
            assert grad.shape == leaves[name].shape, (backend, name)
            if expected_grads[name].abs().max() > 0:
                assert rel_err(grad, expected_grads[name]) < 1e-4, (backend, name)
            else:  # dA at length 1: no previous state to decay
                assert grad.abs().max() == 0, (backend, name)


def test_last_state_is_each_direction_final_state():
    data = make_token_inputs(1, 3, 5, 4, 11, own_inputs=False, own_params=False)
    views, perm = data["views"], data["perm"]
    args = [views[name] for name in NAMES]
    _, last = selective_scan_numba_tokens(*args, perm, perm, True, False, return_last_state=True)
    assert last.shape == (1, 3, 5, 4)
    for k in range(3):
        _, expected = selective_scan_sequential(
            views["u"][:, 0, perm[k]].transpose(1, 2), views["delta"][:, 0, perm[k]].transpose(1, 2),
            views["A"][0], views["B"][:, k : k + 1].transpose(2, 3), views["C"][:, k : k + 1].transpose(2, 3),
            views["D"][0], z=views["z"][:, 0, perm[k]].transpose(1, 2), delta_bias=views["delta_bias"][0],
            delta_softplus=True, return_last_state=True,
        )  # fmt: skip
        assert rel_err(last[:, k], expected) < 1e-5


@pytest.mark.parametrize("own_inputs", [False, True])
def test_token_scan_gradcheck_fp64(own_inputs):
    data = make_token_inputs(1, 2, 3, 2, 6, own_inputs=own_inputs, own_params=own_inputs)
    leaves, perm = data["leaves"], data["perm"]
    names = [name for name in NAMES if leaves[name] is not None]
    tensors = tuple(leaves[name].detach().double().requires_grad_() for name in names)

    def scan(*args):
        named = dict(zip(names, args, strict=True))
        inner = named["u"].shape[2]
        named["u"], named["delta"] = named["u"].transpose(2, 3), named["delta"].transpose(2, 3)
        named["z"] = named["z"][..., inner:]
        return selective_scan_numba_tokens(**named, perm=perm, delta_softplus=True, return_last_state=True)

    assert scan(*tensors)[0].dtype == torch.float64
    assert torch.autograd.gradcheck(scan, tensors)


def test_bf16_inputs_compute_in_fp32():
    data = make_token_inputs(2, 4, 8, 4, 21, own_inputs=False, own_params=False)
    views, perm = data["views"], data["perm"]
    exact = selective_scan_numba_tokens(*[views[name] for name in NAMES], perm, delta_softplus=True)
    low = [None if views[name] is None else views[name].detach().bfloat16() for name in NAMES]
    out = selective_scan_numba_tokens(*low, perm, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, exact) < 2e-2


def test_mismatched_orders_are_refused_before_compute():
    data = make_token_inputs(1, 2, 3, 2, 6, own_inputs=False, own_params=False)
    args = [data["views"][name] for name in NAMES]
    with pytest.raises(ValueError, match="perm and rows"):
        selective_scan_numba_tokens(*args, torch.stack([torch.arange(5)] * 2))
    with pytest.raises(ValueError, match="B and C"):
        selective_scan_numba_tokens(*args[:3], args[3][:, :1], args[4][:, :1], *args[5:], data["perm"])


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2]], ids=IDS[:3])
def test_folded_dt_proj_matches_the_materialised_delta(case):
    """``delta_proj``: the kernel forms Δ = low · Wᵀ per channel block; outputs and the gradients of every input,
    the low-rank input and W included, equal the scan of the materialised Δ (the other backends' route)."""
    batch, directions, inner, state, length, own_inputs, own_params, scan_order, _, _ = case
    data = make_token_inputs(batch, directions, inner, state, length, own_inputs=own_inputs, own_params=own_params,
                             scan_order_inputs=scan_order)  # fmt: skip
    views, perm, rows = data["views"], data["perm"], data["rows"]
    slots, rank = views["delta"].shape[1], 3
    low = torch.randn(batch, slots, length, rank + 5)[..., 2 : 2 + rank].requires_grad_()  # a strided view
    proj = (0.5 * torch.randn(slots, inner, rank)).requires_grad_()
    args = {name: views[name] for name in NAMES}
    leaves = {**{name: data["leaves"][name] for name in NAMES if name != "delta"}, "low": low, "proj": proj}
    expected = selective_scan_tokens(**{**args, "delta": torch.matmul(low, proj.mT)}, perm=perm, rows=rows,
                                     delta_softplus=True, backend="sequential")  # fmt: skip
    for backend in ("numba", "sequential"):
        out = selective_scan_tokens(**{**args, "delta": low}, perm=perm, rows=rows, delta_softplus=True,
                                    backend=backend, delta_proj=proj)  # fmt: skip
        assert rel_err(out, expected) < 1e-4, backend
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
        grads = torch.autograd.grad((out * weights).sum(), list(leaves.values()))
        wanted = torch.autograd.grad((expected * weights).sum(), list(leaves.values()), retain_graph=True)
        for name, grad, want in zip(leaves, grads, wanted, strict=True):
            assert grad.shape == leaves[name].shape and rel_err(grad, want) < 1e-4, (backend, name)
    with pytest.raises(ValueError, match="delta_proj"):
        selective_scan_numba_tokens(**{**args, "delta": low}, perm=perm, rows=rows, delta_proj=proj[:, :-1])


def test_folded_dt_proj_gradcheck_fp64():
    data = make_token_inputs(1, 2, 3, 2, 6, own_inputs=False, own_params=False)
    leaves, perm = data["leaves"], data["perm"]
    low = torch.randn(1, 1, 6, 2, dtype=torch.float64, requires_grad=True)
    proj = torch.randn(1, 3, 2, dtype=torch.float64, requires_grad=True)
    u = leaves["u"].detach().double().requires_grad_()
    B, C = (leaves[name].detach().double().requires_grad_() for name in ("B", "C"))
    A = leaves["A"].detach().double()

    def scan(u, low, proj, B, C):
        return selective_scan_numba_tokens(u.transpose(2, 3), low, A, B, C, perm=perm, delta_softplus=True,
                                           delta_proj=proj)  # fmt: skip

    assert torch.autograd.gradcheck(scan, (u, low, proj, B, C))
