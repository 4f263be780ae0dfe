"""Configuration of TransMamba-switch (Li et al., arXiv 2503.24067): a causal LM whose layers switch from attention
to a scalar-decay SSM at a per-layer TransPoint, sharing their projections (Q ↔ C, K ↔ B, V ↔ x)."""

from __future__ import annotations

from transformers import PretrainedConfig

SCHEDULES = ("fixed", "per_layer", "cycle")
# The paper's best schedule at length 8192 cycles P over "[0, 128, ..., 8192]" across layers; we read the dots as
# doublings (8 values, so 24 layers run through the cycle 3 times). Pass transpoint_cycle to choose others.
PAPER_CYCLE = (0, 128, 256, 512, 1024, 2048, 4096, 8192)
LAYER_TYPES = ("full_attention", "sliding_attention")


def transpoint_schedule(transpoints: int | list[int] | str, num_layers: int, cycle=None) -> list[int]:
    """Per-layer TransPoints from ``transpoints``: an int (every layer), a list (one per layer) or ``"cycle"``
    (layer l takes ``cycle[l % len(cycle)]``). Raises one ValueError that says how to fix a bad schedule."""
    if isinstance(transpoints, str):
        if transpoints != "cycle":
            raise ValueError(f"transpoints={transpoints!r}: give an int P, a list with one P per layer, or 'cycle'.")
        values = list(PAPER_CYCLE if cycle is None else cycle)
        if not values:
            raise ValueError("transpoint_cycle is empty; give at least one TransPoint to cycle over.")
        schedule = [values[layer % len(values)] for layer in range(num_layers)]
    elif isinstance(transpoints, int) and not isinstance(transpoints, bool):
        schedule = [transpoints] * num_layers
    elif isinstance(transpoints, (list, tuple)):
        schedule = list(transpoints)
        if len(schedule) != num_layers:
            raise ValueError(
                f"The TransPoint schedule has {len(schedule)} entries but the model has {num_layers} layers; give "
                f"exactly one TransPoint per layer, a single int for all layers, or transpoints='cycle'."
            )
    else:
        raise ValueError(f"transpoints={transpoints!r}: give an int P, a list with one P per layer, or 'cycle'.")
    bad = [(i, p) for i, p in enumerate(schedule) if not isinstance(p, int) or isinstance(p, bool) or p < 0]
    if bad:
        layer, value = bad[0]
        raise ValueError(
            f"TransPoint {value!r} of layer {layer} is not a non-negative integer; P is the token position where the "
            "layer switches from attention to the SSM (0 = SSM only, >= sequence length = attention only)."
        )
    return schedule


class TransMambaSwitchConfig(PretrainedConfig):
    """A LLaMA-shaped decoder (RMSNorm, gated MLP, RoPE) whose mixer runs causal attention on the tokens before
    its layer's TransPoint and a Mamba-2-style SSM (per-head scalar decay, ``head_dim × head_dim`` state) from it on.

    Shape fields follow ``LlamaConfig`` so a LLaMA/Mistral/Qwen2 teacher copies in by name. Gemma-3 teachers add
    ``norm_offset`` / ``embedding_scale`` / ``sandwich_norms`` / ``final_logit_softcapping`` (as TransLlavaMamba's
    text config), ``qk_norm``, ``query_pre_attn_scalar`` (attention scale), and sliding-window layers
    (``layer_types``, ``sliding_window``, ``rope_local_theta`` for their RoPE).

    The schedule: ``transpoints`` is an int, a per-layer list or ``"cycle"`` (over ``transpoint_cycle``); the
    resolved per-layer list is ``layer_transpoints``. SSM fields: Δ = softplus(dt_proj(x) + dt_bias) per head,
    A = -exp(A_log) per head, inits from ``time_step_min/max/floor`` and ``A_init_range`` (Mamba-2's), chunk
    length ``ssm_chunk_size``, ``ssm_output_norm`` (a per-head RMSNorm on SSM outputs, as Mamba-2 norms y),
    ``ssm_backend`` ("auto": Mamba-2's CUDA kernel when installed, else the chunked PyTorch form).
    """

    model_type = "transmamba_switch"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 1536,
        intermediate_size: int = 4096,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        mlp_bias: bool = False,
        qkv_bias: bool = False,
        o_bias: bool = False,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        rope_scaling_factor: float = 1.0,
        rope_local_theta: float | None = None,
        layer_types: list[str] | None = None,
        sliding_window: int | None = None,
        query_pre_attn_scalar: float | None = None,
        qk_norm: bool = False,
        norm_offset: float = 0.0,
        embedding_scale: float = 1.0,
        sandwich_norms: bool = False,
        final_logit_softcapping: float | None = None,
        transpoints: int | list[int] | str = 0,
        transpoint_cycle: list[int] | None = None,
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        ssm_chunk_size: int = 64,
        ssm_output_norm: bool = True,
        ssm_backend: str = "auto",
        initializer_range: float = 0.02,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        **kwargs,
    ):
        kwargs.pop("layer_transpoints", None)  # derived from transpoints; saved for readers, recomputed here
        num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        if num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={num_attention_heads} is not a multiple of num_key_value_heads="
                f"{num_key_value_heads}: each group of query heads (C) shares one key/value head (B, x)."
            )
        head_dim = hidden_size // num_attention_heads if head_dim is None else head_dim
        layer_types = list(layer_types or ["full_attention"] * num_hidden_layers)
        if len(layer_types) != num_hidden_layers or set(layer_types) - set(LAYER_TYPES):
            raise ValueError(f"layer_types needs {num_hidden_layers} entries from {', '.join(LAYER_TYPES)}.")
        if "sliding_attention" in layer_types and not sliding_window:
            raise ValueError("Sliding-window layers need sliding_window (the number of tokens a query sees).")
        if ssm_backend not in ("auto", "torch", "mamba_ssm"):
            raise ValueError(f"ssm_backend must be 'auto', 'torch' or 'mamba_ssm', got {ssm_backend!r}.")
        self.layer_transpoints = transpoint_schedule(transpoints, num_hidden_layers, transpoint_cycle)
        self.transpoints = transpoints if not isinstance(transpoints, tuple) else list(transpoints)
        self.transpoint_cycle = list(transpoint_cycle) if transpoint_cycle is not None else None
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.hidden_act = hidden_act
        self.mlp_bias = mlp_bias
        self.qkv_bias = qkv_bias
        self.o_bias = o_bias
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = float(rope_theta)
        self.rope_scaling_factor = float(rope_scaling_factor)
        self.rope_local_theta = rope_local_theta
        self.layer_types = layer_types
        self.sliding_window = sliding_window
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.qk_norm = qk_norm
        self.norm_offset = float(norm_offset)
        self.embedding_scale = float(embedding_scale)
        self.sandwich_norms = sandwich_norms
        self.final_logit_softcapping = final_logit_softcapping
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        self.time_step_floor = time_step_floor
        self.A_init_range = list(A_init_range)
        self.ssm_chunk_size = ssm_chunk_size
        self.ssm_output_norm = ssm_output_norm
        self.ssm_backend = ssm_backend
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5


__all__ = ["PAPER_CYCLE", "TransMambaSwitchConfig", "transpoint_schedule"]
