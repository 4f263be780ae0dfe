"""Attention-informed SSM init (beyond the paper): a Mamba mixer starts from the attention layer it replaces.

Attention computes ``y_t = sum_s softmax(q_t . k_s) v_s``; a selective SSM computes
``y_t = sum_s C_t . (decay) B_s x_s``. So, per layer and per SSM parameter set (direction):

- ``x <- W_V``: the first ``w = min(inner, heads * head_dim)`` rows of the mixer's ``in_proj`` x half take the
  value projection (and its bias), so mixer channel j carries value channel j, which is exactly what the
  subcloned ``out_proj`` (from the attention output projection, input column j -> mixer channel j) expects.
  Mixer channels from w on keep the standard init (their ``out_proj`` columns are zero).
- ``B <- W_K``, ``C <- W_Q``: the SSM's state size N (16) is smaller than a head (64), and B/C are shared by
  all channels, so parameter set k takes the first N dims of head ``k mod heads`` of the key/query projection
  (set 0 = head 0: PlainMamba's one shared set, the forward scan of ViM, a language model's mixer; set 1 =
  head 1: ViM's backward scan; a state wider than a head takes the first N dims of the whole projection).
  B and C are computed from the mixer's x channels, not from the block input h, so their rows of ``x_proj``
  are the least-squares maps ``W_K[head, :N] pinv(W_V[:w])`` and ``W_Q[head, :N] pinv(W_V[:w])`` on the first w
  channels (zero on the rest): with an identity conv,
  ``B_t = k_t[:N]`` and ``C_t = q_t[:N]`` whenever ``x_t = W_V h_t`` (exact on W_V's row space, SiLU aside).
  The pseudo-inverse keeps only W_V's well-conditioned directions (singular values >= ``PINV_RTOL`` of the
  largest): on the dropped ones the exact inverse amplifies the gap between the mixer's x (SiLU, bias) and W_V h.
- The conv becomes the identity (so x reaches the projections unchanged). A vision mixer also opens its gate
  (z rows zero, bias ``OPEN_GATE_BIAS``: ``silu(z) = 1``, so y passes as attention's output would; a random gate
  scrambled every channel) and sets D to ``1 / tokens``, the self weight of a uniform attention (the standard
  D = 1 is a whole token's weight). Δ (dt rows of ``x_proj``, ``dt_proj``) and A keep the standard Mamba init;
  the query/key biases, softmax, RoPE and q/k norms have no counterpart.

Measured on the fine-tuned DINOv2-S/14 (issue 13, teacher-forced per layer, |mixer - attention|² over
|attention - bias|², six layers): standard init 1.01-1.19; the exact pinv with a random gate and D = 1 reached
80-10⁷, because layer 0's W_V has a condition number of 1.4e4; with the rules above 0.53-1.28.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PINV_RTOL = 0.05  # W_V's singular values below this fraction of the largest are left out of pinv(W_V)
OPEN_GATE_BIAS = 1.278464542761074  # silu(OPEN_GATE_BIAS) = 1

SSM_INITS = {  # what a report says about each --mixer-init of a vision student
    "standard": "standard Mamba init (S4D-real A, log-uniform dt, D = 1), as the paper",
    "attention": "attention-informed (beyond the paper): x <- W_V, B <- W_K, C <- W_Q of the same teacher layer, "
    "identity conv, open gate, D = 1/tokens; dt, A standard init (conversion/attention_init.py)",
}


@dataclass
class AttentionInit:
    """The tensors one parameter set receives: ``x_weight`` (w, hidden) and ``x_bias`` (w,) for ``in_proj``'s first
    w x rows; ``B`` and ``C`` (N, inner) for the B and C rows of ``x_proj``; ``head``: the head B/C came from."""

    width: int
    x_weight: torch.Tensor
    x_bias: torch.Tensor | None
    B: torch.Tensor
    C: torch.Tensor
    head: int


@torch.no_grad()
def attention_informed(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    value_bias: torch.Tensor | None,
    heads: int,
    inner: int,
    state: int,
    parameter_set: int = 0,
) -> AttentionInit:
    """``query``/``key``/``value``: (heads * head_dim, hidden) projections, one row block per query head (repeat
    grouped K/V heads first) and only the student's residual columns. See the module docstring for the mapping."""
    head_dim = query.shape[0] // heads
    if state > query.shape[0]:
        raise ValueError(f"state_size {state} exceeds the teacher's key width {query.shape[0]}; choose a smaller one.")
    head = parameter_set % heads
    if head * head_dim + state > query.shape[0]:  # a state wider than a head runs on into the next heads
        head = 0
    rows = slice(head * head_dim, head * head_dim + state)
    width = min(inner, value.shape[0])
    values = value[:width].float()
    inverse = torch.linalg.pinv(values, rtol=PINV_RTOL)  # (hidden, width)
    B = query.new_zeros(state, inner, dtype=torch.float32)
    C = query.new_zeros(state, inner, dtype=torch.float32)
    B[:, :width] = key[rows].float() @ inverse
    C[:, :width] = query[rows].float() @ inverse
    bias = value_bias[:width].float() if value_bias is not None else None
    return AttentionInit(width, values, bias, B, C, head)
