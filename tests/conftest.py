"""Shared test setup: one thread (the machine's cores are shared), fixed seeds, tiny real configs."""

from __future__ import annotations

import os

# MKL's result for one GEMV can depend on the input's memory alignment (measured on AMD EPYC: 1 ulp between 16-byte
# offsets), so two processes running the same code on the same weights can differ in the last bit. Its
# conditional-numerical-reproducibility mode removes that; tests that compare a fresh process bitwise rely on it.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import pytest  # noqa: E402
import torch  # noqa: E402
from transmamba.modeling_transmamba import TransMambaConfig

torch.set_num_threads(1)

# Small enough to run in milliseconds, big enough to have several layers, directions and a non-square state.
TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=16,
    num_hidden_layers=2,
    state_size=4,
    time_step_rank=3,
    num_labels=5,
    scan_backend="sequential",
)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|a - b| / max|b|: scale-free, so one tolerance fits outputs and gradients of any magnitude."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def tiny_config(preset: str, **overrides) -> TransMambaConfig:
    """A named student shrunk to test size; the sequential scan backend keeps numbers exact and kernel-free."""
    return TransMambaConfig.from_preset(preset, **{**TINY, **overrides})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
