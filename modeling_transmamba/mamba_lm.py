"""The language model of TransLlavaMamba: LLaMA- or Gemma-3-shaped blocks, attention swapped for a causal SSM mixer.

Module names follow LLaMA/Gemma (``embed_tokens``, ``input_layernorm``, ``post_attention_layernorm``,
``mlp.gate_proj/up_proj/down_proj``, ``norm``) so a teacher copies in by name, and the mixer's follow
`transformers`' ``MambaMixer`` (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``)
so the SSM of a pretrained Mamba checkpoint loads into it unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_transllava import TransLlavaMambaTextConfig
from .selective_scan import selective_scan, selective_state_step


class TransLlavaMambaCache:
    """Recurrent state of every layer: the last ``conv_kernel - 1`` mixer inputs, the SSM state and, for
    Cross-Mamba layers, the image memory. Its size does not depend on the sequence length, so each generated
    token costs O(1) memory (a KV cache grows by one key and value per layer per token).

    ``generate()`` threads it as the ``cache`` model kwarg and reads it back from the output's ``cache`` field.
    """

    is_compileable = False

    def __init__(self, num_layers: int):
        self.conv_states: list[torch.Tensor | None] = [None] * num_layers
        self.ssm_states: list[torch.Tensor | None] = [None] * num_layers
        self.cross_states: list[torch.Tensor | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def has_state(self, layer_idx: int) -> bool:
        return self.ssm_states[layer_idx] is not None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the states of the selected beams (beam search)."""
        for states in (self.conv_states, self.ssm_states, self.cross_states):
            for i, state in enumerate(states):
                if state is not None:
                    states[i] = state.index_select(0, beam_idx.to(state.device))

    def nbytes(self) -> int:
        states = self.conv_states + self.ssm_states + self.cross_states
        return sum(s.numel() * s.element_size() for s in states if s is not None)


class TransLlavaMambaRMSNorm(nn.Module):
    """RMSNorm with fp32 statistics, so a teacher's norm weights mean the same thing here.

    ``offset`` 0 is LLaMA's (``weight * x.to(dtype)``); Gemma scales by ``(offset + weight)`` in fp32 before
    casting back (``offset`` 1, weights stored around 0).
    """

    def __init__(self, hidden_size: int, eps: float, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size) if offset == 0 else torch.zeros(hidden_size))
        self.variance_epsilon = eps
        self.offset = offset

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        if self.offset:
            return (hidden_states * (self.offset + self.weight.float())).to(dtype)
        return self.weight * hidden_states.to(dtype)


class TransLlavaMambaEmbedding(nn.Embedding):
    """Token embeddings times ``scale`` (Gemma multiplies by sqrt(hidden size), cast to the weight's dtype first,
    as Gemma does). Image features replace placeholder embeddings after the scaling, as in LLaVA."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None, scale: float = 1.0):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.scale = scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = super().forward(input_ids)
        if self.scale == 1.0:
            return embeds
        return embeds * torch.tensor(self.scale, dtype=self.weight.dtype, device=embeds.device)


def _selected_hidden_states(requested: bool | int | list[int] | None, count: int) -> set[int]:
    """The indices of the ``count`` hidden states to return (empty: none)."""
    if requested is None or isinstance(requested, bool):
        return set(range(count)) if requested else set()
    indices = [requested] if isinstance(requested, int) else list(requested)
    return {i % count for i in indices if -count <= i < count}


class TransLlavaMambaMLP(nn.Module):
    """LLaMA's gated MLP: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, config: TransLlavaMambaTextConfig):
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _mask_channels(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero padded positions of a (batch, channels, length) tensor, so they neither drive nor read the state."""
    return x if mask is None else x * mask[:, None, :].to(x.dtype)


class TimeStepProjection(nn.Linear):
    """Mamba's ``dt_proj``: ``x W^T`` in the weights' dtype, then the bias added in fp32 (the scan's precision).

    The bias is added here, not handed to the scan as ``delta_bias``: a module's weights are read only inside its
    own forward, where accelerate's offload hooks have loaded them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight).float() + self.bias.float()


class TransLlavaMambaMixer(nn.Module):
    """Causal Mamba-1 mixer, optionally with Cross-Mamba.

    Self path (every layer): the selective scan over all tokens, text and image alike, in sequence order.

    Cross-Mamba (layers in ``config.cross_mamba_layers``) reads the paper's ``Y = C(MX)`` as attention with
    ``Q = S_C(text)``, ``K = S_B(image)``, ``V = image`` and Δ from the image side. Precisely, with its own
    ``cross_x_proj``/``cross_dt_proj``/``cross_A_log`` and the layer's conv output ``x``:

    * image positions j write into a memory ``m``: ``m_j = exp(Δ_j A) m_{j-1} + Δ_j B_j x_j`` with
      ``Δ_j, B_j`` computed from the image token j;
    * text positions leave it untouched (their Δ is set to 0, so ``exp(0·A) = 1`` and nothing is added) and
      read it out: ``y_t = C_t m_t`` with ``C_t`` computed from the text token t.

    So text token t sees exactly the image tokens before it, undecayed by the text in between, and never
    another text token; image tokens get no cross term. The cross read-out is added to the self path before
    the shared SiLU(z) gate and ``out_proj``. Generation keeps ``m`` in the cache; new tokens are text, so it
    stays fixed and each step is one read-out.
    """

    def __init__(self, config: TransLlavaMambaTextConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        hidden, inner = config.hidden_size, config.mixer_size
        self.inner, self.state, self.rank = inner, config.state_size, config.time_step_rank
        self.conv_kernel = config.conv_kernel
        self.in_proj = nn.Linear(hidden, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, config.conv_kernel, groups=inner, padding=config.conv_kernel - 1)
        self.x_proj = nn.Linear(inner, self.rank + 2 * self.state, bias=False)
        self.dt_proj = TimeStepProjection(self.rank, inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(inner, self.state))
        self.D = nn.Parameter(torch.empty(inner))
        self.out_proj = nn.Linear(inner, hidden, bias=config.out_proj_bias)
        self.is_cross = layer_idx in config.cross_mamba_layers
        if self.is_cross:
            self.cross_x_proj = nn.Linear(inner, self.rank + 2 * self.state, bias=False)
            self.cross_dt_proj = TimeStepProjection(self.rank, inner, bias=True)
            self.cross_A_log = nn.Parameter(torch.empty(inner, self.state))

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Standard Mamba init (S4D-real A, dt log-uniform in [dt_min, dt_max], D = 1); skips loaded tensors."""
        cfg = self.config
        init.kaiming_uniform_(self.conv1d.weight, a=math.sqrt(5))
        init.zeros_(self.conv1d.bias)
        pairs = [(self.x_proj, self.dt_proj, self.A_log)]
        if self.is_cross:
            pairs.append((self.cross_x_proj, self.cross_dt_proj, self.cross_A_log))
        for x_proj, dt_proj, a_log in pairs:
            init.kaiming_uniform_(x_proj.weight, a=math.sqrt(5))
            dt_std = self.rank**-0.5
            init.uniform_(dt_proj.weight, -dt_std, dt_std)
            low, high = math.log(cfg.time_step_min), math.log(cfg.time_step_max)
            dt = torch.exp(torch.rand_like(dt_proj.bias) * (high - low) + low).clamp(min=cfg.time_step_floor)
            init.copy_(dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            a = torch.arange(1, self.state + 1, dtype=a_log.dtype, device=a_log.device)
            init.copy_(a_log, torch.log(a).expand_as(a_log))
        init.ones_(self.D)

    def _ssm_inputs(self, x: torch.Tensor, cross: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dt, B, C) from the conv output ``x`` (batch, inner, length): dt (batch, inner, length, fp32) with dt_proj's
        bias added, B/C (batch, 1, state, length)."""
        x_proj, dt_proj = (self.cross_x_proj, self.cross_dt_proj) if cross else (self.x_proj, self.dt_proj)
        dt_low, B, C = x_proj(x.transpose(1, 2)).split([self.rank, self.state, self.state], dim=-1)
        dt = dt_proj(dt_low).transpose(1, 2)
        return dt, B.transpose(1, 2).unsqueeze(1), C.transpose(1, 2).unsqueeze(1)

    def _cross_delta(self, dt: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Image positions get softplus(dt) (bias included); text positions get exactly 0 (memory kept, nothing
        written)."""
        delta = F.softplus(dt.float())
        return delta * image[:, None, :].float()

    def forward(
        self,
        hidden_states: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: TransLlavaMambaCache | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` (batch, length, hidden); ``image_mask``/``attention_mask`` (batch, length)."""
        if cache is not None and cache.has_state(self.layer_idx):
            steps = [
                self._step(
                    hidden_states[:, t],
                    None if image_mask is None else image_mask[:, t],
                    None if attention_mask is None else attention_mask[:, t],
                    cache,
                )
                for t in range(hidden_states.shape[1])
            ]
            return torch.stack(steps, dim=1)
        return self._full(hidden_states, image_mask, attention_mask, cache)

    def _full(self, hidden_states, image_mask, attention_mask, cache):
        length = hidden_states.shape[1]
        x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)
        x = _mask_channels(x, attention_mask)
        conv_input = x
        x = F.silu(self.conv1d(x)[..., :length])
        x = _mask_channels(x, attention_mask)
        dt, B, C = self._ssm_inputs(x, cross=False)
        A = -torch.exp(self.A_log.float())
        keep_state = cache is not None
        result = selective_scan(
            x, dt, A, B, C, self.D, z=z, delta_softplus=True, return_last_state=keep_state,
            backend=self.config.scan_backend,
        )  # fmt: skip
        y, ssm_state = result if keep_state else (result, None)
        if self.is_cross and image_mask is not None and bool(image_mask.any()):
            cdt, cB, cC = self._ssm_inputs(x, cross=True)
            cross = selective_scan(
                _mask_channels(x, image_mask), self._cross_delta(cdt, image_mask),
                -torch.exp(self.cross_A_log.float()), cB, cC, None, z=z, return_last_state=keep_state,
                backend=self.config.scan_backend,
            )  # fmt: skip
            y_cross, cross_state = cross if keep_state else (cross, None)
            y = y + _mask_channels(y_cross, ~image_mask)
        elif self.is_cross and keep_state:  # no image yet: an empty memory, read-outs are 0
            cross_state = x.new_zeros(x.shape[0], self.inner, self.state, dtype=torch.float32)
        if keep_state:
            width = self.conv_kernel - 1
            padded = F.pad(conv_input, (width, 0))
            cache.conv_states[self.layer_idx] = padded[..., padded.shape[-1] - width :]
            cache.ssm_states[self.layer_idx] = ssm_state
            if self.is_cross:
                cache.cross_states[self.layer_idx] = cross_state
        return self.out_proj(y.transpose(1, 2))

    def _step(self, hidden, image, mask, cache):
        """One token (batch, hidden) through the recurrence, updating the cache in place."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        if mask is not None:
            x = x * mask[:, None].to(x.dtype)
        window = torch.cat([cache.conv_states[self.layer_idx], x[..., None]], dim=-1)
        cache.conv_states[self.layer_idx] = window[..., 1:]
        x = F.silu(self.conv1d(window)[..., self.conv_kernel - 1])  # the conv's output at the newest token
        if mask is not None:
            x = x * mask[:, None].to(x.dtype)
        dt, B, C = self._ssm_inputs(x[..., None], cross=False)
        y, cache.ssm_states[self.layer_idx] = selective_state_step(
            cache.ssm_states[self.layer_idx], x, dt[..., 0], -torch.exp(self.A_log.float()), B[..., 0], C[..., 0],
            self.D, z=z, delta_softplus=True,
        )  # fmt: skip
        if self.is_cross:
            image = image if image is not None else torch.zeros_like(x[:, 0], dtype=torch.bool)
            cdt, cB, cC = self._ssm_inputs(x[..., None], cross=True)
            y_cross, cache.cross_states[self.layer_idx] = selective_state_step(
                cache.cross_states[self.layer_idx], x * image[:, None].to(x.dtype),
                self._cross_delta(cdt, image[:, None])[..., 0], -torch.exp(self.cross_A_log.float()),
                cB[..., 0], cC[..., 0], None, z=z,
            )  # fmt: skip
            y = y + y_cross * (~image)[:, None].to(y.dtype)
        return self.out_proj(y)


class MixerDecoderLayer(GradientCheckpointingLayer):
    """A LLaMA/Gemma decoder layer around a mixer: ``x + Mixer(RMSNorm(x))`` then ``x + MLP(RMSNorm(x))``.

    With ``sandwich_norms`` (Gemma) the mixer and MLP outputs are normed too before the residual add, under
    Gemma's names: ``post_attention_layernorm`` after the mixer, ``pre_/post_feedforward_layernorm`` around the
    MLP. Without, ``post_attention_layernorm`` is the pre-MLP norm, as in LLaMA. The mixer sits under
    ``mixer_name`` (TransLlava: ``mixer``, TransMamba-switch: ``self_attn``), so checkpoints keep their names.
    """

    def __init__(self, config, mixer_name: str, mixer: nn.Module):
        super().__init__()
        hidden, eps, offset = config.hidden_size, config.rms_norm_eps, config.norm_offset
        self.sandwich_norms = config.sandwich_norms
        self.input_layernorm = TransLlavaMambaRMSNorm(hidden, eps, offset)
        setattr(self, mixer_name, mixer)
        self.post_attention_layernorm = TransLlavaMambaRMSNorm(hidden, eps, offset)
        if self.sandwich_norms:
            self.pre_feedforward_layernorm = TransLlavaMambaRMSNorm(hidden, eps, offset)
            self.post_feedforward_layernorm = TransLlavaMambaRMSNorm(hidden, eps, offset)
        self.mlp = TransLlavaMambaMLP(config)

    def add_mixed_and_mlp(self, hidden_states: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        """The residual adds after the mixer's output ``mixed`` (of the input-normed ``hidden_states``)."""
        if not self.sandwich_norms:
            hidden_states = hidden_states + mixed
            return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        hidden_states = hidden_states + self.post_attention_layernorm(mixed)
        return hidden_states + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(hidden_states)))


class TransLlavaMambaDecoderLayer(MixerDecoderLayer):
    """A LLaMA block with attention swapped for the Mamba mixer (see `MixerDecoderLayer`)."""

    def __init__(self, config: TransLlavaMambaTextConfig, layer_idx: int):
        super().__init__(config, "mixer", TransLlavaMambaMixer(config, layer_idx))

    def forward(self, hidden_states, image_mask=None, attention_mask=None, cache=None):
        mixed = self.mixer(self.input_layernorm(hidden_states), image_mask, attention_mask, cache)
        return self.add_mixed_and_mlp(hidden_states, mixed)


class RecurrentLMMixin:
    """What the two Mamba-state LMs (TransLlava, TransMamba-switch) share on top of `GenerationMixin`: the head
    (logits_to_keep, Gemma's final soft-capping, the shifted loss) and the generation inputs for a cache that
    `forward` creates and returns as ``cache``."""

    prefill_only: tuple[str, ...] = ()  # keyword arguments only the prefill step takes (TransLlava: the images)

    def lm_head_and_loss(self, hidden: torch.Tensor, text_config, logits_to_keep: int, labels, **loss_kwargs):
        """(logits, loss or None); ``labels`` are shifted inside, -100 is ignored."""
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        cap = text_config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        if labels is None:
            return logits, None
        loss = self.loss_function(logits=logits, labels=labels, vocab_size=text_config.vocab_size, **loss_kwargs)
        return logits, loss

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """generate() must not build a KV cache for us: forward creates the recurrent cache it returns."""
        return False

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> dict:
        """Prefill: the whole prompt (with the ``prefill_only`` inputs). Later steps: the tokens the cache has not
        seen (the newest one when ``input_ids`` holds only generated tokens, after an ``inputs_embeds`` prefill)."""
        prefill = {name: kwargs.pop(name, None) for name in self.prefill_only}
        seen = cache.get_seq_length() if cache is not None else 0
        if seen > 0:
            inputs = {"input_ids": input_ids[:, seen:] if input_ids.shape[1] > seen else input_ids[:, -1:]}
        elif inputs_embeds is not None:
            inputs = {"inputs_embeds": inputs_embeds, **prefill}
        else:
            inputs = {"input_ids": input_ids, **prefill}
        inputs.update(kwargs)  # e.g. logits_to_keep=1 at prefill, so a long prompt never materialises all logits
        inputs.update(cache=cache, attention_mask=attention_mask, use_cache=use_cache)
        return inputs


class TransLlavaMambaLanguageModel(nn.Module):
    """Embeddings, Mamba decoder layers, final norm (the head lives on the generation class, as in LLaVA)."""

    def __init__(self, config: TransLlavaMambaTextConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = TransLlavaMambaEmbedding(
            config.vocab_size, config.hidden_size, config.pad_token_id, config.embedding_scale
        )
        self.layers = nn.ModuleList([TransLlavaMambaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = TransLlavaMambaRMSNorm(config.hidden_size, config.rms_norm_eps, config.norm_offset)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: TransLlavaMambaCache | None = None,
        output_hidden_states: bool | int | list[int] | None = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...] | None]:
        """``output_hidden_states``: all of them (True), none, or transformers 5's selection (an index or a list,
        negative from the end): the tuple keeps its full length with None where nothing was asked."""
        length = inputs_embeds.shape[1]
        keep = _selected_hidden_states(output_hidden_states, len(self.layers) + 1)
        if attention_mask is not None:
            attention_mask = attention_mask[:, -length:]  # generate passes the mask of the whole sequence
            if bool(attention_mask.all()):
                attention_mask = None
        hidden = inputs_embeds
        all_hidden = [hidden] if keep else None
        for layer in self.layers:
            hidden = layer(hidden, image_mask, attention_mask, cache)
            if all_hidden is not None:
                all_hidden.append(hidden)
        hidden = self.norm(hidden)
        if all_hidden is not None:
            all_hidden[-1] = hidden  # LLaMA convention: the last entry is after the final norm
        if cache is not None:
            cache.seen_tokens += length
        if all_hidden is None:
            return hidden, None
        return hidden, tuple(h if i in keep else None for i, h in enumerate(all_hidden))
