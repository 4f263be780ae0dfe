"""Selective-scan ops in plain PyTorch, plus the dispatcher that picks the fastest available kernel.

Shapes follow `mamba_ssm.selective_scan_fn` so every backend is interchangeable:
``u, delta, z``: (batch, channels, length); ``A``: (channels, state); ``B, C``: (batch, groups, state, length)
with ``channels`` divisible by ``groups`` (each scan direction is one group); ``D, delta_bias``: (channels,).

Recurrence per channel: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``,
then ``y * silu(z)`` when ``z`` is given. All arithmetic runs in fp32 whatever the input dtype.

This file is copied into every exported model folder: it imports only torch and optional kernels.
"""

from __future__ import annotations

import os
from functools import cache

import torch
import torch.nn.functional as F
from transformers.utils import logging

logger = logging.get_logger(__name__)

BACKENDS = ("auto", "sequential", "chunked", "numba", "cuda")
ENV_BACKEND = "TRANSMAMBA_SCAN_BACKEND"
# Measured in BENCHMARKS.md (issue 14): the numba kernel against the PyTorch loop, pmamba-t/vim-t forward on CPU.
NUMBA_HINT = "`pip install numba` makes the CPU scan about {speedup} faster"
NUMBA_SPEEDUP = "8x"
_announced: set[str] = set()


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Common fp32 preparation: discretisation inputs shaped (batch, groups, per_group, length)."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    if channels % groups:
        raise ValueError(f"channels ({channels}) must be divisible by the groups of B/C ({groups}).")
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    per_group = channels // groups
    shape = (batch, groups, per_group, length)
    return u.float().view(shape), delta.view(shape), A.float().view(groups, per_group, -1), B.float(), C.float()


def _finish(y, u, D, z, dtype):
    """Skip connection and SiLU gate, back to the caller's dtype."""
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan_sequential(
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
    """Reference scan: one step per token, discretisation precomputed in one batched op.

    Iterates with ``unbind`` (never ``x[:, t]``), which keeps backward linear in length.
    """
    batch, channels, length = u.shape
    uf, dt, Af, Bf, Cf = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    # (batch, length, groups, per_group, state): time-major so each step reads one contiguous slab.
    decay = torch.exp(torch.einsum("bgel,gen->blgen", dt, Af))
    drive = torch.einsum("bgel,bgnl->blgen", dt * uf, Bf)
    readout = Cf.permute(3, 0, 1, 2).unsqueeze(-1)  # (length, batch, groups, state, 1)
    state = torch.zeros_like(decay[:, 0])
    outputs = []
    for decay_t, drive_t, c_t in zip(decay.unbind(1), drive.unbind(1), readout.unbind(0), strict=True):
        state = decay_t * state + drive_t
        outputs.append(torch.matmul(state, c_t).squeeze(-1))
    y = torch.stack(outputs, dim=-1).reshape(batch, channels, length)
    out = _finish(y, u, D, z, u.dtype)
    return (out, state.reshape(batch, channels, -1)) if return_last_state else out


def _inclusive_scan(decay: torch.Tensor, drive: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hillis-Steele scan of ``h = a h_prev + b`` along ``dim``: log2(n) steps, only products of decays <= 1."""
    n = decay.shape[dim]
    step = 1
    while step < n:
        prev_decay = decay.narrow(dim, 0, n - step)
        prev_drive = drive.narrow(dim, 0, n - step)
        cur_decay = decay.narrow(dim, step, n - step)
        cur_drive = drive.narrow(dim, step, n - step)
        drive = torch.cat([drive.narrow(dim, 0, step), cur_decay * prev_drive + cur_drive], dim=dim)
        decay = torch.cat([decay.narrow(dim, 0, step), cur_decay * prev_decay], dim=dim)
        step *= 2
    return decay, drive


def selective_scan_chunked(
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
    chunk_size: int = 64,
):
    """Exact two-level scan for GPUs without kernels: O(log L) launches instead of L.

    Within each chunk a Hillis-Steele scan, across chunks a scan of the chunk end-states, then one fused
    correction. Only ``exp(delta*A)`` (<= 0 exponent) is ever taken, so nothing overflows at large delta.
    """
    batch, channels, length = u.shape
    uf, dt, Af, Bf, Cf = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    decay = torch.exp(torch.einsum("bgel,gen->bgenl", dt, Af))
    drive = torch.einsum("bgel,bgnl->bgenl", dt * uf, Bf)
    chunk = max(1, min(chunk_size, length))
    chunks = -(-length // chunk)
    pad = chunks * chunk - length
    if pad:
        decay = F.pad(decay, (0, pad), value=1.0)
        drive = F.pad(drive, (0, pad))
    decay = decay.unflatten(-1, (chunks, chunk))
    drive = drive.unflatten(-1, (chunks, chunk))
    decay, drive = _inclusive_scan(decay, drive, dim=-1)
    # State entering each chunk: scan over chunk end-states, shifted by one chunk.
    end_decay, end_state = _inclusive_scan(decay[..., -1], drive[..., -1], dim=-1)
    carry = F.pad(end_state[..., :-1], (1, 0))
    states = (drive + decay * carry.unsqueeze(-1)).flatten(-2)[..., :length]
    y = torch.einsum("bgenl,bgnl->bgel", states, Cf).reshape(batch, channels, length)
    out = _finish(y, u, D, z, u.dtype)
    return (out, states[..., -1].reshape(batch, channels, -1)) if return_last_state else out


def selective_state_step(
    state: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step for generation: ``u, delta, z`` (batch, channels), ``B, C`` (batch, groups, state).

    Returns ``(y, new_state)`` with ``state`` (batch, channels, state) kept in fp32.
    """
    batch, channels = u.shape
    uf, dt, Af, Bf, Cf = _prepare(
        u[..., None], delta[..., None], A, B[..., None], C[..., None], delta_bias, delta_softplus
    )
    dt, uf = dt[..., 0], uf[..., 0]
    prev = state.float().view(batch, Af.shape[0], Af.shape[1], Af.shape[2])
    new_state = torch.exp(dt[..., None] * Af) * prev + (dt * uf)[..., None] * Bf[:, :, None, :, 0]
    y = torch.einsum("bgen,bgn->bge", new_state, Cf[..., 0]).reshape(batch, channels, 1)
    out = _finish(y, u[..., None], D, None if z is None else z[..., None], u.dtype)[..., 0]
    return out, new_state.reshape(batch, channels, -1)


@cache  # resolve_backend runs on every scan call: a failed import must not be retried each time
def _cuda_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


@cache
def _numba_ops() -> tuple | None:
    """(selective_scan_numba, selective_scan_numba_tokens), or None without numba.

    Imported by name (``from .module import name``): the form by which transformers finds the files to copy
    into a saved folder, so the kernel ships with every exported model.
    """
    try:
        from .selective_scan_numba import selective_scan_numba, selective_scan_numba_tokens
    except ImportError:
        return None
    return selective_scan_numba, selective_scan_numba_tokens


def _numba_scan():
    ops = _numba_ops()
    return None if ops is None else ops[0]


def is_tracing() -> bool:
    """Under torch.export, torch.compile, ONNX (dynamo) or torch.jit tracing: the kernels are opaque there."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def _auto_backend(device: torch.device) -> str:
    """The fastest backend present; while tracing, a traceable one (the CUDA and numba kernels are not)."""
    if device.type == "cuda":
        return "chunked" if is_tracing() or _cuda_scan() is None else "cuda"
    if is_tracing():
        return "sequential"
    if _numba_scan() is not None:
        return "numba"
    if "no numba" not in _announced:
        _announced.add("no numba")
        hint = NUMBA_HINT.format(speedup=NUMBA_SPEEDUP)
        logger.warning(f"transmamba: numba is not installed, so the scan runs a PyTorch loop; {hint}.")
    return "sequential"


def resolve_backend(requested: str, device: torch.device) -> str:
    """Pick a backend: an explicit request (config or ``TRANSMAMBA_SCAN_BACKEND``) wins, else the fastest present."""
    choice = requested if requested != "auto" else os.environ.get(ENV_BACKEND, "auto")
    if choice not in BACKENDS:
        raise ValueError(f"Unknown scan backend {choice!r}; choose one of {', '.join(BACKENDS)}.")
    if choice == "auto":
        choice = _auto_backend(device)
    elif choice == "cuda" and (_cuda_scan() is None or device.type != "cuda"):
        raise ValueError("Scan backend 'cuda' needs CUDA tensors and `pip install transmamba[cuda]` (mamba-ssm).")
    elif choice == "numba" and _numba_scan() is None:
        raise ValueError("Scan backend 'numba' needs `pip install numba`.")
    if choice not in _announced and not is_tracing():
        _announced.add(choice)
        logger.info("transmamba selective scan: using the %s backend on %s", choice, device.type)
    return choice


def selective_scan(
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
    backend: str = "auto",
):
    """The one entry point the mixer calls; see the module docstring for shapes."""
    name = resolve_backend(backend, u.device)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "cuda":
        return _cuda_scan()(*args)
    if name == "numba":
        return _numba_scan()(*args)
    if name == "chunked":
        return selective_scan_chunked(*args)
    return selective_scan_sequential(*args)


def _tokens_via_channels(u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_softplus, separate, backend):
    """The token-major scan through the channel-major backends: gather every direction into scan order, scan,
    put the outputs back at their tokens' positions. Exact, but it materialises K copies of the inputs."""
    batch, _, length, inner = u.shape
    directions = perm.shape[0]
    expanded = (batch, directions, length, inner)

    def channels(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        index = order[None, :, :, None].expand(expanded)
        return x.expand(expanded).gather(2, index).transpose(2, 3).reshape(batch, directions * inner, length)

    def per_channel(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.expand(directions, *x.shape[1:]).reshape(directions * inner, *x.shape[2:])

    y = selective_scan(
        channels(u, rows),
        channels(delta, rows),
        per_channel(A),
        B.transpose(2, 3),
        C.transpose(2, 3),
        per_channel(D),
        z=None if z is None else channels(z, perm),
        delta_bias=per_channel(delta_bias),
        delta_softplus=delta_softplus,
        backend=backend,
    )
    y = y.view(batch, directions, inner, length).transpose(2, 3)
    y = y.gather(2, perm.argsort(dim=1)[None, :, :, None].expand(expanded))  # scan order -> token positions
    return y if separate else y.sum(1, keepdim=True)


def selective_scan_tokens(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    perm: torch.Tensor,
    rows: torch.Tensor | None = None,
    delta_softplus: bool = False,
    separate: bool = False,
    backend: str = "auto",
    delta_proj: torch.Tensor | None = None,
) -> torch.Tensor:
    """K scan directions over one token sequence, straight from token-major tensors (what the mixer calls).

    ``u, delta, z``: (batch, 1 or K, length, channels), any strides; one slot means shared by all directions.
    Direction ``k`` reads ``z`` at ``perm[k, t]`` and ``u, delta`` at ``rows[k, t]`` at step ``t`` (``rows``
    defaults to ``perm``; an identity row means that input is already in scan order). ``A``: (1 or K, channels,
    state); ``D, delta_bias``: (1 or K, channels); ``B, C``: (batch, K, length, state) in scan order.
    Returns (batch, 1, length, channels), the directions' outputs summed at each token's position, or with
    ``separate`` (batch, K, length, channels), one slot per direction, still at token positions.
    With ``delta_proj`` (slots of delta, channels, rank), ``delta`` is ``dt_proj``'s rank-R input (batch, 1 or K,
    length, rank) and Δ = delta · delta_projᵀ: the numba kernel forms it per channel block, so the (batch, length,
    channels) Δ is never stored during inference; the other backends materialise it.
    The numba backend reads these layouts directly; the others go through ``selective_scan`` on gathered copies.
    """
    rows = perm if rows is None else rows
    if resolve_backend(backend, u.device) == "numba":
        return _numba_ops()[1](
            u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_softplus, separate, delta_proj=delta_proj
        )
    if delta_proj is not None:
        delta = torch.matmul(delta, delta_proj.mT)
    return _tokens_via_channels(u, delta, A, B, C, D, z, delta_bias, perm, rows, delta_softplus, separate, backend)
