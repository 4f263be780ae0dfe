"""TransMamba-switch (Li et al., arXiv 2503.24067): one causal LM whose layers switch from attention to an SSM.

Every layer has one set of projections. Read as attention they are Q, K, V (softmax attention with RoPE); read
as an SSM they are C = Q·s, B = K, x = V (no RoPE; s the attention scale), with a per-head step Δ and decay A:
``h_t = exp(Δ_t A) h_{t-1} + k_tᵀ (Δ_t v_t)``, ``y_t = C_t h_t`` (``switch_ssm``). Layer l runs attention for the
tokens before its TransPoint P_l and the SSM from P_l on. The SSM's state at P_l comes from the memory converter
(the recurrence run over the prefix's K and ΔV), so the SSM tokens see the whole prefix exactly as if the SSM
had read it: nothing is lost at the switch. Cost per layer O(P²·d + (T−P)·d²).

Blocks are LLaMA's (RMSNorm, gated MLP; Gemma-3's sandwich norms, norm offset and embedding scale as options),
so a LLaMA/Mistral/Qwen2 or Gemma-3 teacher copies in by module name (see ``conversion/switch_lm.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_transmamba_switch import TransMambaSwitchConfig
from .mamba_lm import MixerDecoderLayer, RecurrentLMMixin, TransLlavaMambaEmbedding, TransLlavaMambaRMSNorm
from .switch_cache import TransMambaSwitchCache
from .switch_ssm import memory_converter, ssd, ssm_step


@dataclass
class TransMambaSwitchModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: TransMambaSwitchCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class TransMambaSwitchCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: TransMambaSwitchCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def rotary(positions: torch.Tensor, head_dim: int, theta: float, factor: float, dtype) -> tuple:
    """LLaMA's RoPE tables (cos, sin) of shape (length, head_dim) for ``positions`` (linear scaling by factor)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim)
    )
    freqs = positions.float()[:, None] * (inv_freq / factor)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class TransMambaSwitchMixer(nn.Module):
    """Shared-projection mixer: attention before the layer's TransPoint, the SSM from it on.

    GQA: the ``num_key_value_heads`` key/value heads are B and x of groups of ``heads / kv_heads`` query heads,
    as attention shares them; each query head (its C) keeps its own Δ, A and ``head_dim × head_dim`` state.
    """

    def __init__(self, config: TransMambaSwitchConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.transpoint = config.layer_transpoints[layer_idx]
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        hidden, width, kv_width = config.hidden_size, self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, width, bias=config.qkv_bias)
        self.k_proj = nn.Linear(hidden, kv_width, bias=config.qkv_bias)
        self.v_proj = nn.Linear(hidden, kv_width, bias=config.qkv_bias)
        self.o_proj = nn.Linear(width, hidden, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm = TransLlavaMambaRMSNorm(self.head_dim, config.rms_norm_eps, config.norm_offset)
            self.k_norm = TransLlavaMambaRMSNorm(self.head_dim, config.rms_norm_eps, config.norm_offset)
        self.dt_proj = nn.Linear(hidden, self.heads, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(self.heads))
        self.A_log = nn.Parameter(torch.empty(self.heads))
        if config.ssm_output_norm:
            self.ssm_norm = TransLlavaMambaRMSNorm(self.head_dim, config.rms_norm_eps)
        sliding = config.layer_types[layer_idx] == "sliding_attention"
        self.sliding_window = config.sliding_window if sliding else None
        self.rope_theta = (config.rope_local_theta or config.rope_theta) if sliding else config.rope_theta
        self.rope_factor = 1.0 if sliding else config.rope_scaling_factor

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba-2's init: Δ = softplus(dt_bias) log-uniform in [time_step_min, time_step_max] (floored), A
        uniform in ``A_init_range``; ``dt_proj`` starts at 0, so Δ is input-independent until trained."""
        cfg = self.config
        low, high = math.log(cfg.time_step_min), math.log(cfg.time_step_max)
        dt = torch.exp(torch.rand(self.heads) * (high - low) + low).clamp(min=cfg.time_step_floor)
        init.copy_(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        init.copy_(self.A_log, torch.log(torch.empty(self.heads).uniform_(*cfg.A_init_range)))
        init.zeros_(self.dt_proj.weight)

    def projections(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (b, heads, n, d), k and v (b, kv_heads, n, d), after Gemma's q/k norms, before RoPE."""
        b, n, _ = hidden.shape
        q = self.q_proj(hidden).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.config.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def ssm_inputs(self, hidden, q, k, v) -> tuple[torch.Tensor, ...]:
        """(C, B, x, Δ, log a) per query head: C = q·scale, B/x = the group's k/v, log a = Δ·A."""
        groups = self.heads // self.kv_heads
        delta = F.softplus(self.dt_proj(hidden).float() + self.dt_bias.float()).transpose(1, 2)  # (b, heads, n)
        log_decay = -torch.exp(self.A_log.float())[:, None] * delta
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return q * self.config.attention_scale, k, v, delta, log_decay

    def attention(self, q, k, v, start: int, cache: TransMambaSwitchCache | None) -> torch.Tensor:
        """Causal softmax attention (RoPE; sliding window on sliding layers) of new tokens at ``start``..."""
        n = q.shape[2]
        cos, sin = rotary(
            torch.arange(start, start + n, device=q.device), self.head_dim, self.rope_theta, self.rope_factor, q.dtype
        )
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append_kv(self.layer_idx, k, v)
        past = k.shape[2] - n
        mask = None
        if self.sliding_window is not None or (past and n > 1):
            query_pos = torch.arange(past, past + n, device=q.device)[:, None]
            key_pos = torch.arange(k.shape[2], device=q.device)[None, :]
            mask = key_pos <= query_pos
            if self.sliding_window is not None:
                mask = mask & (key_pos > query_pos - self.sliding_window)
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and n > 1,
            scale=self.config.attention_scale,
            enable_gqa=self.kv_heads != self.heads,
        )

    def mix(self, hidden: torch.Tensor, cache: TransMambaSwitchCache | None = None) -> torch.Tensor:
        """Per-head outputs (b, heads, n, d) before ``o_proj``: attention for positions < P, SSM from P on."""
        start = cache.seen_tokens if cache is not None else 0
        n = hidden.shape[1]
        attended = min(max(self.transpoint - start, 0), n)  # the first `attended` new tokens are before P
        q, k, v = self.projections(hidden)
        parts = []
        if attended:
            parts.append(self.attention(q[:, :, :attended], k[:, :, :attended], v[:, :, :attended], start, cache))
        if attended < n or cache is not None:
            C, B, x, delta, log_decay = self.ssm_inputs(hidden, q, k, v)
            state = cache.ssm_states[self.layer_idx] if cache is not None else None
            if attended:  # the memory converter: the prefix's K and ΔV into the state at the TransPoint
                state = memory_converter(
                    B[:, :, :attended], x[:, :, :attended], delta[:, :, :attended], log_decay[:, :, :attended], state
                )
            if attended < n:
                tail = (
                    C[:, :, attended:],
                    B[:, :, attended:],
                    x[:, :, attended:],
                    delta[:, :, attended:],
                    log_decay[:, :, attended:],
                )
                if n - attended == 1 and state is not None:
                    y, state = ssm_step(*(t[:, :, 0] for t in tail), state)
                    y = y[:, :, None]
                else:
                    y, state = ssd(
                        *tail,
                        state,
                        self.config.ssm_chunk_size,
                        self.config.ssm_backend,
                        -torch.exp(self.A_log.float()),
                    )
                y = y.to(hidden.dtype)
                parts.append(self.ssm_norm(y) if self.config.ssm_output_norm else y)
            if cache is not None:
                cache.ssm_states[self.layer_idx] = state
                if start + n >= self.transpoint:
                    cache.release_kv(self.layer_idx)
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def forward(self, hidden: torch.Tensor, cache: TransMambaSwitchCache | None = None) -> torch.Tensor:
        y = self.mix(hidden, cache)
        return self.o_proj(y.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1))


class TransMambaSwitchDecoderLayer(MixerDecoderLayer):
    """``x + Mixer(RMSNorm(x))``, ``x + MLP(RMSNorm(x))``; Gemma's sandwich norms with ``sandwich_norms``."""

    def __init__(self, config: TransMambaSwitchConfig, layer_idx: int):
        super().__init__(config, "self_attn", TransMambaSwitchMixer(config, layer_idx))

    def forward(self, hidden_states: torch.Tensor, cache: TransMambaSwitchCache | None = None) -> torch.Tensor:
        return self.add_mixed_and_mlp(hidden_states, self.self_attn(self.input_layernorm(hidden_states), cache))


class TransMambaSwitchPreTrainedModel(PreTrainedModel):
    config_class = TransMambaSwitchConfig
    config: TransMambaSwitchConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransMambaSwitchDecoderLayer"]
    _is_stateful = True  # no assisted decoding: the SSM state cannot be rolled back

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TransMambaSwitchMixer):
            module.reset_ssm_parameters()
        elif isinstance(module, TransLlavaMambaRMSNorm):
            (init.zeros_ if module.offset else init.ones_)(module.weight)  # scale = offset + weight = 1


class TransMambaSwitchModel(TransMambaSwitchPreTrainedModel):
    """Embeddings, switching decoder layers, final norm."""

    def __init__(self, config: TransMambaSwitchConfig):
        super().__init__(config)
        self.embed_tokens = TransLlavaMambaEmbedding(
            config.vocab_size, config.hidden_size, config.pad_token_id, config.embedding_scale
        )
        self.layers = nn.ModuleList(TransMambaSwitchDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = TransLlavaMambaRMSNorm(config.hidden_size, config.rms_norm_eps, config.norm_offset)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: TransMambaSwitchCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TransMambaSwitchModelOutput | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "TransMamba-switch does not take padded batches: TransPoints are token positions and the SSM state "
                "would read the padding. Pass sequences of equal length (e.g. packed blocks) or one prompt at a time."
            )
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if use_cache and cache is None:
            cache = TransMambaSwitchCache(self.config.num_hidden_layers)
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        all_hidden = [hidden] if output_hidden_states else None
        for layer in self.layers:
            hidden = layer(hidden, cache if use_cache else None)
            if all_hidden is not None:
                all_hidden.append(hidden)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden[-1] = hidden  # LLaMA convention: the last entry is after the final norm
        if use_cache:
            cache.seen_tokens += hidden.shape[1]
        output = TransMambaSwitchModelOutput(
            last_hidden_state=hidden,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        return output if return_dict is not False else output.to_tuple()


class TransMambaSwitchForCausalLM(RecurrentLMMixin, TransMambaSwitchPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: TransMambaSwitchConfig):
        super().__init__(config)
        self.model = TransMambaSwitchModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: TransMambaSwitchCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> TransMambaSwitchCausalLMOutput | tuple:
        """``labels`` are shifted inside (as LLaMA's); -100 is ignored."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        # num_items_in_batch (from the Trainer) makes gradient accumulation average over all tokens.
        logits, loss = self.lm_head_and_loss(
            outputs.last_hidden_state, self.config, logits_to_keep, labels,
            num_items_in_batch=kwargs.get("num_items_in_batch"),
        )  # fmt: skip
        output = TransMambaSwitchCausalLMOutput(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )
        return output if return_dict is not False else output.to_tuple()


__all__ = [
    "TransMambaSwitchCausalLMOutput",
    "TransMambaSwitchForCausalLM",
    "TransMambaSwitchMixer",
    "TransMambaSwitchModel",
    "TransMambaSwitchModelOutput",
    "TransMambaSwitchPreTrainedModel",
]
