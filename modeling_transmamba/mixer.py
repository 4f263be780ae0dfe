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
from .selective_scan import selective_scan

NUM_MOVES = 5


@lru_cache(maxsize=64)
def _orders(directions: tuple[str, ...], height: int, width: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = scan_permutations(list(directions), height, width, length)
    return perm, move_codes(perm, width)


def _causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv + SiLU; the CUDA kernel when present, else PyTorch."""
    if x.is_cuda:
        try:
            from causal_conv1d import causal_conv1d_fn
        except ImportError:
            pass
        else:
            return causal_conv1d_fn(x.contiguous(), weight[:, 0], bias, activation="silu")
    out = F.conv1d(x, weight, bias, padding=weight.shape[-1] - 1, groups=x.shape[1])
    return F.silu(out[..., : x.shape[-1]])


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
            self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, bias=config.conv_bias)
        self.x_proj_weight = nn.Parameter(torch.empty(param_sets, rank + 2 * state, inner))
        self.dt_proj_weight = nn.Parameter(torch.empty(param_sets, inner, rank))
        self.dt_proj_bias = nn.Parameter(torch.empty(param_sets, inner))
        self.A_log = nn.Parameter(torch.empty(param_sets, inner, state))
        self.D = nn.Parameter(torch.empty(param_sets, inner))
        self.direction_B = nn.Parameter(torch.zeros(NUM_MOVES, state)) if config.direction_aware_update else None
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

    def _expand(self, param: torch.Tensor) -> torch.Tensor:
        return param.expand(self.num_directions, *param.shape[1:])

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
        k, inner = self.num_directions, self.inner
        perm, codes = _orders(self.directions, grid[0], grid[1], length)
        perm, codes = perm.to(hidden_states.device), codes.to(hidden_states.device)
        index = perm.reshape(-1)

        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        if self.config.conv_dim == 2:
            image = x.transpose(1, 2).reshape(batch, inner, grid[0], grid[1])
            x = F.silu(self.conv(image)).flatten(2).transpose(1, 2)
        # (batch, directions * inner, length): each direction's tokens in its scan order.
        xs, zs = (
            t.index_select(1, index).view(batch, k, length, inner).permute(0, 1, 3, 2).reshape(batch, k * inner, length)
            for t in (x, z)
        )
        if self.config.conv_dim == 1:
            weight, bias = self.conv.weight, self.conv.bias
            if weight.shape[0] != k * inner:
                weight = weight.repeat(k, 1, 1)
                bias = bias.repeat(k) if bias is not None else None
            xs = _causal_conv1d(xs, weight, bias)

        projected = torch.einsum("bkel,kre->bkrl", xs.view(batch, k, inner, length), self._expand(self.x_proj_weight))
        dt_low, B, C = projected.split([self.rank, self.state, self.state], dim=2)
        dt = torch.einsum("bkrl,ker->bkel", dt_low, self._expand(self.dt_proj_weight)).reshape(batch, k * inner, length)
        if self.direction_B is not None:
            B = B + self.direction_B[codes].transpose(1, 2)
        y = selective_scan(
            xs,
            dt,
            -torch.exp(self._expand(self.A_log).float()).reshape(k * inner, self.state),
            B.contiguous(),
            C.contiguous(),
            self._expand(self.D).reshape(-1),
            z=zs,
            delta_bias=self._expand(self.dt_proj_bias).reshape(-1),
            delta_softplus=True,
            backend=self.config.scan_backend,
        )
        y = y.view(batch, k, inner, length).transpose(2, 3)  # (batch, directions, length, inner), scan order
        scale = 1.0 / k if self.config.combine_directions == "mean" else 1.0
        combined = y.new_zeros(batch, length, inner).index_add(1, index, y.reshape(batch, k * length, inner))
        output = self.out_proj(combined * scale)
        if not output_direction_outputs:
            return output, None
        # Through out_proj itself, so adapters on it (LoRA) count too; each direction then keeps 1/k of the bias.
        directions = self.out_proj(y * scale)
        if self.out_proj.bias is not None:
            directions = directions - self.out_proj.bias * (1.0 - 1.0 / k)
        return output, directions
