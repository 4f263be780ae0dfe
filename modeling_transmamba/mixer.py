"""The Mamba-1 selective-SSM mixer with any number of scan directions, all scanned in one kernel call."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .configuration_transmamba import TransMambaConfig
from .scan_orders import move_codes, scan_permutations
from .selective_scan import is_tracing, selective_scan_tokens

NUM_MOVES = 5


Orders = tuple[torch.Tensor, torch.Tensor]  # (perm, move codes)


def _make_orders(directions: tuple[str, ...], height: int, width: int, length: int) -> Orders:
    # Made outside inference mode, or a first (cached) call under it would poison later training.
    with torch.inference_mode(False):
        perm = scan_permutations(list(directions), height, width, length)
        return perm, move_codes(perm, width)


_cached_orders = lru_cache(maxsize=64)(_make_orders)


def _orders(directions: tuple[str, ...], height: int, width: int, length: int) -> Orders:
    """Scan orders and move codes, cached across calls; never cached while tracing (torch.export, ONNX), where
    they are the tracer's fake tensors and would poison every later eager call."""
    if is_tracing():
        return _make_orders(directions, height, width, length)
    return _cached_orders(directions, height, width, length)


class CausalConv1d(nn.Conv1d):
    """Depthwise causal conv + SiLU over token-major (batch, length, channels); the CUDA kernel when present.

    On CPU it runs as a (1, kernel) conv2d on the channels-last image (batch, channels, 1, length), which is the
    token-major tensor itself: oneDNN's NHWC depthwise path, measured here 5x faster than conv1d's on a
    transposed copy (ViM-T: 24 calls per forward). It reads its weights only inside its own forward: accelerate's
    offload hooks load a module's weights when that module is called, so code that read ``conv.weight`` from
    outside got the empty ``meta`` tensor (NaN outputs).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            try:
                from causal_conv1d import causal_conv1d_fn
            except ImportError:
                pass
            else:
                out = causal_conv1d_fn(x.transpose(1, 2).contiguous(), self.weight[:, 0], self.bias, activation="silu")
                return out.transpose(1, 2)
        length, pad = x.shape[1], self.kernel_size[0] - 1
        image = x.contiguous().unsqueeze(1).permute(0, 3, 1, 2)  # (batch, channels, 1, length), channels-last
        out = F.conv2d(image, self.weight.unsqueeze(2), self.bias, padding=(0, pad), groups=self.groups)
        out = out[..., :length]  # output t saw inputs t - pad .. t: causal
        out = F.silu(out, inplace=True) if not torch.is_grad_enabled() else F.silu(out)
        return out.permute(0, 2, 3, 1).squeeze(1)


class TransMambaMixer(nn.Module):
    """Selective SSM over several scan orders of one token sequence.

    Directions are stacked along the channel axis (direction k owns channels ``k*E:(k+1)*E`` and group k of
    B/C), so the whole layer is one ``selective_scan`` call. With ``share_ssm_params`` the per-direction
    parameters have a leading size of 1 and are broadcast; otherwise it is the number of directions.
    """

    def __init__(self, config: TransMambaConfig):
        super().__init__()
        self.config = config
        hidden, inner = config.hidden_size, config.intermediate_size
        state, rank = config.state_size, config.time_step_rank
        self.directions = tuple(config.scan_directions)
        self.num_directions = len(self.directions)
        param_sets = 1 if config.share_ssm_params else self.num_directions
        self.inner, self.state, self.rank = inner, state, rank

        self.in_proj = nn.Linear(hidden, 2 * inner, bias=config.in_proj_bias)
        kernel = config.conv_kernel
        if config.conv_dim == 2:
            self.conv = nn.Conv2d(inner, inner, kernel, padding=kernel // 2, groups=inner, bias=config.conv_bias)
        else:
            channels = param_sets * inner
            self.conv = CausalConv1d(channels, channels, kernel, groups=channels, bias=config.conv_bias)
        self.x_proj_weight = nn.Parameter(torch.empty(param_sets, rank + 2 * state, inner))
        self.dt_proj_weight = nn.Parameter(torch.empty(param_sets, inner, rank))
        self.dt_proj_bias = nn.Parameter(torch.empty(param_sets, inner))
        self.A_log = nn.Parameter(torch.empty(param_sets, inner, state))
        self.D = nn.Parameter(torch.empty(param_sets, inner))
        self.direction_B = nn.Parameter(torch.zeros(NUM_MOVES, state)) if config.direction_aware_update else None
        # SS2D (VMamba): LayerNorm on the summed directions, then the SiLU(z) gate, outside the scan.
        self.out_norm = nn.LayerNorm(inner) if getattr(config, "mixer_out_norm", False) else None
        self.out_proj = nn.Linear(inner, hidden, bias=config.out_proj_bias)

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Standard Mamba init of the SSM (S4D-real A, dt log-uniform in [dt_min, dt_max]).

        Uses `transformers.initialization`, which skips tensors already loaded from a checkpoint.
        """
        cfg = self.config
        init.kaiming_uniform_(self.conv.weight, a=math.sqrt(5))
        if self.conv.bias is not None:
            init.zeros_(self.conv.bias)
        # Each set is an nn.Linear(inner, R + 2N) weight, so nn.Linear's default bound 1/sqrt(inner); kaiming on the
        # stacked 3-D tensor would take (R + 2N) * inner as its fan-in and start several times too small.
        init.uniform_(self.x_proj_weight, -(self.inner**-0.5), self.inner**-0.5)
        dt_std = self.rank**-0.5
        init.uniform_(self.dt_proj_weight, -dt_std, dt_std)
        low, high = math.log(cfg.time_step_min), math.log(cfg.time_step_max)
        dt = torch.exp(torch.rand_like(self.dt_proj_bias) * (high - low) + low).clamp(min=cfg.time_step_floor)
        init.copy_(self.dt_proj_bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, self.state + 1, dtype=self.A_log.dtype, device=self.A_log.device)
        init.copy_(self.A_log, torch.log(a).expand_as(self.A_log))
        init.ones_(self.D)
        if self.direction_B is not None:
            init.zeros_(self.direction_B)

    def _norm_and_gate(
        self, combined: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``LN(sum_d y_d) * silu(z)``, and each direction's share of it: ``y_d`` normalised with the sum's mean and
        std, ``1/k`` of the LN bias, gated. The shares add up to the gated output exactly, so the distillation's
        per-direction outputs still sum to the mixer output."""
        norm, gate = self.out_norm, F.silu(z)
        output = norm(combined) * gate
        if y is None:
            return output, None
        mean = combined.mean(-1, keepdim=True)
        inv_std = torch.rsqrt(combined.var(-1, unbiased=False, keepdim=True) + norm.eps)
        k = y.shape[1]
        shares = (y - mean.unsqueeze(1) / k) * inv_std.unsqueeze(1) * norm.weight + norm.bias / k
        return output, shares * gate.unsqueeze(1)

    def _scan_inputs(
        self, x: torch.Tensor, grid: tuple[int, int], perm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conv and x_proj: ``u`` token-major (batch, 1 or K, length, inner), ``dt_proj``'s rank-R input (batch,
        1 or K, length, R; the scan applies ``dt_proj`` itself), ``B, C`` (batch, 1 or K, length, state), and
        ``rows``: where direction k's step t finds its token in them.

        A 2-D conv runs once on the grid, channels-last (the token-major layout itself, so no transposed copy), and
        every projection once per parameter set: with shared parameters (PlainMamba) nothing is computed or stored
        per direction, the scan reads the tokens in each order itself. A 1-D causal conv runs along each
        direction's scan order, so there ``u`` is per direction, in scan order.
        """
        batch, length, inner = x.shape
        if self.config.conv_dim == 2:
            image = x.unflatten(1, grid).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            conv = self.conv(image)
            conv = F.silu(conv, inplace=True) if not torch.is_grad_enabled() else F.silu(conv)
            u = conv.permute(0, 2, 3, 1).reshape(batch, 1, length, inner)  # a view: channels-last is token-major
            rows = perm
        else:
            k = self.num_directions
            # One conv per direction's parameter set over (batch, length, K * inner): step t of every direction
            # side by side; a shared set sees each direction as its own batch entry.
            if self.conv.in_channels == k * inner:
                u = self.conv(x[:, perm.t()].flatten(2)).view(batch, length, k, inner).transpose(1, 2)
            else:
                u = self.conv(x[:, perm].flatten(0, 1)).view(batch, k, length, inner)
            rows = torch.arange(length, device=perm.device).expand_as(perm)
        projected = torch.matmul(u, self.x_proj_weight.transpose(1, 2))  # (batch, sets, length, R + 2N)
        dt_low, B, C = projected.split([self.rank, self.state, self.state], dim=3)
        return u, dt_low, B, C, rows

    def forward(
        self,
        hidden_states: torch.Tensor,
        grid: tuple[int, int],
        output_direction_outputs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mix ``hidden_states`` (batch, length, hidden) laid out on ``grid`` (height, width).

        Returns the mixer output and, on request, each direction's contribution (batch, directions, length,
        hidden) in that direction's scan order; the contributions sum to the output.
        """
        batch, length, _ = hidden_states.shape
        k = self.num_directions
        perm, codes = _orders(self.directions, grid[0], grid[1], length)
        perm, codes = perm.to(hidden_states.device), codes.to(hidden_states.device)

        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)  # token-major views, read in place by the scan
        u, dt_low, B, C, rows = self._scan_inputs(x, grid, perm)
        # B, C are small (state-sized): materialise them per direction, in scan order.
        index = rows[None, :, :, None].expand(batch, k, length, self.state)
        B = B.expand(batch, k, length, self.state).gather(2, index)
        C = C.expand(batch, k, length, self.state).gather(2, index)
        if self.direction_B is not None:
            B = B + self.direction_B[codes]
        y = selective_scan_tokens(
            u,
            dt_low,
            -torch.exp(self.A_log.float()),
            B,
            C,
            self.D,
            z.unsqueeze(1) if self.out_norm is None else None,
            self.dt_proj_bias,
            perm,
            rows,
            delta_softplus=True,
            separate=output_direction_outputs,
            backend=self.config.scan_backend,
            delta_proj=self.dt_proj_weight,
        )  # (batch, 1 or directions, length, inner) at the tokens' raster positions
        scale = 1.0 / k if self.config.combine_directions == "mean" else 1.0
        combined = y.sum(1) if output_direction_outputs else y[:, 0]
        if self.out_norm is not None:
            combined, y = self._norm_and_gate(combined, y if output_direction_outputs else None, z)
        output = self.out_proj(combined * scale if scale != 1.0 else combined)
        if not output_direction_outputs:
            return output, None
        y = y.gather(2, perm[None, :, :, None].expand_as(y))  # each direction in its scan order
        # Through out_proj itself, so adapters on it (LoRA) count too; each direction then keeps 1/k of the bias.
        directions = self.out_proj(y * scale)
        if self.out_proj.bias is not None:  # the bias itself via the module (out_proj(0)): offload hooks then fire
            directions = directions - self.out_proj(y.new_zeros(self.inner)) * (1.0 - 1.0 / k)
        return output, directions
