"""Fused CPU selective scan in numba: forward and backward kernels that keep each channel's state in cache.

The PyTorch loop materialises ``(batch, length, channels, state)`` tensors for ``exp(delta A)`` and
``delta B u`` and is bound by that memory traffic. Here one task walks one channel's sequence with its
``state`` floats in an L1-resident vector, computing the exponentials on the fly (a vectorisable fp32 exp:
numba has no SIMD libm here), so nothing of that size ever exists.

Per channel ``c`` of group ``g`` (``dt_t = softplus(delta_t + bias)`` or ``delta_t + bias``)::

    a_t = exp(dt_t A)                 h_t = a_t * h_{t-1} + dt_t u_t B_t      (h_{-1} = 0)
    y_t = C_t . h_t + D u_t           out_t = y_t * silu(z_t)

Backward walks time in reverse with ``g_t = dL/dh_t = dy_t C_t + a_{t+1} g_{t+1}`` (``g_L`` = grad of the last
state), given ``dy_t = dout_t silu(z_t)``::

    dC_t += dy_t h_t       dB_t += g_t dt_t u_t       dA += g_t a_t h_{t-1} dt_t       dD += dy_t u_t
    du_t = dy_t D + dt_t (g_t . B_t)      ddt_t = g_t . (a_t h_{t-1} A + u_t B_t)
    ddelta_t = ddt_t softplus'(delta_t + bias)        dbias += ddelta_t       dz_t = dout_t y_t silu'(z_t)

The states ``h_t`` the backward needs are recomputed per channel into an ``(L + 1, state)`` scratch (small,
per thread), so the forward saves only its inputs. ``dB``/``dC`` are shared by the channels of a group: each
backward task owns a block of a group's channels and a private partial buffer, summed afterwards (no races).

Arithmetic is fp32 (fp64 when the inputs are fp64, for gradcheck); bf16/fp16 are converted at the boundary.
numba is optional: without it importing this module raises ImportError and the dispatcher falls back.
"""

from __future__ import annotations

import math
import warnings

import torch

try:
    import numba
    import numpy as np
    from llvmlite import ir
    from numba import prange, types
    from numba.extending import intrinsic, overload
except ImportError as error:  # the dispatcher catches this and uses the PyTorch scan
    raise ImportError("The numba selective-scan backend needs `pip install numba`.") from error

# numba's OpenMP layer spin-waits after every parallel kernel and starves the torch ops that follow (measured
# 5x to 1000x slower); its own work-queue pool sleeps instead. An explicit NUMBA_THREADING_LAYER still wins.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

# No "nnan"/"ninf": infinities from overflowing exponentials must propagate as in the reference.
_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.functional.softplus default: identity above it


def _jit(**options):
    """``njit`` with the on-disk cache; a folder numba cannot write to only costs recompilation.

    ``error_model="numpy"``: Python's ZeroDivisionError check on every float division blocks vectorisation
    (a sigmoid loop ran 17x slower).
    """

    def decorate(func):
        try:
            return numba.njit(cache=True, error_model="numpy", **options)(func)
        except RuntimeError:  # no writable folder next to this file, in NUMBA_CACHE_DIR or the user cache
            warnings.warn(
                "numba finds no writable cache folder for the selective-scan kernels (set NUMBA_CACHE_DIR); "
                "they are compiled again in every process.",
                stacklevel=1,  # same place for every kernel: shown once
            )
            return numba.njit(error_model="numpy", **options)(func)

    return decorate


@intrinsic
def _int_bits_as_float32(typingctx, bits):
    """Reinterpret int32 bits as float32: builds ``2**k`` without a libm call, so loops stay vectorised."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _exp(x):
    """Placeholder typed by the overload below (vectorisable exp for fp32, libm exp for fp64)."""
    raise NotImplementedError


@overload(_exp, jit_options={"fastmath": _FASTMATH, "error_model": "numpy"})
def _exp_overload(x):
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp_float32(x):
        # Cody-Waite range reduction + degree-7 polynomial (Cephes expf), max rel. error ~2e-7.
        xc = x if x > np.float32(-87.33) else np.float32(-87.33)  # clamp into exp's finite range
        xc = xc if xc < np.float32(88.72) else np.float32(88.72)
        k = np.floor(xc * np.float32(1.44269504088896341) + np.float32(0.5))
        r = xc - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * r * r + r + np.float32(1.0)
        value = p * _int_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
        value = np.float32(0.0) if x < np.float32(-87.33) else value
        return np.float32(np.inf) if x > np.float32(88.72) else value

    return exp_float32


def _log1p(x):
    """Placeholder typed by the overload below (vectorisable log1p on [0, 1] for fp32, libm for fp64)."""
    raise NotImplementedError


@overload(_log1p, jit_options={"fastmath": _FASTMATH, "error_model": "numpy"})
def _log1p_overload(x):
    if x != types.float32:
        return lambda x: math.log1p(x)

    def log1p_float32(x):
        # log1p(x) = 2 atanh(s), s = x / (2 + x) in [0, 1/3] for x in [0, 1]: odd series, rel. error < 1e-7.
        s = x / (np.float32(2.0) + x)
        s2 = s * s
        p = np.float32(2.0 / 13.0)
        p = p * s2 + np.float32(2.0 / 11.0)
        p = p * s2 + np.float32(2.0 / 9.0)
        p = p * s2 + np.float32(2.0 / 7.0)
        p = p * s2 + np.float32(2.0 / 5.0)
        p = p * s2 + np.float32(2.0 / 3.0)
        return (p * s2 + np.float32(2.0)) * s

    return log1p_float32


@_jit(fastmath=_FASTMATH)
def _discretise(delta_row, bias, softplus, dts, slopes):
    """``dts[t] = softplus(delta_t + bias)`` (or without softplus) and its derivative into ``slopes``.

    A pass of its own over time so that it vectorises: ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``.
    """
    zero = dts.dtype.type(0.0)
    one = dts.dtype.type(1.0)
    threshold = dts.dtype.type(SOFTPLUS_THRESHOLD)
    if not softplus:
        for t in range(delta_row.shape[0]):
            dts[t] = delta_row[t] + bias
            slopes[t] = one
        return
    for t in range(delta_row.shape[0]):
        x = delta_row[t] + bias
        e = _exp(-abs(x))
        soft = max(x, zero) + _log1p(e)
        sigmoid = (one if x >= zero else e) / (one + e)
        dts[t] = x if x > threshold else soft
        slopes[t] = one if x > threshold else sigmoid


@_jit(fastmath=_FASTMATH)
def _gates(z_row, gates, slopes):
    """``gates[t] = silu(z_t)`` and ``slopes[t] = silu'(z_t)``, vectorised over time."""
    one = gates.dtype.type(1.0)
    for t in range(z_row.shape[0]):
        zt = z_row[t]
        sigmoid = one / (one + _exp(-zt))
        gates[t] = zt * sigmoid
        slopes[t] = sigmoid * (one + zt * (one - sigmoid))


@_jit(parallel=True, fastmath=_FASTMATH)
def _forward_kernel(u, delta, A, Bt, Ct, D, z, bias, softplus, has_z, out, last_state):
    """One (batch, channel) per task; ``Bt, Ct`` are (batch, groups, length, state)."""
    batch, channels, length = u.shape
    state = A.shape[1]
    per_group = channels // Bt.shape[1]
    for task in prange(batch * channels):
        b = task // channels
        c = task % channels
        g = c // per_group
        a_row = A[c]
        dts = np.empty(length, u.dtype)
        slopes = np.empty(length, u.dtype)
        _discretise(delta[b, c], bias[c], softplus, dts, slopes)
        gates = np.ones(length, u.dtype)
        if has_z:
            _gates(z[b, c], gates, slopes)  # the forward needs no softplus slopes: reuse the buffer
        h = np.zeros(state, u.dtype)
        for t in range(length):
            dt = dts[t]
            drive = dt * u[b, c, t]
            b_t = Bt[b, g, t]
            c_t = Ct[b, g, t]
            y = u.dtype.type(0.0)
            for n in range(state):
                h[n] = _exp(dt * a_row[n]) * h[n] + drive * b_t[n]
                y += c_t[n] * h[n]
            out[b, c, t] = (y + D[c] * u[b, c, t]) * gates[t]
        last_state[b, c] = h


@_jit(parallel=True, fastmath=_FASTMATH)
def _backward_kernel(
    u, delta, A, Bt, Ct, D, z, bias, softplus, has_z, dout, dlast, blocks, du, ddelta, dz, dA, dD, dbias, dB, dC
):
    """One (batch, group, block of the group's channels) per task; ``dB, dC`` (batch, groups, blocks, L, N)."""
    batch, channels, length = u.shape
    state = A.shape[1]
    groups = Bt.shape[1]
    per_group = channels // groups
    block_size = -(-per_group // blocks)
    zero = u.dtype.type(0.0)
    for task in prange(batch * groups * blocks):
        b = task // (groups * blocks)
        g = (task // blocks) % groups
        k = task % blocks
        states = np.zeros((length + 1, state), u.dtype)  # states[t + 1] = h_t, states[0] = 0
        hcur = np.empty(state, u.dtype)
        decay = np.empty(state, u.dtype)
        dts = np.empty(length, u.dtype)
        slopes = np.empty(length, u.dtype)
        ys = np.empty(length, u.dtype)  # C_t . h_t, for the gate's gradient
        gates = np.ones(length, u.dtype)
        gate_slopes = np.zeros(length, u.dtype)
        grad = np.empty(state, u.dtype)
        grad_a = np.empty(state, u.dtype)
        carried = np.empty(state, u.dtype)
        first = g * per_group + k * block_size
        for c in range(first, min(first + block_size, (g + 1) * per_group)):
            a_row = A[c]
            _discretise(delta[b, c], bias[c], softplus, dts, slopes)
            if has_z:
                _gates(z[b, c], gates, gate_slopes)
            # Recompute the states exactly as the forward does, keeping a copy of each; storing exp(dt A) too
            # for the reverse pass was 20% slower than taking it again there.
            hcur[:] = zero
            for t in range(length):
                dt = dts[t]
                drive = dt * u[b, c, t]
                b_t = Bt[b, g, t]
                c_t = Ct[b, g, t]
                h_t = states[t + 1]
                h_prev = states[t]
                y = zero
                for n in range(state):
                    hcur[n] = _exp(dt * a_row[n]) * hcur[n] + drive * b_t[n]
                    y += c_t[n] * hcur[n]
                ys[t] = y
                for n in range(state):
                    h_t[n] = hcur[n]
            for n in range(state):
                grad[n] = dlast[b, c, n]
                grad_a[n] = zero
            d_skip = zero
            d_bias = zero
            # Short loops that each write one array: fused, LLVM's alias checks exceed its limit and the loop
            # stays scalar (one fused reverse loop took 11x the forward).
            for t in range(length - 1, -1, -1):
                dt = dts[t]
                ut = u[b, c, t]
                b_t = Bt[b, g, t]
                c_t = Ct[b, g, t]
                h_t = states[t + 1]
                h_prev = states[t]
                for n in range(state):
                    decay[n] = _exp(dt * a_row[n])
                dB_t = dB[b, g, k, t]
                dC_t = dC[b, g, k, t]
                dy = dout[b, c, t]
                if has_z:
                    dz[b, c, t] = dy * (ys[t] + D[c] * ut) * gate_slopes[t]
                    dy *= gates[t]
                d_skip += dy * ut
                for n in range(state):
                    grad[n] += dy * c_t[n]
                for n in range(state):
                    dC_t[n] += dy * h_t[n]
                drive = dt * ut
                for n in range(state):
                    dB_t[n] += grad[n] * drive
                d_u = zero
                for n in range(state):
                    d_u += grad[n] * b_t[n]
                for n in range(state):
                    carried[n] = grad[n] * decay[n] * h_prev[n]
                for n in range(state):
                    grad[n] *= decay[n]
                for n in range(state):
                    grad_a[n] += carried[n] * dt
                d_dt = ut * d_u
                for n in range(state):
                    d_dt += carried[n] * a_row[n]
                du[b, c, t] = dy * D[c] + dt * d_u
                d_delta = d_dt * slopes[t]
                ddelta[b, c, t] = d_delta
                d_bias += d_delta
            dA[b, c] = grad_a
            dD[b, c] = d_skip
            dbias[b, c] = d_bias


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _as_array(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    return tensor.detach().to(dtype).contiguous().numpy()


def _kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype: torch.dtype) -> tuple:
    """Arrays in the kernels' layout: B, C time-major (batch, groups, length, state) so the state is innermost."""
    zeros = torch.zeros(u.shape[1], dtype=dtype)
    return (
        _as_array(u, dtype),
        _as_array(delta, dtype),
        _as_array(A, dtype),
        _as_array(B.transpose(-1, -2), dtype),
        _as_array(C.transpose(-1, -2), dtype),
        _as_array(D if D is not None else zeros, dtype),
        _as_array(z, dtype) if z is not None else np.zeros((1, 1, 1), _NUMPY[dtype]),
        _as_array(delta_bias if delta_bias is not None else zeros, dtype),
    )


def _use_torch_threads() -> int:
    """Run numba on as many threads as torch, so ``torch.set_num_threads`` governs both."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


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


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class _NumbaSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        dtype = _compute_dtype(u, delta, A, B, C)
        batch, channels, length = u.shape
        state = A.shape[1]
        out = torch.empty(batch, channels, length, dtype=dtype)
        last_state = torch.empty(batch, channels, state, dtype=dtype)
        _use_torch_threads()
        _forward_kernel(
            *_kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype),
            bool(delta_softplus),
            z is not None,
            out.numpy(),
            last_state.numpy(),
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.delta_softplus = delta_softplus
        return out.to(u.dtype), last_state  # fp32, or fp64 for fp64 inputs

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        dtype = _compute_dtype(u, delta, A, B, C)
        batch, channels, length = u.shape
        groups, state = B.shape[1], A.shape[1]
        threads = _use_torch_threads()
        # Enough tasks to keep every thread busy; each block of channels writes its own dB/dC partial.
        blocks = max(1, min(channels // groups, -(-4 * threads // (batch * groups))))
        dlast = dlast if dlast is not None else torch.zeros(batch, channels, state)
        grads = {
            "du": torch.empty(batch, channels, length, dtype=dtype),
            "ddelta": torch.empty(batch, channels, length, dtype=dtype),
            "dz": torch.empty(*(u.shape if z is not None else (1, 1, 1)), dtype=dtype),
            "dA": torch.empty(batch, channels, state, dtype=dtype),
            "dD": torch.empty(batch, channels, dtype=dtype),
            "dbias": torch.empty(batch, channels, dtype=dtype),
            "dB": torch.zeros(batch, groups, blocks, length, state, dtype=dtype),
            "dC": torch.zeros(batch, groups, blocks, length, state, dtype=dtype),
        }
        _backward_kernel(
            *_kernel_inputs(u, delta, A, B, C, D, z, delta_bias, dtype),
            bool(ctx.delta_softplus),
            z is not None,
            _as_array(dout, dtype),
            _as_array(dlast, dtype),
            blocks,
            *(grad.numpy() for grad in grads.values()),
        )
        return (
            grads["du"].to(u.dtype),
            grads["ddelta"].to(delta.dtype),
            grads["dA"].sum(0).to(A.dtype),
            grads["dB"].sum(2).transpose(-1, -2).to(B.dtype),
            grads["dC"].sum(2).transpose(-1, -2).to(C.dtype),
            None if D is None else grads["dD"].sum(0).to(D.dtype),
            None if z is None else grads["dz"].to(z.dtype),
            None if delta_bias is None else grads["dbias"].sum(0).to(delta_bias.dtype),
            None,
        )


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
    (fp64 for fp64 inputs). Differentiable in every tensor input and through the last state."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    out, last_state = _NumbaSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (out, last_state) if return_last_state else out
