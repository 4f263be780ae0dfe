"""The scalar-decay SSM of TransMamba-switch (Mamba-2's SSD form) and its memory converter, in plain PyTorch.

Per head, with C = q, B = k, x = v (each ``head_dim`` wide) and a scalar decay ``a_t = exp(Δ_t · A) ∈ (0, 1]``:

    h_t = a_t · h_{t-1} + k_tᵀ (Δ_t v_t)          (state: head_dim × head_dim)
    y_t = q_t h_t

which is ``y = (L ∘ C Bᵀ) X`` with ``L[t, s] = Π_{s<j≤t} a_j`` and ``X = Δ V``: attention's ``(M ∘ Q Kᵀ) V`` with
the softmax replaced by the decay mask. Shapes: q, k, v ``(batch, heads, length, head_dim)``; ``delta`` and
``log_decay`` (= Δ·A ≤ 0) ``(batch, heads, length)``; states ``(batch, heads, head_dim, head_dim)`` in fp32.

``ssd_chunked`` is the chunked SSD algorithm written with matmuls (fast on CPU, no kernel): inside a chunk the
quadratic masked form, between chunks the state recurrence. Only differences of cumulative log-decays that are
≤ 0 are exponentiated, so nothing overflows. ``memory_converter`` is the recurrence run over a prefix without
outputs (the state at the TransPoint), ``ssm_sequential`` the token-by-token reference, ``ssm_step`` one token.
On CUDA, Mamba-2's fused kernel (``mamba_ssm``) is used when it is installed.
"""

from __future__ import annotations

import torch

try:  # optional CUDA kernel (Mamba-2); never required
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except ImportError:  # pragma: no cover - not installed on CPU machines
    mamba_chunk_scan_combined = None

SSM_BACKENDS = ("auto", "torch", "mamba_ssm")


def _segment_decay(log_decay: torch.Tensor) -> torch.Tensor:
    """``(..., c)`` log-decays -> ``(..., c, c)`` with ``[i, j] = exp(Σ_{j<m≤i} log_decay_m)`` for j ≤ i, else 0."""
    cum = torch.cumsum(log_decay, dim=-1)
    diff = cum[..., :, None] - cum[..., None, :]
    causal = torch.ones(diff.shape[-2:], dtype=torch.bool, device=diff.device).tril()
    return torch.exp(diff.masked_fill(~causal, float("-inf")))


def memory_converter(
    k: torch.Tensor, v: torch.Tensor, delta: torch.Tensor, log_decay: torch.Tensor, state: torch.Tensor | None = None
) -> torch.Tensor:
    """The state after a segment: ``h = (Π a) h_0 + Σ_i (Π_{i<j} a_j) k_iᵀ (Δ_i v_i)``, one weighted matmul.

    This is the paper's memory converter: run over the attention prefix's K and V, it gives the SSM exactly
    the state it would have had if it had read the prefix itself, so the switch at the TransPoint loses nothing.
    """
    log_decay = log_decay.float()
    cum = torch.cumsum(log_decay, dim=-1)
    weight = torch.exp(cum[..., -1:] - cum) * delta.float()  # (b, h, n), exponents ≤ 0
    new = torch.einsum("bhn,bhnk,bhnv->bhkv", weight, k.float(), v.float())
    if state is None:
        return new
    return torch.exp(cum[..., -1])[..., None, None] * state + new


def ssm_sequential(q, k, v, delta, log_decay, state=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference recurrence, one token at a time; returns (y (b, h, n, d), last state)."""
    b, h, n, d = q.shape
    state = q.new_zeros(b, h, d, v.shape[-1], dtype=torch.float32) if state is None else state.float()
    outputs = []
    for t in range(n):
        y, state = ssm_step(q[:, :, t], k[:, :, t], v[:, :, t], delta[:, :, t], log_decay[:, :, t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=2), state


def ssm_step(q, k, v, delta, log_decay, state) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: q/k/v (b, h, d), delta/log_decay (b, h), state (b, h, d, d) -> (y (b, h, d), new state)."""
    update = k.float()[..., :, None] * (delta.float()[..., None, None] * v.float()[..., None, :])
    state = torch.exp(log_decay.float())[..., None, None] * state + update
    y = torch.einsum("bhk,bhkv->bhv", q.float(), state)
    return y.to(q.dtype), state


def ssd_chunked(q, k, v, delta, log_decay, state=None, chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD: (y (b, h, n, d), last state), equal to :func:`ssm_sequential` up to float rounding."""
    b, h, n, d = q.shape
    dv = v.shape[-1]
    pad = (-n) % chunk_size
    q, k, v, delta, log_decay = (t.float() for t in (q, k, v, delta, log_decay))
    if pad:  # padded steps: no input (Δ = 0) and no decay (log a = 0), so they change nothing
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        delta, log_decay = (torch.nn.functional.pad(t, (0, pad)) for t in (delta, log_decay))
    chunks = (n + pad) // chunk_size
    q, k, v = (t.reshape(b, h, chunks, chunk_size, -1) for t in (q, k, v))
    delta, log_decay = (t.reshape(b, h, chunks, chunk_size) for t in (delta, log_decay))
    x = v * delta[..., None]
    cum = torch.cumsum(log_decay, dim=-1)  # within each chunk
    # 1. inside each chunk: the quadratic (attention-like) form with the decay mask.
    scores = (q @ k.transpose(-1, -2)) * _segment_decay(log_decay)
    y = scores @ x
    # 2. what each chunk adds to the state at its end, and how much the state decays across it.
    to_end = torch.exp(cum[..., -1:] - cum)
    chunk_states = torch.einsum("bhcn,bhcnk,bhcnv->bhckv", to_end, k, x)
    chunk_decay = torch.exp(cum[..., -1])  # (b, h, chunks)
    # 3. the state entering each chunk: a short recurrence over chunks.
    state = q.new_zeros(b, h, d, dv) if state is None else state.float()
    entering = []
    for c in range(chunks):
        entering.append(state)
        state = chunk_decay[:, :, c, None, None] * state + chunk_states[:, :, c]
    entering = torch.stack(entering, dim=2)  # (b, h, chunks, d, dv)
    # 4. the entering state read out by every token, decayed up to it.
    y = y + torch.exp(cum)[..., None] * (q @ entering)
    return y.reshape(b, h, chunks * chunk_size, dv)[:, :, :n], state


def _kernel_usable(q: torch.Tensor, backend: str) -> bool:
    if backend == "torch":
        return False
    available = mamba_chunk_scan_combined is not None and q.is_cuda
    if backend == "mamba_ssm" and not available:
        raise RuntimeError("ssm_backend='mamba_ssm' needs the mamba_ssm package and CUDA tensors.")
    return available


def ssd(q, k, v, delta, log_decay, state=None, chunk_size=64, backend="auto", A=None):
    """:func:`ssd_chunked`, or Mamba-2's kernel on CUDA when installed (then ``A`` (heads,) must be given).

    The kernel's state is (value dim, key dim) and its ``x`` is multiplied by Δ inside, so the arguments are
    mapped: x = v, B = k, C = q (one group per head), dt = Δ, initial state transposed.
    """
    if A is None or not _kernel_usable(q, backend):
        return ssd_chunked(q, k, v, delta, log_decay, state, chunk_size)
    initial = None if state is None else state.transpose(-1, -2).contiguous()
    y, last = mamba_chunk_scan_combined(
        v.transpose(1, 2).contiguous(),
        delta.transpose(1, 2).contiguous(),
        A,
        k.transpose(1, 2).contiguous(),
        q.transpose(1, 2).contiguous(),
        chunk_size,
        initial_states=initial,
        return_final_states=True,
    )
    return y.transpose(1, 2), last.transpose(-1, -2).float()
