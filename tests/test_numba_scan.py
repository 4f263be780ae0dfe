"""The fused numba scan: forward, last state and every gradient equal the sequential reference; dispatch."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import rel_err, tiny_config
from test_selective_scan import make_inputs, run_with_grads
from transformers.dynamic_module_utils import get_imports
from transmamba.modeling_transmamba import TransMambaForImageClassification
from transmamba.modeling_transmamba.selective_scan import ENV_BACKEND, resolve_backend, selective_scan_sequential

pytest.importorskip("numba")
from transmamba.modeling_transmamba.selective_scan_numba import selective_scan_numba  # noqa: E402

scan_module = importlib.import_module("transmamba.modeling_transmamba.selective_scan")

CASES = [
    # batch, groups, per_group, state, length, with_z, with_D, with_bias, softplus, delta_scale
    (2, 1, 3, 4, 1, True, True, True, True, 1.0),
    (1, 2, 2, 3, 7, True, True, True, True, 1.0),
    (2, 4, 3, 16, 37, True, True, True, True, 1.0),  # 4 directions, Mamba's state size, odd length
    (1, 2, 5, 4, 300, True, True, True, True, 1.0),
    (2, 8, 1, 4, 65, False, False, False, False, 1.0),  # no z / D / bias / softplus
    (1, 3, 2, 5, 50, True, False, True, False, 1.0),
    (2, 2, 2, 4, 33, False, True, False, True, 1.0),
    (1, 2, 3, 4, 40, True, True, True, True, 40.0),  # large delta: decays underflow to 0
]


@pytest.mark.parametrize(
    "batch,groups,per_group,state,length,with_z,with_D,with_bias,softplus,scale",
    CASES,
    ids=[f"L{c[4]}-g{c[1]}-N{c[3]}" + ("" if c[5] else "-noz") + ("" if c[8] else "-nosoftplus") for c in CASES],
)
def test_numba_matches_sequential(batch, groups, per_group, state, length, with_z, with_D, with_bias, softplus, scale):
    options = dict(with_z=with_z, with_D=with_D, with_bias=with_bias, softplus=softplus, delta_scale=scale)
    inputs = make_inputs(batch, groups, per_group, state, length, **options)
    ref_out, ref_last, ref_grads = run_with_grads(selective_scan_sequential, inputs)
    out, last, grads = run_with_grads(selective_scan_numba, inputs)
    assert out.dtype == last.dtype == torch.float32
    assert rel_err(out, ref_out) < 1e-4
    assert rel_err(last, ref_last) < 1e-4
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert grad.shape == inputs[name].shape, name
        if ref_grads[name].abs().max() > 0:
            assert rel_err(grad, ref_grads[name]) < 1e-4, name
        else:  # dA at length 1: no previous state to decay
            assert grad.abs().max() == 0, name


def test_without_last_state_returns_only_the_output():
    inputs = make_inputs(1, 2, 2, 3, 5)
    out = selective_scan_numba(**inputs)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 5)


def test_bf16_inputs_compute_in_fp32_and_return_bf16():
    inputs = make_inputs(2, 2, 3, 4, 29)
    low = {k: v.detach().bfloat16().requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    exact = {k: v.detach().float().requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in low.items()}
    ref_out, _, ref_grads = run_with_grads(selective_scan_sequential, exact)
    out, last, grads = run_with_grads(selective_scan_numba, low)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert rel_err(out, ref_out) < 1e-2
    for name, grad in grads.items():
        assert grad.dtype == torch.bfloat16, name
        assert rel_err(grad, ref_grads[name]) < 2e-2, name


@pytest.mark.parametrize("with_z,softplus", [(True, True), (False, False)])
def test_gradcheck_fp64(with_z, softplus):
    inputs = make_inputs(1, 2, 2, 3, 6, with_z=with_z, softplus=softplus)
    names = [n for n in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias") if inputs[n] is not None]
    tensors = tuple(inputs[n].detach().double().requires_grad_() for n in names)

    def scan(*args):
        named = dict(zip(names, args, strict=True))
        return selective_scan_numba(**named, delta_softplus=softplus, return_last_state=True)

    assert scan(*tensors)[1].dtype == torch.float64
    assert torch.autograd.gradcheck(scan, tensors)


def test_very_long_sequence_with_large_delta_stays_finite():
    inputs = make_inputs(1, 2, 1, 4, 65_536)
    with torch.no_grad():
        inputs["delta"].uniform_(50.0, 100.0)
        inputs["delta"][..., ::7] = -30.0
    out, last, grads = run_with_grads(selective_scan_numba, inputs)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    assert out.abs().max() > 0


def test_bad_shapes_are_refused_before_compute():
    inputs = make_inputs(1, 2, 3, 2, 4)
    inputs["B"] = inputs["C"] = torch.randn(1, 4, 2, 4)  # 6 channels cannot be split into 4 groups
    with pytest.raises(ValueError, match="divisible by groups"):
        selective_scan_numba(**inputs)


def test_auto_picks_numba_on_cpu_and_logs_it_once(monkeypatch, caplog):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    monkeypatch.setattr(scan_module, "_announced", set())
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger=scan_module.__name__):
        assert resolve_backend("auto", cpu) == "numba"
        assert resolve_backend("auto", cpu) == "numba"
    announced = "transmamba selective scan: using the numba backend on cpu"
    assert [record.getMessage() for record in caplog.records].count(announced) == 1
    inputs = make_inputs(1, 2, 2, 3, 9)
    assert torch.equal(scan_module.selective_scan(**inputs), selective_scan_numba(**inputs))
    monkeypatch.setenv(ENV_BACKEND, "sequential")
    assert resolve_backend("auto", cpu) == "sequential"
    assert torch.equal(scan_module.selective_scan(**inputs), selective_scan_sequential(**inputs))


@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_model_logits_and_gradients_match_sequential(preset):
    config = tiny_config(preset, scan_backend="sequential")
    model = TransMambaForImageClassification(config)
    pixels = torch.randn(2, 3, config.image_size, config.image_size)
    labels = torch.tensor([1, 3])
    results = {}
    for backend in ("sequential", "numba"):
        model.config.scan_backend = backend
        model.zero_grad()
        outputs = model(pixel_values=pixels, labels=labels)
        outputs.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[backend] = (outputs.logits.detach(), grads)
    logits, grads = results["numba"]
    ref_logits, ref_grads = results["sequential"]
    assert rel_err(logits, ref_logits) < 1e-4
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        assert rel_err(grad, ref_grads[name]) < 1e-4, name


def test_remote_code_loads_without_numba():
    """transformers' remote-code check must not see numba; hidden numba makes the import fail and auto fall back."""
    path = Path(importlib.import_module(selective_scan_numba.__module__).__file__)
    assert "numba" not in get_imports(str(path)) and "llvmlite" not in get_imports(str(path))
    script = (
        "import sys; sys.modules['numba'] = None\n"
        "import torch\n"
        "from transmamba.modeling_transmamba.selective_scan import resolve_backend\n"
        "assert resolve_backend('auto', torch.device('cpu')) == 'sequential'\n"
        "try:\n"
        "    import transmamba.modeling_transmamba.selective_scan_numba\n"
        "except ImportError as error:\n"
        "    assert 'pip install numba' in str(error)\n"
        "else:\n"
        "    raise AssertionError('imported without numba')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_BACKEND}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
