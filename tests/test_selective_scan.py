"""The selective-scan ops: chunked == sequential == transformers' reference, long/stiff inputs, recurrent steps."""

from __future__ import annotations

import pytest
import torch
from conftest import rel_err
from transformers.models.mamba.modeling_mamba import mamba_selective_scan
from transmamba.modeling_transmamba.selective_scan import (
    ENV_BACKEND,
    resolve_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_sequential,
    selective_state_step,
)

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    batch: int,
    groups: int,
    per_group: int,
    state: int,
    length: int,
    *,
    with_z: bool = True,
    with_D: bool = True,
    with_bias: bool = True,
    softplus: bool = True,
    delta_scale: float = 1.0,
) -> dict[str, torch.Tensor | bool | None]:
    """Random scan inputs in mamba_ssm layout; delta is positive when no softplus follows."""
    channels = groups * per_group
    delta = torch.randn(batch, channels, length) if softplus else torch.rand(batch, channels, length) + 0.05
    leaf = {
        "u": torch.randn(batch, channels, length),
        "delta": delta * delta_scale,
        "A": -torch.exp(0.5 * torch.randn(channels, state)),
        "B": torch.randn(batch, groups, state, length),
        "C": torch.randn(batch, groups, state, length),
        "D": torch.randn(channels) if with_D else None,
        "z": torch.randn(batch, channels, length) if with_z else None,
        "delta_bias": 0.5 * torch.randn(channels) if with_bias else None,
    }
    for value in leaf.values():
        if value is not None:
            value.requires_grad_(True)
    return {**leaf, "delta_softplus": softplus}


def run_with_grads(scan, inputs: dict, **kwargs) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Forward with last state, then gradients of a random projection of both w.r.t. every tensor input."""
    out, last = scan(**inputs, return_last_state=True, **kwargs)
    generator = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=generator)).sum() + (
        last * torch.randn(last.shape, generator=generator)
    ).sum()
    names = [name for name in GRAD_NAMES if inputs[name] is not None]
    grads = torch.autograd.grad(loss, [inputs[name] for name in names])
    return out, last, dict(zip(names, grads, strict=True))


CASES = [
    # batch, groups, per_group, state, length, chunk_size, with_z, with_D, with_bias, softplus
    (2, 1, 3, 4, 1, 64, True, True, True, True),
    (1, 2, 2, 3, 7, 64, True, True, True, True),
    (2, 4, 2, 4, 37, 8, True, True, True, True),  # several chunks, ragged last chunk
    (1, 2, 3, 2, 130, 64, True, True, True, True),  # length not a multiple of the default chunk
    (2, 8, 1, 4, 65, 16, False, False, False, False),  # no z / D / bias / softplus
    (1, 3, 2, 5, 50, 7, True, False, True, False),
    (2, 2, 2, 4, 33, 32, False, True, False, True),
    (1, 1, 4, 16, 64, 64, True, True, True, True),  # exactly one full chunk
]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"L{c[4]}-g{c[1]}-chunk{c[5]}" + ("" if c[6] else "-noz") + ("" if c[9] else "-nosoftplus") for c in CASES],
)
def test_chunked_matches_sequential(case):
    batch, groups, per_group, state, length, chunk_size, with_z, with_D, with_bias, softplus = case
    inputs = make_inputs(
        batch, groups, per_group, state, length, with_z=with_z, with_D=with_D, with_bias=with_bias, softplus=softplus
    )
    ref_out, ref_last, ref_grads = run_with_grads(selective_scan_sequential, inputs)
    out, last, grads = run_with_grads(selective_scan_chunked, inputs, chunk_size=chunk_size)
    assert out.shape == (batch, groups * per_group, length)
    assert last.shape == (batch, groups * per_group, state)
    assert rel_err(out, ref_out) < 1e-4
    assert rel_err(last, ref_last) < 1e-4
    assert ref_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert rel_err(grad, ref_grads[name]) < 1e-4, name


@pytest.mark.parametrize("with_z,softplus", [(True, True), (False, False)])
def test_sequential_matches_transformers_reference(with_z, softplus):
    """One group is Mamba-1 as `transformers` computes it (its CPU fallback loop), same layout conventions."""
    inputs = make_inputs(2, 1, 6, 4, 23, with_z=with_z, softplus=softplus)
    out, last = selective_scan_sequential(**inputs, return_last_state=True)
    ref_out, ref_last = mamba_selective_scan(
        inputs["u"],
        inputs["delta"],
        inputs["A"],
        inputs["B"][:, 0],
        inputs["C"][:, 0],
        D=inputs["D"],
        z=inputs["z"],
        delta_bias=inputs["delta_bias"],
        delta_softplus=softplus,
        return_last_state=True,
    )
    assert rel_err(out, ref_out) < 1e-5
    assert rel_err(last, ref_last) < 1e-5


def test_groups_are_independent_scans():
    """Group g of B/C drives exactly channels g*E:(g+1)*E: a 3-group scan equals 3 one-group scans."""
    inputs = make_inputs(2, 3, 4, 4, 19)
    out = selective_scan_sequential(**inputs)
    for g in range(3):
        part = slice(4 * g, 4 * (g + 1))
        single = selective_scan_sequential(
            inputs["u"][:, part],
            inputs["delta"][:, part],
            inputs["A"][part],
            inputs["B"][:, g : g + 1],
            inputs["C"][:, g : g + 1],
            inputs["D"][part],
            inputs["z"][:, part],
            inputs["delta_bias"][part],
            delta_softplus=True,
        )
        assert rel_err(out[:, part], single) < 1e-6


@pytest.mark.parametrize("scan", [selective_scan_sequential, selective_scan_chunked], ids=["sequential", "chunked"])
def test_long_sequence_with_large_delta_stays_finite(scan):
    """L=16384 with delta ~ 50-100 after softplus: exp(delta*A) underflows to 0 but nothing may become NaN/inf."""
    length = 16384
    inputs = make_inputs(1, 2, 1, 4, length, softplus=True)
    with torch.no_grad():
        inputs["delta"].uniform_(50.0, 100.0)
        inputs["delta"][..., ::7] = -30.0  # and some tiny steps (softplus ~ 1e-13) in between
    out, last, grads = run_with_grads(scan, inputs)
    assert torch.isfinite(out).all()
    assert torch.isfinite(last).all()
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    assert out.abs().max() > 0


def test_state_step_token_by_token_equals_full_scan():
    batch, groups, per_group, state, length = 2, 2, 3, 4, 13
    inputs = make_inputs(batch, groups, per_group, state, length)
    with torch.no_grad():
        full, full_last = selective_scan_sequential(**inputs, return_last_state=True)
        hidden = torch.zeros(batch, groups * per_group, state)
        steps = []
        for t in range(length):
            y, hidden = selective_state_step(
                hidden,
                inputs["u"][..., t],
                inputs["delta"][..., t],
                inputs["A"],
                inputs["B"][..., t],
                inputs["C"][..., t],
                inputs["D"],
                inputs["z"][..., t],
                inputs["delta_bias"],
                delta_softplus=True,
            )
            assert y.shape == (batch, groups * per_group)
            steps.append(y)
    assert rel_err(torch.stack(steps, dim=-1), full) < 1e-5
    assert rel_err(hidden, full_last) < 1e-5


@pytest.mark.parametrize("backend", ["sequential", "chunked"])
def test_dispatcher_runs_the_requested_backend(backend):
    inputs = make_inputs(1, 2, 2, 3, 9)
    direct = {"sequential": selective_scan_sequential, "chunked": selective_scan_chunked}[backend](**inputs)
    assert torch.equal(selective_scan(**inputs, backend=backend), direct)


def test_backend_choice_and_errors(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv(ENV_BACKEND, "chunked")
    assert resolve_backend("auto", cpu) == "chunked"  # the environment decides when the config says auto
    assert resolve_backend("sequential", cpu) == "sequential"  # an explicit config wins over the environment
    monkeypatch.delenv(ENV_BACKEND)
    assert resolve_backend("auto", cpu) in ("numba", "sequential")
    with pytest.raises(ValueError, match="choose one of"):
        resolve_backend("fastest", cpu)
    with pytest.raises(ValueError, match=r"CUDA tensors"):
        resolve_backend("cuda", cpu)
    inputs = make_inputs(1, 2, 3, 2, 4)
    inputs["B"] = torch.randn(1, 4, 2, 4)  # 6 channels cannot be split into 4 groups
    with pytest.raises(ValueError, match="divisible by the groups"):
        selective_scan_sequential(**inputs)
