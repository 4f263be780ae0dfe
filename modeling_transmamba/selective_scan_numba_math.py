"""Scalar building blocks of the numba scan kernels: a vectorisable fp32 ``exp``/``log1p`` (numba has no SIMD libm
here), the discretisation and gate passes over time, and the loads/stores between token tensors and scratch rows.

numba is optional: without it importing this module raises ImportError and the dispatcher falls back.
"""

from __future__ import annotations

import math

try:
    import numpy as np
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload
except ImportError as error:  # the dispatcher catches this and uses the PyTorch scan
    raise ImportError("The numba selective-scan backend needs `pip install numba`.") from error

from .selective_scan_numba_cache import jit, shared_name

__name__ = shared_name(__name__)  # before any kernel is defined: see shared_name

# No "nnan"/"ninf": infinities from overflowing exponentials must propagate as in the reference.
FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.functional.softplus default: identity above it
LANES = 64  # channels updated together (vectorised); fewer leave LLVM's interleaved vector loop unused


@intrinsic
def _int_bits_as_float32(typingctx, bits):
    """Reinterpret int32 bits as float32: builds ``2**k`` without a libm call, so loops stay vectorised."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def fast_exp(x):
    """Placeholder typed by the overload below (vectorisable exp for fp32, libm exp for fp64)."""
    raise NotImplementedError


@overload(fast_exp, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _fast_exp_overload(x):
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


def fast_log1p(x):
    """Placeholder typed by the overload below (vectorisable log1p on [0, 1] for fp32, libm for fp64)."""
    raise NotImplementedError


@overload(fast_log1p, inline="always", jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _fast_log1p_overload(x):
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


@jit(fastmath=FASTMATH)
def discretise(delta_row, bias, softplus, dts, slopes):
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
        e = fast_exp(-abs(x))
        soft = max(x, zero) + fast_log1p(e)
        sigmoid = (one if x >= zero else e) / (one + e)
        dts[t] = x if x > threshold else soft
        slopes[t] = one if x > threshold else sigmoid


@jit(fastmath=FASTMATH)
def silu_gates(z_row, gates, slopes):
    """``gates[t] = silu(z_t)`` and ``slopes[t] = silu'(z_t)``, vectorised over time."""
    one = gates.dtype.type(1.0)
    for t in range(z_row.shape[0]):
        zt = z_row[t]
        sigmoid = one / (one + fast_exp(-zt))
        gates[t] = zt * sigmoid
        slopes[t] = sigmoid * (one + zt * (one - sigmoid))


@jit(fastmath=FASTMATH)
def multiply(a, b, out):
    """``out = a * b`` elementwise (flat rows): the drive ``dt u`` once per token rather than per direction."""
    for i in range(out.shape[0]):
        out[i] = a[i] * b[i]


@jit(fastmath=FASTMATH)
def tabulate_decays(dts, rates, width, decays):
    """``decays[l, n, j] = exp(dts[l, j] * rates[n, j])``: one token's decays, read by every direction that
    shares ``delta`` and ``A``."""
    for l in range(decays.shape[0]):
        for n in range(rates.shape[0]):
            for j in range(width):
                decays[l, n, j] = fast_exp(dts[l, j] * rates[n, j])


# The time loops live in functions of their own: written inline in the (large) parallel kernels, LLVM left parts of
# them scalar (measured 2-4x slower per state update).


@jit(fastmath=FASTMATH)
def walk_tabulated(decays, drives, B, C, rows, h, ys, width):
    """One direction with decays read from the token table: ``h = decays[row] h + drives[row] B_t`` and
    ``ys[t] = C_t . h`` for step t, visiting token row ``rows[t]``; ``ys`` is in scan order."""
    state = h.shape[0]
    for t in range(rows.shape[0]):
        row = rows[t]
        drive = drives[row]
        decay = decays[row]
        y = ys[t]
        for j in range(width):
            y[j] = 0.0
        for n in range(state):
            h_n = h[n]
            a_n = decay[n]
            b_n = B[t, n]
            c_n = C[t, n]
            for j in range(width):
                h_n[j] = a_n[j] * h_n[j] + drive[j] * b_n
                y[j] += c_n * h_n[j]


@jit(fastmath=FASTMATH)
def walk_exp(dts, rates, drives, B, C, rows, h, ys, width):
    """``walk_tabulated`` computing each decay ``exp(dt A)`` on the fly (directions with their own delta or A)."""
    state = h.shape[0]
    for t in range(rows.shape[0]):
        row = rows[t]
        drive = drives[row]
        dt = dts[row]
        y = ys[t]
        for j in range(width):
            y[j] = 0.0
        for n in range(state):
            h_n = h[n]
            a_n = rates[n]
            b_n = B[t, n]
            c_n = C[t, n]
            for j in range(width):
                h_n[j] = fast_exp(dt[j] * a_n[j]) * h_n[j] + drive[j] * b_n
                y[j] += c_n * h_n[j]


@jit(fastmath=FASTMATH)
def skip_and_gate(ys, us, skip, gates, rows, perm, accumulate, width, out_rows):
    """``out_rows[perm[t]] (+)= (ys[t] + D u[rows[t]]) silu(z[perm[t]])``: scan order back to token positions."""
    for t in range(rows.shape[0]):
        y = ys[t]
        ut = us[rows[t]]
        token = perm[t]
        gate = gates[token]
        target = out_rows[token]
        if accumulate:
            for j in range(width):
                target[j] += (y[j] + skip[j] * ut[j]) * gate[j]
        else:
            for j in range(width):
                target[j] = (y[j] + skip[j] * ut[j]) * gate[j]


@jit()
def load_rows(source, b, k, first, width, bias, target):
    """``target[l, j] = source[b, k, l, first + j] (+ bias[first + j])``: token rows of one channel block."""
    for l in range(source.shape[2]):
        for j in range(width):
            target[l, j] = source[b, k, l, first + j] + bias[first + j]


@jit(fastmath=FASTMATH)
def project_rows(low, b, k, weight, first, width, bias, block, target):
    """``target[l, j] = bias[first + j] + sum_r low[b, k, l, r] weight[r, first + j]``: one channel block's Δ from
    its rank-R input (``dt_proj`` folded in), so the layer's full (length, channels) Δ never exists. The block's
    weights are copied into the contiguous scratch ``block`` (rank, LANES) first: read in place, the loop ran
    2.8x slower."""
    for r in range(weight.shape[0]):
        for j in range(width):
            block[r, j] = weight[r, first + j]
    for l in range(low.shape[2]):
        row = target[l]
        for j in range(width):
            row[j] = bias[first + j]
        for r in range(weight.shape[0]):
            v = low[b, k, l, r]
            w = block[r]
            for j in range(width):
                row[j] += v * w[j]


@jit()
def store_rows(rows, target, b, k, first, width):
    """``target[b, k, l, first + j] = rows[l, j]``, then zero ``rows`` for the next accumulation."""
    for l in range(rows.shape[0]):
        for j in range(width):
            target[b, k, l, first + j] = rows[l, j]
            rows[l, j] = 0.0
