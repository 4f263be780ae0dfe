"""The numba CPU selective scan as a differentiable torch op: wraps the kernels of `selective_scan_numba_kernels`
(forward and backward, see that module for the maths and layout) with input checks and the two entry points.

Arithmetic is fp32 (fp64 when the inputs are fp64, for gradcheck); bf16/fp16 are converted at the boundary.
numba is optional: without it importing this module raises ImportError and the dispatcher falls back.
"""

from __future__ import annotations

import torch

try:
    import numba
    import numpy as np
except ImportError as error:  # the dispatcher catches this and uses the PyTorch scan
    raise ImportError("The numba selective-scan backend needs `pip install numba`.") from error

from .selective_scan_numba_kernels import backward_kernel, forward_kernel
from .selective_scan_numba_math import LANES

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _as_array(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """A numpy view in the compute dtype, keeping the tensor's strides (no copy when the dtype already matches)."""
    return tensor.detach().to(dtype).numpy()


def _small_array(tensor: torch.Tensor | None, dtype: torch.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A contiguous copy of a small tensor (parameters, B/C, orders); zeros of ``shape`` for a missing one."""
    if tensor is None:
        return np.zeros(shape, dtype=_NUMPY[dtype])
    return tensor.detach().to(dtype).contiguous().numpy()


def _kernel_inputs(u, delta, z, A, B, C, D, delta_bias, perm, rows, dtype: torch.dtype) -> tuple:
    sets, inner = A.shape[:2]
    return (
        _as_array(u, dtype),
        _as_array(delta, dtype),
        _as_array(z, dtype) if z is not None else np.zeros((1, 1, 1, 1), _NUMPY[dtype]),
        _small_array(A, dtype, ()),
        _small_array(B, dtype, ()),
        _small_array(C, dtype, ()),
        _small_array(D, dtype, (sets, inner)),
        _small_array(delta_bias, dtype, (sets, inner)),
        perm.to(torch.int64).contiguous().numpy(),
        rows.to(torch.int64).contiguous().numpy(),
    )


def _use_torch_threads() -> int:
    """Run numba on as many threads as torch, so ``torch.set_num_threads`` governs both."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def _blocks(batch: int, inner: int, threads: int) -> int:
    """Channel blocks per batch entry: enough tasks to keep every thread busy, no more (each has its dB/dC)."""
    return max(1, min(-(-inner // LANES), -(-4 * threads // batch)))


def _float_type(dtype: torch.dtype) -> str:
    return "f8" if dtype == torch.float64 else "f4"


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _projection(delta_proj: torch.Tensor | None, dtype: torch.dtype, inner: int) -> np.ndarray:
    """``dt_proj`` as the forward kernel reads it, (sets, rank, channels); (1, 0, channels) when Δ is given whole."""
    if delta_proj is None:
        return np.zeros((1, 0, inner), dtype=_NUMPY[dtype])
    return delta_proj.detach().to(dtype).transpose(1, 2).contiguous().numpy()


class _NumbaTokenScan(torch.autograd.Function):
    """With ``delta_proj`` (sets, channels, rank), ``delta`` is ``dt_proj``'s rank-R input: the forward kernel forms
    Δ per channel block, and only the backward materialises it (for its kernel), then maps ddelta back."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_softplus, separate, delta_proj=None):
        dtype = _compute_dtype(u, delta, A, B, C)
        batch, _, length, inner = u.shape
        directions, state = B.shape[1], A.shape[2]
        out = torch.empty(batch, directions if separate else 1, length, inner, dtype=dtype)
        last_state = torch.empty(batch, directions, inner, state, dtype=dtype)
        blocks = _blocks(batch, inner, _use_torch_threads())
        tensors = _kernel_inputs(u, delta, z, A, B, C, D, delta_bias, perm, rows, dtype)
        forward_kernel(_float_type(dtype))(
            *tensors[:8],
            _projection(delta_proj, dtype, inner),
            *tensors[8:],
            bool(delta_softplus),
            z is not None,
            blocks,
            out.numpy(),
            last_state.numpy(),
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_proj)
        ctx.delta_softplus = delta_softplus
        return out.to(u.dtype), last_state  # fp32, or fp64 for fp64 inputs

    @staticmethod
    def backward(ctx, dout, dlast):
        u, low_rank, A, B, C, D, z, delta_bias, perm, rows, delta_proj = ctx.saved_tensors
        dtype = _compute_dtype(u, low_rank, A, B, C)
        delta = low_rank if delta_proj is None else torch.matmul(low_rank.to(dtype), delta_proj.to(dtype).mT)
        batch, _, length, inner = u.shape
        sets, directions, state = A.shape[0], B.shape[1], A.shape[2]
        blocks = _blocks(batch, inner, _use_torch_threads())
        dlast = dlast if dlast is not None else torch.zeros(batch, directions, inner, state)
        grads = {  # du, ddelta, dz: every element written by the kernel; the rest are accumulated into
            "du": torch.empty(u.shape, dtype=dtype),
            "ddelta": torch.empty(delta.shape, dtype=dtype),
            "dz": torch.empty(z.shape if z is not None else (1, 1, 1, 1), dtype=dtype),
            "dA": torch.zeros(batch, sets, inner, state, dtype=dtype),
            "dD": torch.zeros(batch, sets, inner, dtype=dtype),
            "dbias": torch.zeros(batch, sets, inner, dtype=dtype),
            "dB": torch.zeros(batch, blocks, directions, length, state, dtype=dtype),
            "dC": torch.zeros(batch, blocks, directions, length, state, dtype=dtype),
        }
        backward_kernel(_float_type(dtype))(
            *_kernel_inputs(u, delta, z, A, B, C, D, delta_bias, perm, rows, dtype),
            bool(ctx.delta_softplus),
            z is not None,
            _as_array(dout, dtype),
            _small_array(dlast, dtype, ()),
            blocks,
            *(grad.numpy() for grad in grads.values()),
        )
        ddelta = grads["ddelta"]
        if delta_proj is not None:  # Δ = low · Wᵀ per slot: dlow = ddelta · W, dW = Σ_batch ddeltaᵀ · low
            dproj = torch.matmul(ddelta.mT, low_rank.to(dtype)).sum_to_size(delta_proj.shape).to(delta_proj.dtype)
            ddelta = torch.matmul(ddelta, delta_proj.to(dtype))
        return (
            grads["du"].to(u.dtype),
            ddelta.to(low_rank.dtype),
            grads["dA"].sum(0).to(A.dtype),
            grads["dB"].sum(1).to(B.dtype),
            grads["dC"].sum(1).to(C.dtype),
            None if D is None else grads["dD"].sum(0).to(D.dtype),
            None if z is None else grads["dz"].to(z.dtype),
            None if delta_bias is None else grads["dbias"].sum(0).to(delta_bias.dtype),
            None,
            None,
            None,
            None,
            None if delta_proj is None else dproj,
        )


def _check_tokens(u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_proj=None) -> None:
    if u.dim() != 4 or delta.dim() != 4 or (z is not None and z.dim() != 4):
        raise ValueError("u, delta and z must be (batch, 1 or directions, length, channels) token tensors.")
    batch, _, length, inner = u.shape
    directions = perm.shape[0] if perm.dim() == 2 else -1
    if perm.shape != (directions, length) or rows.shape != perm.shape:
        raise ValueError(f"perm and rows must be (directions, length) = (K, {length}) index tensors.")
    width = {"u": inner, "delta": inner if delta_proj is None else delta_proj.shape[-1], "z": inner}
    for name, tensor in (("u", u), ("delta", delta), ("z", z)):
        if tensor is not None and (tensor.shape[0] != batch or tensor.shape[1] not in (1, directions)
                                   or tensor.shape[2:] != (length, width[name])):  # fmt: skip
            raise ValueError(
                f"{name} {tuple(tensor.shape)} must be ({batch}, 1 or {directions}, {length}, {width[name]})."
            )
    if delta_proj is not None and (delta_proj.dim() != 3 or delta_proj.shape[0] not in (1, delta.shape[1])
                                   or delta_proj.shape[1] != inner):  # fmt: skip
        raise ValueError(f"delta_proj {tuple(delta_proj.shape)} must be (1 or {delta.shape[1]}, {inner}, rank): one "
                         "projection for every slot of delta, or one per slot.")  # fmt: skip
    if A.dim() != 3 or A.shape[0] not in (1, directions) or A.shape[1] != inner:
        raise ValueError(f"A {tuple(A.shape)} must be (1 or {directions}, {inner}, state).")
    expected = (batch, directions, length, A.shape[2])
    if B.shape != expected or C.shape != expected:
        raise ValueError(f"B and C must be (batch, directions, length, state) = {expected} in scan order.")
    for name, vector in (("D", D), ("delta_bias", delta_bias)):
        if vector is not None and vector.shape != A.shape[:2]:
            raise ValueError(f"{name} must have shape {tuple(A.shape[:2])} like A's first two dims.")
    if any(t is not None and t.device.type != "cpu" for t in (u, delta, A, B, C, D, z, delta_bias, delta_proj)):
        raise ValueError("The numba scan runs on CPU tensors; use backend='cuda' or 'chunked' on GPU.")


def selective_scan_numba_tokens(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    perm: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    delta_softplus: bool = False,
    separate: bool = False,
    return_last_state: bool = False,
    delta_proj: torch.Tensor | None = None,
):
    """Multi-direction scan straight from token tensors; see ``selective_scan.selective_scan_tokens`` for shapes."""
    rows = perm if rows is None else rows
    _check_tokens(u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_proj)
    out, last_state = _NumbaTokenScan.apply(
        u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_softplus, separate, delta_proj
    )
    return (out, last_state) if return_last_state else out


def _check(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3 or delta.shape != u.shape or (z is not None and z.shape != u.shape):
        raise ValueError("u, delta and z must share one (batch, channels, length) shape.")
    batch, channels, length = u.shape
    if A.shape[0] != channels or B.dim() != 4 or B.shape != C.shape:
        raise ValueError("A must be (channels, state) and B, C (batch, groups, state, length) of one shape.")
    if B.shape[0] != batch or B.shape[2] != A.shape[1] or B.shape[3] != length or channels % B.shape[1]:
        raise ValueError(
            f"B/C {tuple(B.shape)} do not fit u {tuple(u.shape)} and A {tuple(A.shape)}: expected "
            "(batch, groups, state, length) with channels divisible by groups."
        )
    for name, vector in (("D", D), ("delta_bias", delta_bias)):
        if vector is not None and vector.shape != (channels,):
            raise ValueError(f"{name} must have shape (channels,) = ({channels},), got {tuple(vector.shape)}.")
    if any(t is not None and t.device.type != "cpu" for t in (u, delta, A, B, C, D, z, delta_bias)):
        raise ValueError("The numba scan runs on CPU tensors; use backend='cuda' or 'chunked' on GPU.")


def selective_scan_numba(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Same contract as ``selective_scan_sequential``: ``y`` in ``u``'s dtype, last state (batch, channels, N) fp32
    (fp64 for fp64 inputs). Differentiable in every tensor input and through the last state.

    Runs the token kernel on strided views: each group is a direction whose scan order is the channel order."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    batch, channels, length = u.shape
    groups = B.shape[1]
    inner = channels // groups

    def tokens(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.reshape(batch, groups, inner, length).transpose(2, 3)

    def per_group(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.reshape(groups, inner, *x.shape[1:])

    order = torch.arange(length).expand(groups, length)
    out, last_state = _NumbaTokenScan.apply(
        tokens(u),
        tokens(delta),
        per_group(A),
        B.transpose(2, 3),
        C.transpose(2, 3),
        per_group(D),
        tokens(z),
        per_group(delta_bias),
        order,
        order,
        delta_softplus,
        True,
    )
    out = out.transpose(2, 3).reshape(batch, channels, length)
    last_state = last_state.reshape(batch, channels, -1)
    return (out, last_state) if return_last_state else out
