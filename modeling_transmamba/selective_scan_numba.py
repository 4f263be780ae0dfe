"""Fused CPU selective scan in numba: forward and backward kernels that keep each channel's state in cache.

The PyTorch loop materialises ``(batch, length, channels, state)`` tensors for ``exp(delta A)`` and
``delta B u`` and is bound by that memory traffic. Here one task walks one channel's sequence with its
``state`` floats in an L1-resident vector, computing the exponentials on the fly (a vectorisable fp32 exp:
numba has no SIMD libm here), so nothing of that size ever exists.

Per channel ``c`` of direction ``k`` (``dt_t = softplus(delta_t + bias)`` or ``delta_t + bias``)::

    a_t = exp(dt_t A)                 h_t = a_t * h_{t-1} + dt_t u_t B_t      (h_{-1} = 0)
    y_t = C_t . h_t + D u_t           out_t = y_t * silu(z_t)

Backward walks time in reverse with ``g_t = dL/dh_t = dy_t C_t + a_{t+1} g_{t+1}`` (``g_L`` = grad of the last
state), given ``dy_t = dout_t silu(z_t)``::

    dC_t += dy_t h_t       dB_t += g_t dt_t u_t       dA += g_t a_t h_{t-1} dt_t       dD += dy_t u_t
    du_t = dy_t D + dt_t (g_t . B_t)      ddt_t = g_t . (a_t h_{t-1} A + u_t B_t)
    ddelta_t = ddt_t softplus'(delta_t + bias)        dbias += ddelta_t       dz_t = dout_t y_t silu'(z_t)

Layout (no copies of the big tensors): the kernels read token tensors ``(batch, 1 or K, length, channels)`` with
any strides, and take the scan order as an index table: direction ``k`` visits token ``perm[k, t]`` at step ``t``
and its output goes back to that token's position (summed over directions, or one slot each). Inputs shared by
all directions (one slot) are read, never expanded. One task owns a batch entry and a block of channels for
every direction, so shared inputs' gradients and the summed output are written without races; per sub-block of
16 channels the inputs are gathered into scan-order scratch rows and each channel scanned as a contiguous row.

The states ``h_t`` the backward needs are recomputed per channel into an ``(L + 1, state)`` scratch (small,
per thread), so the forward saves only its inputs. ``dB``/``dC`` are shared by the channels of a direction:
each backward task has a private partial buffer, summed afterwards (no races).

Arithmetic is fp32 (fp64 when the inputs are fp64, for gradcheck); bf16/fp16 are converted at the boundary.
numba is optional: without it importing this module raises ImportError and the dispatcher falls back.
"""

from __future__ import annotations

import math
import warnings
from functools import cache

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


def _jit(signature: str | None = None, **options):
    """``njit`` with the on-disk cache; a folder numba cannot write to only costs recompilation.

    ``error_model="numpy"``: Python's ZeroDivisionError check on every float division blocks vectorisation
    (a sigmoid loop ran 17x slower).
    """
    args = () if signature is None else (signature,)

    def decorate(func):
        try:
            return numba.njit(*args, cache=True, error_model="numpy", **options)(func)
        except RuntimeError:  # no writable folder next to this file, in NUMBA_CACHE_DIR or the user cache
            warnings.warn(
                "numba finds no writable cache folder for the selective-scan kernels (set NUMBA_CACHE_DIR); "
                "they are compiled again in every process.",
                stacklevel=1,  # same place for every kernel: shown once
            )
            return numba.njit(*args, error_model="numpy", **options)(func)

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
        # exp(x) = 2**k exp(r), k = round(x log2 e), r = x - k ln 2 (Cody-Waite, |r| <= ln(2)/2): a degree-6
        # polynomial for exp(r) (fitted, max rel. error 1.1e-7 over the whole range) times 2**k built from its bits.
        # x is clamped so that k stays in [-126, 128]: below, the result is ~1e-38 (as good as 0 for a decay);
        # k = 128 sets every exponent bit, which is +inf.
        x = x if x > np.float32(-87.33654) else np.float32(-87.33654)
        x = x if x < np.float32(88.72284) else np.float32(88.72284)
        k = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
        r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
        p = np.float32(1.3843650231137872e-3)
        p = p * r + np.float32(8.374156430363655e-3)
        p = p * r + np.float32(4.166800156235695e-2)
        p = p * r + np.float32(1.6666431725025177e-1)
        p = p * r + np.float32(4.999999403953552e-1)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        return p * _int_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))

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


LANES = 64  # channels updated together (vectorised); fewer leave LLVM's interleaved vector loop unused
SEGMENT = 32  # backward: steps whose states and decays are recomputed together (fit in L2)


@_jit()
def _load(source, b, k, first, width, bias, target):
    """``target[l, j] = source[b, k, l, first + j] (+ bias[first + j])``: token rows of one channel block."""
    for l in range(source.shape[2]):
        for j in range(width):
            target[l, j] = source[b, k, l, first + j] + bias[first + j]


@_jit()
def _store(rows, target, b, k, first, width):
    """``target[b, k, l, first + j] = rows[l, j]``, then zero ``rows`` for the next accumulation."""
    for l in range(rows.shape[0]):
        for j in range(width):
            target[b, k, l, first + j] = rows[l, j]
            rows[l, j] = 0.0


def _forward(u, delta, z, A, Bs, Cs, D, bias, perm, rows, softplus, has_z, blocks, out, last_state):
    """One task per (batch, block of channels) holding every direction, so shared inputs and a summed output never
    race. Per sub-block of ``LANES`` channels the inputs are loaded once into token-row scratch (per direction only
    when they differ per direction); each direction then walks its order through them, updating the ``LANES``
    channels' states together (vectorised over channels: independent chains, no horizontal sums)."""
    batch, length, inner = u.shape[0], u.shape[2], u.shape[3]
    directions, state = Bs.shape[1], A.shape[2]
    span = -(-inner // blocks)
    zero = u.dtype.type(0.0)
    no_bias = np.zeros(inner, u.dtype)
    summed = out.shape[1] == 1
    for task in prange(batch * blocks):
        b = task // blocks
        start = (task % blocks) * span
        stop = min(start + span, inner)
        us = np.zeros((length, LANES), u.dtype)
        dts = np.zeros((length, LANES), u.dtype)
        raw = np.zeros((length, LANES), u.dtype)
        slopes = np.empty((length, LANES), u.dtype)  # softplus' and silu' slopes: unused here
        gates = np.ones((length, LANES), u.dtype)
        ys = np.empty((length, LANES), u.dtype)
        decay_rates = np.empty((state, LANES), u.dtype)
        h = np.empty((state, LANES), u.dtype)
        y = np.empty(LANES, u.dtype)
        drive = np.empty(LANES, u.dtype)
        skip = np.empty(LANES, u.dtype)
        for first in range(start, stop, LANES):
            width = min(LANES, stop - first)
            for k in range(directions):
                p = k if A.shape[0] > 1 else 0
                if k == 0 or u.shape[1] > 1:
                    _load(u, b, k if u.shape[1] > 1 else 0, first, width, no_bias, us)
                if k == 0 or delta.shape[1] > 1 or A.shape[0] > 1:
                    _load(delta, b, k if delta.shape[1] > 1 else 0, first, width, bias[p], raw)
                    _discretise(raw.reshape(-1), zero, softplus, dts.reshape(-1), slopes.reshape(-1))
                if has_z and (k == 0 or z.shape[1] > 1):
                    _load(z, b, k if z.shape[1] > 1 else 0, first, width, no_bias, raw)
                    _gates(raw.reshape(-1), gates.reshape(-1), slopes.reshape(-1))
                for j in range(width):
                    skip[j] = D[p, first + j]
                    for n in range(state):
                        decay_rates[n, j] = A[p, first + j, n]
                h[:] = zero
                for t in range(length):
                    row = rows[k, t]
                    dt = dts[row]
                    ut = us[row]
                    b_t = Bs[b, k, t]
                    c_t = Cs[b, k, t]
                    for j in range(width):
                        drive[j] = dt[j] * ut[j]
                        y[j] = zero
                    for n in range(state):
                        h_n = h[n]
                        a_n = decay_rates[n]
                        b_n = b_t[n]
                        c_n = c_t[n]
                        for j in range(width):
                            h_n[j] = _exp(dt[j] * a_n[j]) * h_n[j] + drive[j] * b_n
                            y[j] += c_n * h_n[j]
                    token = perm[k, t]
                    gate = gates[token]
                    y_out = ys[token]
                    if summed and k > 0:
                        for j in range(width):
                            y_out[j] += (y[j] + skip[j] * ut[j]) * gate[j]
                    else:
                        for j in range(width):
                            y_out[j] = (y[j] + skip[j] * ut[j]) * gate[j]
                for j in range(width):
                    for n in range(state):
                        last_state[b, k, first + j, n] = h[n, j]
                if not summed or k == directions - 1:
                    for token in range(length):
                        for j in range(width):
                            out[b, 0 if summed else k, token, first + j] = ys[token, j]


def _backward(
    u, delta, z, A, Bs, Cs, D, bias, perm, rows, softplus, has_z, dout, dlast, blocks,
    du, ddelta, dz, dA, dD, dbias, dB, dC,
):  # fmt: skip
    """Tasks and channel sub-blocks as in the forward. Per direction: one forward pass keeps the state every
    ``SEGMENT`` steps; then, segment by segment from the end, the segment's states and decays are recomputed into
    a small buffer and walked back. ``du, ddelta, dz`` get every direction's share at the tokens' positions;
    ``dA, dD, dbias`` are (batch, sets, ...) partials, ``dB, dC`` (batch, blocks, K, L, N) partials."""
    batch, length, inner = u.shape[0], u.shape[2], u.shape[3]
    directions, state = Bs.shape[1], A.shape[2]
    span = -(-inner // blocks)
    segments = -(-length // SEGMENT)
    zero = u.dtype.type(0.0)
    no_bias = np.zeros(inner, u.dtype)
    for task in prange(batch * blocks):
        b = task // blocks
        block = task % blocks
        start = block * span
        stop = min(start + span, inner)
        raw = np.zeros((length, LANES), u.dtype)
        us = np.zeros((length, LANES), u.dtype)
        dts = np.zeros((length, LANES), u.dtype)
        slopes = np.zeros((length, LANES), u.dtype)
        gates = np.ones((length, LANES), u.dtype)
        gate_slopes = np.zeros((length, LANES), u.dtype)
        dys = np.zeros((length, LANES), u.dtype)
        du_rows = np.zeros((length, LANES), u.dtype)
        ddelta_rows = np.zeros((length, LANES), u.dtype)
        dz_rows = np.zeros((length, LANES), u.dtype)
        checkpoints = np.zeros((segments + 1, state, LANES), u.dtype)
        hs = np.zeros((SEGMENT + 1, state, LANES), u.dtype)
        decays = np.zeros((SEGMENT, state, LANES), u.dtype)
        ys = np.zeros((SEGMENT, LANES), u.dtype)
        rates = np.zeros((state, LANES), u.dtype)
        grad = np.zeros((state, LANES), u.dtype)
        grad_a = np.zeros((state, LANES), u.dtype)
        grad_h = np.zeros(LANES, u.dtype)
        carried = np.zeros(LANES, u.dtype)
        dy = np.zeros(LANES, u.dtype)
        drive = np.zeros(LANES, u.dtype)
        d_u = np.zeros(LANES, u.dtype)
        d_dt = np.zeros(LANES, u.dtype)
        skip = np.zeros(LANES, u.dtype)
        d_skip = np.zeros(LANES, u.dtype)
        d_bias = np.zeros(LANES, u.dtype)
        h = np.zeros((state, LANES), u.dtype)
        for first in range(start, stop, LANES):
            width = min(LANES, stop - first)
            for k in range(directions):
                p = k if A.shape[0] > 1 else 0
                own_u, own_delta, own_z = u.shape[1] > 1, delta.shape[1] > 1 or A.shape[0] > 1, z.shape[1] > 1
                if k == 0 or own_u:
                    _load(u, b, k if own_u else 0, first, width, no_bias, us)
                if k == 0 or own_delta:
                    _load(delta, b, k if delta.shape[1] > 1 else 0, first, width, bias[p], raw)
                    _discretise(raw.reshape(-1), zero, softplus, dts.reshape(-1), slopes.reshape(-1))
                if has_z and (k == 0 or own_z):
                    _load(z, b, k if own_z else 0, first, width, no_bias, raw)
                    _gates(raw.reshape(-1), gates.reshape(-1), gate_slopes.reshape(-1))
                if k == 0 or dout.shape[1] > 1:
                    _load(dout, b, k if dout.shape[1] > 1 else 0, first, width, no_bias, dys)
                for j in range(width):
                    skip[j] = D[p, first + j]
                    d_skip[j] = zero
                    d_bias[j] = zero
                    for n in range(state):
                        rates[n, j] = A[p, first + j, n]
                        grad[n, j] = dlast[b, k, first + j, n]
                        grad_a[n, j] = zero
                # Forward pass keeping every SEGMENT-th state.
                h[:] = zero
                checkpoints[0] = zero
                for t in range(length):
                    row = rows[k, t]
                    dt = dts[row]
                    ut = us[row]
                    b_t = Bs[b, k, t]
                    for j in range(width):
                        drive[j] = dt[j] * ut[j]
                    for n in range(state):
                        h_n = h[n]
                        a_n = rates[n]
                        b_n = b_t[n]
                        for j in range(width):
                            h_n[j] = _exp(dt[j] * a_n[j]) * h_n[j] + drive[j] * b_n
                    if (t + 1) % SEGMENT == 0:
                        checkpoints[(t + 1) // SEGMENT] = h
                for segment in range(segments - 1, -1, -1):
                    begin = segment * SEGMENT
                    steps = min(SEGMENT, length - begin)
                    hs[0] = checkpoints[segment]
                    for s in range(steps):  # the segment's states, decays and read-outs again
                        t = begin + s
                        row = rows[k, t]
                        dt = dts[row]
                        ut = us[row]
                        b_t = Bs[b, k, t]
                        c_t = Cs[b, k, t]
                        y = ys[s]
                        for j in range(width):
                            drive[j] = dt[j] * ut[j]
                            y[j] = zero
                        for n in range(state):
                            decay_n = decays[s, n]
                            a_n = rates[n]
                            for j in range(width):
                                decay_n[j] = _exp(dt[j] * a_n[j])
                            h_prev = hs[s, n]
                            h_n = hs[s + 1, n]
                            b_n = b_t[n]
                            c_n = c_t[n]
                            for j in range(width):
                                h_n[j] = decay_n[j] * h_prev[j] + drive[j] * b_n
                                y[j] += c_n * h_n[j]
                    # Loops that each write one array: fused, LLVM's alias checks exceed its limit and stay scalar.
                    for s in range(steps - 1, -1, -1):
                        t = begin + s
                        row = rows[k, t]
                        token = perm[k, t]
                        dt = dts[row]
                        ut = us[row]
                        gate = gates[token]
                        gate_slope = gate_slopes[token]
                        dout_t = dys[token]
                        y = ys[s]
                        dz_t = dz_rows[token]
                        for j in range(width):
                            dz_t[j] += dout_t[j] * (y[j] + skip[j] * ut[j]) * gate_slope[j]
                        for j in range(width):
                            dy[j] = dout_t[j] * gate[j]
                        for j in range(width):
                            d_skip[j] += dy[j] * ut[j]
                        for j in range(width):
                            drive[j] = dt[j] * ut[j]
                        d_u[:width] = zero
                        d_dt[:width] = zero
                        b_t = Bs[b, k, t]
                        c_t = Cs[b, k, t]
                        dB_t = dB[b, block, k, t]
                        dC_t = dC[b, block, k, t]
                        for n in range(state):
                            g_n = grad[n]
                            h_n = hs[s + 1, n]
                            h_prev = hs[s, n]
                            decay_n = decays[s, n]
                            a_n = rates[n]
                            ga_n = grad_a[n]
                            b_n = b_t[n]
                            c_n = c_t[n]
                            for j in range(width):
                                grad_h[j] = g_n[j] + dy[j] * c_n
                            acc = zero
                            for j in range(width):
                                acc += dy[j] * h_n[j]
                            dC_t[n] += acc
                            acc = zero
                            for j in range(width):
                                acc += grad_h[j] * drive[j]
                            dB_t[n] += acc
                            for j in range(width):
                                d_u[j] += grad_h[j] * b_n
                            for j in range(width):
                                carried[j] = grad_h[j] * decay_n[j] * h_prev[j]
                            for j in range(width):
                                ga_n[j] += carried[j] * dt[j]
                            for j in range(width):
                                d_dt[j] += carried[j] * a_n[j]
                            for j in range(width):
                                g_n[j] = grad_h[j] * decay_n[j]
                        du_t = du_rows[row]
                        ddelta_t = ddelta_rows[row]
                        slope = slopes[row]
                        for j in range(width):
                            du_t[j] += dy[j] * skip[j] + dt[j] * d_u[j]
                        for j in range(width):
                            d_dt[j] = (d_dt[j] + ut[j] * d_u[j]) * slope[j]
                        for j in range(width):
                            ddelta_t[j] += d_dt[j]
                        for j in range(width):
                            d_bias[j] += d_dt[j]
                for j in range(width):
                    dD[b, p, first + j] += d_skip[j]
                    dbias[b, p, first + j] += d_bias[j]
                    for n in range(state):
                        dA[b, p, first + j, n] += grad_a[n, j]
                if own_u or k == directions - 1:
                    _store(du_rows, du, b, k if own_u else 0, first, width)
                if delta.shape[1] > 1 or k == directions - 1:
                    _store(ddelta_rows, ddelta, b, k if delta.shape[1] > 1 else 0, first, width)
                if has_z and (own_z or k == directions - 1):
                    _store(dz_rows, dz, b, k if own_z else 0, first, width)


def _signatures(float_type: str) -> tuple[str, str]:
    """Kernel signatures: token tensors take any strides (layout "A": permuted and strided views share one compiled
    kernel), the small tensors the kernels allocate or the wrapper makes contiguous are C-contiguous."""
    layouts = (":,:,:,:", ":,::1", ":,:,::1", ":,:,:,::1", ":,:,:,:,::1")
    any4, c2, c3, c4, c5 = (f"{float_type}[{dims}]" for dims in layouts)
    shared = f"{any4}, {any4}, {any4}, {c3}, {c4}, {c4}, {c2}, {c2}, i8[:,::1], i8[:,::1], b1, b1"
    forward = f"void({shared}, i8, {c4}, {c4})"
    backward = f"void({shared}, {any4}, {c4}, i8, {c4}, {c4}, {c4}, {c4}, {c3}, {c3}, {c5}, {c5})"
    return forward, backward


@cache
def _kernels(dtype: torch.dtype) -> tuple:
    """(forward, backward) compiled for one float type on first use (then loaded from numba's disk cache)."""
    forward, backward = _signatures("f8" if dtype == torch.float64 else "f4")
    return _jit(forward, parallel=True, fastmath=_FASTMATH)(_forward), _jit(
        backward, parallel=True, fastmath=_FASTMATH
    )(_backward)


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


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class _NumbaTokenScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_softplus, separate):
        dtype = _compute_dtype(u, delta, A, B, C)
        batch, _, length, inner = u.shape
        directions, state = B.shape[1], A.shape[2]
        out = torch.empty(batch, directions if separate else 1, length, inner, dtype=dtype)
        last_state = torch.empty(batch, directions, inner, state, dtype=dtype)
        blocks = _blocks(batch, inner, _use_torch_threads())
        _kernels(dtype)[0](
            *_kernel_inputs(u, delta, z, A, B, C, D, delta_bias, perm, rows, dtype),
            bool(delta_softplus),
            z is not None,
            blocks,
            out.numpy(),
            last_state.numpy(),
        )
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, perm, rows)
        ctx.delta_softplus = delta_softplus
        return out.to(u.dtype), last_state  # fp32, or fp64 for fp64 inputs

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, perm, rows = ctx.saved_tensors
        dtype = _compute_dtype(u, delta, A, B, C)
        batch, _, length, inner = u.shape
        sets, directions, state = A.shape[0], B.shape[1], A.shape[2]
        blocks = _blocks(batch, inner, _use_torch_threads())
        dlast = dlast if dlast is not None else torch.zeros(batch, directions, inner, state)
        grads = {
            "du": torch.zeros(u.shape, dtype=dtype),
            "ddelta": torch.zeros(delta.shape, dtype=dtype),
            "dz": torch.zeros(z.shape if z is not None else (1, 1, 1, 1), dtype=dtype),
            "dA": torch.zeros(batch, sets, inner, state, dtype=dtype),
            "dD": torch.zeros(batch, sets, inner, dtype=dtype),
            "dbias": torch.zeros(batch, sets, inner, dtype=dtype),
            "dB": torch.zeros(batch, blocks, directions, length, state, dtype=dtype),
            "dC": torch.zeros(batch, blocks, directions, length, state, dtype=dtype),
        }
        _kernels(dtype)[1](
            *_kernel_inputs(u, delta, z, A, B, C, D, delta_bias, perm, rows, dtype),
            bool(ctx.delta_softplus),
            z is not None,
            _as_array(dout, dtype),
            _small_array(dlast, dtype, ()),
            blocks,
            *(grad.numpy() for grad in grads.values()),
        )
        return (
            grads["du"].to(u.dtype),
            grads["ddelta"].to(delta.dtype),
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
        )


def _check_tokens(u, delta, A, B, C, D, z, delta_bias, perm, rows) -> None:
    if u.dim() != 4 or delta.dim() != 4 or (z is not None and z.dim() != 4):
        raise ValueError("u, delta and z must be (batch, 1 or directions, length, channels) token tensors.")
    batch, _, length, inner = u.shape
    directions = perm.shape[0] if perm.dim() == 2 else -1
    if perm.shape != (directions, length) or rows.shape != perm.shape:
        raise ValueError(f"perm and rows must be (directions, length) = (K, {length}) index tensors.")
    for name, tensor in (("u", u), ("delta", delta), ("z", z)):
        if tensor is not None and (tensor.shape[0] != batch or tensor.shape[1] not in (1, directions)
                                   or tensor.shape[2:] != (length, inner)):  # fmt: skip
            raise ValueError(f"{name} {tuple(tensor.shape)} must be ({batch}, 1 or {directions}, {length}, {inner}).")
    if A.dim() != 3 or A.shape[0] not in (1, directions) or A.shape[1] != inner:
        raise ValueError(f"A {tuple(A.shape)} must be (1 or {directions}, {inner}, state).")
    expected = (batch, directions, length, A.shape[2])
    if B.shape != expected or C.shape != expected:
        raise ValueError(f"B and C must be (batch, directions, length, state) = {expected} in scan order.")
    for name, vector in (("D", D), ("delta_bias", delta_bias)):
        if vector is not None and vector.shape != A.shape[:2]:
            raise ValueError(f"{name} must have shape {tuple(A.shape[:2])} like A's first two dims.")
    if any(t is not None and t.device.type != "cpu" for t in (u, delta, A, B, C, D, z, delta_bias)):
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
):
    """Multi-direction scan straight from token tensors; see ``selective_scan.selective_scan_tokens`` for shapes."""
    rows = perm if rows is None else rows
    _check_tokens(u, delta, A, B, C, D, z, delta_bias, perm, rows)
    out, last_state = _NumbaTokenScan.apply(u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_softplus, separate)
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
