"""The generation cache of TransMamba-switch: keys/values only for the tokens before each layer's TransPoint, plus
each layer's SSM state.

A layer's key/value cache stops growing at its TransPoint P and is freed once the sequence has passed P (no later
token attends); the SSM state (``heads × head_dim × head_dim`` per layer) is kept up to date at every token, so
the switch at P needs no recomputation. Past the largest TransPoint every new token costs O(1) time and memory.
``generate()`` threads it as the ``cache`` model kwarg and reads it back from the output's ``cache`` field.
"""

from __future__ import annotations

import torch


class TransMambaSwitchCache:
    is_compileable = False

    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.ssm_states: list[torch.Tensor | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def append_kv(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the attention-mode tokens' keys/values (batch, kv_heads, n, head_dim); returns all cached ones."""
        if self.keys[layer_idx] is not None:
            keys = torch.cat([self.keys[layer_idx], keys], dim=2)
            values = torch.cat([self.values[layer_idx], values], dim=2)
        self.keys[layer_idx], self.values[layer_idx] = keys, values
        return keys, values

    def release_kv(self, layer_idx: int) -> None:
        """The sequence has reached the layer's TransPoint: no later token attends, so drop its keys/values."""
        self.keys[layer_idx] = self.values[layer_idx] = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the selected beams (beam search)."""
        for states in (self.keys, self.values, self.ssm_states):
            for i, state in enumerate(states):
                if state is not None:
                    states[i] = state.index_select(0, beam_idx.to(state.device))

    def kv_tokens(self) -> list[int]:
        """Cached key/value tokens per layer (0 where the layer has passed its TransPoint)."""
        return [0 if k is None else k.shape[2] for k in self.keys]

    def nbytes(self) -> int:
        tensors = self.keys + self.values + self.ssm_states
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


__all__ = ["TransMambaSwitchCache"]
