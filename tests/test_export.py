"""Export with the default config: under torch.export / ONNX tracing the `auto` scan backend picks a traceable scan
by itself (the numba and CUDA kernels are opaque to tracers), the batch dimension stays dynamic, ONNX Runtime
matches eager, and eager calls after an export are unaffected."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from transmamba.modeling_transmamba import TransMambaForImageClassification
from transmamba.modeling_transmamba.selective_scan import ENV_BACKEND, resolve_backend

SMALL = dict(scan_backend="auto", num_hidden_layers=1, image_size=16)  # 4 patches: traces in seconds


def _student(preset: str) -> TransMambaForImageClassification:
    return TransMambaForImageClassification(tiny_config(preset, **SMALL)).eval()


def _export(model) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=64)
    return torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))


def test_auto_is_numba_in_eager_and_sequential_under_export(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(resolve_backend("auto", x.device))
            return x + 1

    torch.export.export(Probe(), (torch.randn(2),))
    assert resolve_backend("auto", torch.device("cpu")) == "numba"
    assert seen == ["sequential"]


def test_torch_export_with_a_dynamic_batch_matches_eager():
    model = _student("pmamba-t")
    program = _export(model)
    pixels = torch.randn(5, 3, 16, 16)  # another batch size than traced
    with torch.no_grad():
        eager = model(pixels).logits  # after the export: nothing traced was cached
    torch.testing.assert_close(program.module()(pixels).logits, eager, rtol=1e-5, atol=1e-6)


def test_onnx_runtime_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _student("vim-t")  # the 1-D causal conv along each order, class token in the middle
    path = tmp_path / "student.onnx"
    torch.onnx.export(_export(model), f=path, dynamo=True, input_names=["pixel_values"], output_names=["logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = torch.randn(3, 3, 16, 16)
    (logits,) = session.run(["logits"], {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        eager = model(pixels).logits
    torch.testing.assert_close(torch.from_numpy(logits), eager, rtol=1e-5, atol=1e-6)
