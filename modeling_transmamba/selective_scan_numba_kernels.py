"""The fused CPU selective-scan kernels in numba: forward and backward keep each channel's state in cache.

The PyTorch loop materialises ``(batch, length, channels, state)`` tensors for ``exp(delta A)`` and
``delta B u`` and is bound by that memory traffic. Here one task walks one channel's sequence with its
``state`` floats in an L1-resident vector, computing the exponentials on the fly, so nothing of that size exists.

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
``LANES`` channels the inputs are gathered into scan-order scratch rows and each channel scanned as a row.

``dt_proj`` can be folded in: given its rank-R input and weight, the forward forms each channel block's Δ rows
itself (`project_rows`), so no (batch, length, channels) Δ is stored; the backward kernel takes a materialised Δ.

Directions that share ``delta`` and ``A`` (PlainMamba) share ``exp(dt_t A)`` too: it depends on the token, not on
the order it is visited in, so it is tabulated once per token and sub-block and read by every direction (one
exponential per token, channel and state instead of one per direction). The backward recomputes the states ``h_t``
per channel sub-block into a per-thread scratch of every step (the forward saves only its inputs), reading the
same tables. ``dB``/``dC`` are shared by the channels of a direction: each backward task has a private partial
buffer, summed afterwards (no races).

numba is optional: without it importing this module raises ImportError and the dispatcher falls back.
"""

from __future__ import annotations

from functools import cache

try:
    import numba
    import numpy as np
    from numba import prange
except ImportError as error:  # the dispatcher catches this and uses the PyTorch scan
    raise ImportError("The numba selective-scan backend needs `pip install numba`.") from error

from .selective_scan_numba_cache import compile_kernel, shared_name
from .selective_scan_numba_math import (
    FASTMATH,
    LANES,
    discretise,
    load_rows,
    multiply,
    project_rows,
    silu_gates,
    skip_and_gate,
    store_rows,
    tabulate_decays,
    walk_exp,
    walk_tabulated,
)

__name__ = shared_name(__name__)  # before any kernel is defined: see shared_name

# numba's OpenMP layer spin-waits after every parallel kernel and starves the torch ops that follow (measured
# 5x to 1000x slower); its own work-queue pool sleeps instead. An explicit NUMBA_THREADING_LAYER still wins.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"


def _forward(u, delta, z, A, Bs, Cs, D, bias, proj, perm, rows, softplus, has_z, blocks, out, last_state):
    """One task per (batch, block of channels) holding every direction, so shared inputs and a summed output never
    race. Per sub-block of ``LANES`` channels the inputs are loaded once into token-row scratch (per direction only
    when they differ per direction); each direction then walks its order through them, updating the ``LANES``
    channels' states together (vectorised over channels: independent chains, no horizontal sums).

    When every direction shares ``delta`` and ``A`` (PlainMamba), ``exp(dt A)`` is a property of the token, not of
    the direction: it is tabulated once per token (``decays``) and each direction reads its row, so K directions
    cost one set of exponentials instead of K. With a non-empty ``proj`` (sets, rank, channels), ``delta`` is
    ``dt_proj``'s rank-R input and each sub-block forms its own Δ rows (`project_rows`)."""
    batch, length, inner = u.shape[0], u.shape[2], u.shape[3]
    directions, state = Bs.shape[1], A.shape[2]
    span = -(-inner // blocks)
    zero = u.dtype.type(0.0)
    no_bias = np.zeros(inner, u.dtype)
    summed = out.shape[1] == 1
    tabulate = directions > 1 and u.shape[1] == 1 and delta.shape[1] == 1 and A.shape[0] == 1
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
        drives = np.zeros((length, LANES), u.dtype)
        decays = np.zeros((length if tabulate else 1, state, LANES), u.dtype)
        decay_rates = np.zeros((state, LANES), u.dtype)
        proj_block = np.zeros((proj.shape[1], LANES), u.dtype)
        h = np.empty((state, LANES), u.dtype)
        scan_ys = np.zeros((length, LANES), u.dtype)  # read-outs in scan order
        skip = np.zeros(LANES, u.dtype)
        for first in range(start, stop, LANES):
            width = min(LANES, stop - first)
            for k in range(directions):
                p = k if A.shape[0] > 1 else 0
                fresh_u = k == 0 or u.shape[1] > 1
                fresh_dt = k == 0 or delta.shape[1] > 1 or A.shape[0] > 1
                if fresh_u:
                    load_rows(u, b, k if u.shape[1] > 1 else 0, first, width, no_bias, us)
                if fresh_dt:
                    slot = k if delta.shape[1] > 1 else 0
                    if proj.shape[1] > 0:
                        project_rows(delta, b, slot, proj[slot % proj.shape[0]], first, width, bias[p], proj_block, raw)
                    else:
                        load_rows(delta, b, slot, first, width, bias[p], raw)
                    discretise(raw.reshape(-1), zero, softplus, dts.reshape(-1), slopes.reshape(-1))
                if has_z and (k == 0 or z.shape[1] > 1):
                    load_rows(z, b, k if z.shape[1] > 1 else 0, first, width, no_bias, raw)
                    silu_gates(raw.reshape(-1), gates.reshape(-1), slopes.reshape(-1))
                if fresh_u or fresh_dt:
                    for j in range(width):
                        skip[j] = D[p, first + j]
                        for n in range(state):
                            decay_rates[n, j] = A[p, first + j, n]
                    multiply(dts.reshape(-1), us.reshape(-1), drives.reshape(-1))
                    if tabulate and fresh_dt:
                        tabulate_decays(dts, decay_rates, width, decays)
                h[:] = zero
                if tabulate:
                    walk_tabulated(decays, drives, Bs[b, k], Cs[b, k], rows[k], h, scan_ys, width)
                else:
                    walk_exp(dts, decay_rates, drives, Bs[b, k], Cs[b, k], rows[k], h, scan_ys, width)
                skip_and_gate(scan_ys, us, skip, gates, rows[k], perm[k], summed and k > 0, width, ys)
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
    """Tasks and channel sub-blocks as in the forward. The decays ``exp(dt A)`` and drives ``dt u`` are tabulated
    per token (once for all directions that share them); per direction one forward pass stores every state and
    read-out, then one pass walks time back. ``du, ddelta, dz`` get every direction's share at the tokens'
    positions; ``dA, dD, dbias`` are (batch, sets, ...) partials, ``dB, dC`` (batch, blocks, K, L, N) partials."""
    batch, length, inner = u.shape[0], u.shape[2], u.shape[3]
    directions, state = Bs.shape[1], A.shape[2]
    span = -(-inner // blocks)
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
        hs = np.zeros((length + 1, state, LANES), u.dtype)
        decays = np.zeros((length, state, LANES), u.dtype)
        drives = np.zeros((length, LANES), u.dtype)
        ys = np.zeros((length, LANES), u.dtype)
        rates = np.zeros((state, LANES), u.dtype)
        grad = np.zeros((state, LANES), u.dtype)
        grad_a = np.zeros((state, LANES), u.dtype)
        grad_h = np.zeros(LANES, u.dtype)
        carried = np.zeros(LANES, u.dtype)
        dy = np.zeros(LANES, u.dtype)
        d_u = np.zeros(LANES, u.dtype)
        d_dt = np.zeros(LANES, u.dtype)
        skip = np.zeros(LANES, u.dtype)
        d_skip = np.zeros(LANES, u.dtype)
        d_bias = np.zeros(LANES, u.dtype)
        for first in range(start, stop, LANES):
            width = min(LANES, stop - first)
            for k in range(directions):
                p = k if A.shape[0] > 1 else 0
                own_u, own_delta, own_z = u.shape[1] > 1, delta.shape[1] > 1 or A.shape[0] > 1, z.shape[1] > 1
                if k == 0 or own_u:
                    load_rows(u, b, k if own_u else 0, first, width, no_bias, us)
                if k == 0 or own_delta:
                    load_rows(delta, b, k if delta.shape[1] > 1 else 0, first, width, bias[p], raw)
                    discretise(raw.reshape(-1), zero, softplus, dts.reshape(-1), slopes.reshape(-1))
                if has_z and (k == 0 or own_z):
                    load_rows(z, b, k if own_z else 0, first, width, no_bias, raw)
                    silu_gates(raw.reshape(-1), gates.reshape(-1), gate_slopes.reshape(-1))
                if k == 0 or dout.shape[1] > 1:
                    load_rows(dout, b, k if dout.shape[1] > 1 else 0, first, width, no_bias, dys)
                for j in range(width):
                    skip[j] = D[p, first + j]
                    d_skip[j] = zero
                    d_bias[j] = zero
                    for n in range(state):
                        rates[n, j] = A[p, first + j, n]
                        grad[n, j] = dlast[b, k, first + j, n]
                        grad_a[n, j] = zero
                if k == 0 or own_u or own_delta:
                    multiply(dts.reshape(-1), us.reshape(-1), drives.reshape(-1))
                    tabulate_decays(dts, rates, width, decays)
                hs[0] = zero
                for t in range(length):  # every state and read-out, forward
                    row = rows[k, t]
                    drive = drives[row]
                    decay = decays[row]
                    b_t = Bs[b, k, t]
                    c_t = Cs[b, k, t]
                    y = ys[t]
                    y[:] = zero
                    for n in range(state):
                        decay_n = decay[n]
                        h_prev = hs[t, n]
                        h_n = hs[t + 1, n]
                        b_n = b_t[n]
                        c_n = c_t[n]
                        for j in range(width):
                            h_n[j] = decay_n[j] * h_prev[j] + drive[j] * b_n
                            y[j] += c_n * h_n[j]
                # Loops that each write one array: fused, LLVM's alias checks exceed its limit and stay scalar.
                for t in range(length - 1, -1, -1):
                    row = rows[k, t]
                    token = perm[k, t]
                    dt = dts[row]
                    ut = us[row]
                    gate = gates[token]
                    gate_slope = gate_slopes[token]
                    dout_t = dys[token]
                    y = ys[t]
                    dz_t = dz_rows[token]
                    for j in range(width):
                        dz_t[j] += dout_t[j] * (y[j] + skip[j] * ut[j]) * gate_slope[j]
                    for j in range(width):
                        dy[j] = dout_t[j] * gate[j]
                    for j in range(width):
                        d_skip[j] += dy[j] * ut[j]
                    drive = drives[row]
                    d_u[:width] = zero
                    d_dt[:width] = zero
                    b_t = Bs[b, k, t]
                    c_t = Cs[b, k, t]
                    dB_t = dB[b, block, k, t]
                    dC_t = dC[b, block, k, t]
                    for n in range(state):
                        g_n = grad[n]
                        h_n = hs[t + 1, n]
                        h_prev = hs[t, n]
                        decay_n = decays[row, n]
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
                    store_rows(du_rows, du, b, k if own_u else 0, first, width)
                if delta.shape[1] > 1 or k == directions - 1:
                    store_rows(ddelta_rows, ddelta, b, k if delta.shape[1] > 1 else 0, first, width)
                if has_z and (own_z or k == directions - 1):
                    store_rows(dz_rows, dz, b, k if own_z else 0, first, width)


def _signatures(float_type: str) -> tuple[str, str]:
    """Kernel signatures: token tensors take any strides (layout "A": permuted and strided views share one compiled
    kernel), the small tensors the kernels allocate or the wrapper makes contiguous are C-contiguous."""
    layouts = (":,:,:,:", ":,::1", ":,:,::1", ":,:,:,::1", ":,:,:,:,::1")
    any4, c2, c3, c4, c5 = (f"{float_type}[{dims}]" for dims in layouts)
    tensors = f"{any4}, {any4}, {any4}, {c3}, {c4}, {c4}, {c2}, {c2}"  # u, delta, z, A, B, C, D, bias
    orders = "i8[:,::1], i8[:,::1], b1, b1"  # perm, rows, softplus, has_z
    forward = f"void({tensors}, {c3}, {orders}, i8, {c4}, {c4})"  # + proj (dt_proj, transposed)
    backward = f"void({tensors}, {orders}, {any4}, {c4}, i8, {c4}, {c4}, {c4}, {c4}, {c3}, {c3}, {c5}, {c5})"
    return forward, backward


@cache
def forward_kernel(float_type: str):
    """The forward kernel for ``"f4"`` or ``"f8"``, compiled on first use (or loaded from the cache)."""
    signature = _signatures(float_type)[0]
    return compile_kernel(_forward, signature, f"forward {float_type}", parallel=True, fastmath=FASTMATH)


@cache
def backward_kernel(float_type: str):
    """The backward kernel, compiled only when something is trained (inference never pays for it)."""
    signature = _signatures(float_type)[1]
    return compile_kernel(_backward, signature, f"backward {float_type}", parallel=True, fastmath=FASTMATH)
