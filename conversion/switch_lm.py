"""Converting a pretrained Transformer LM into a TransMamba-switch model (the first paper's fast adaption applied
to the second paper's model).

Teachers: LLaMA-like causal LMs (LLaMA, Mistral, Qwen2) and Gemma-3 text models, as a Hub id or folder (a GGUF
file with ``gguf_file``). Every tensor of the teacher is copied by module name: embeddings, the RMSNorms (Gemma's
sandwich and q/k norms too), the gated MLPs, the final norm, ``lm_head`` and each attention's W_Q, W_K, W_V, W_O,
which become the mixer's shared projections (attention: Q, K, V; SSM: C = Q·s, B = K, x = V).

GQA: a teacher with fewer key/value heads than query heads keeps them as they are. In SSM mode the key/value
head g is B and x of the ``heads / kv_heads`` query heads of group g (each query head's C reads a state built
from its group's B and x), exactly as attention shares them; each query head keeps its own Δ and A.

New parameters, and their init (Mamba-2's): ``dt_proj`` = 0 and ``dt_bias`` = softplus⁻¹(Δ₀) with Δ₀
log-uniform in [time_step_min, time_step_max] per head (so Δ starts input-independent), ``A_log`` = log(U[1, 16])
per head, the SSM output RMSNorm's weight = 1. Only the SSM uses them, so with every TransPoint ≥ the sequence
length the converted model computes exactly the teacher's function. For P < T it needs recovery: distillation
from the teacher (``trainers/switch_distill.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transmamba.modeling_transmamba import TransMambaSwitchConfig, TransMambaSwitchForCausalLM

from .llava import GEMMA_LIKE, LLAMA_LIKE, _copy_module, _gemma_fields

ROPE_TYPES = ("default", "linear")


def check_causal_teacher(config: PretrainedConfig) -> None:
    """Refuse, before loading weights, a teacher that is not a causal LM of a supported family or whose
    attention cannot be read as an SSM with shared projections."""
    architectures = config.architectures or []
    causal = getattr(config, "is_decoder", False) or any(a.endswith("ForCausalLM") for a in architectures)
    if config.model_type not in LLAMA_LIKE + GEMMA_LIKE:
        kind = "causal LM" if causal else "model that is not a causal language model"
        raise ValueError(
            f"The teacher is a {config.model_type!r} {kind}. A switching LM shares a causal attention's Q/K/V with "
            f"its SSM, so the teacher must be a causal decoder of the LLaMA family ({', '.join(LLAMA_LIKE)}) or "
            f"Gemma-3 ({', '.join(GEMMA_LIKE)})."
        )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    value_dim = getattr(config, "v_head_dim", None) or head_dim
    if value_dim != head_dim:
        raise ValueError(
            f"The teacher's value heads are {value_dim} wide but its key heads {head_dim}: the SSM state is "
            "(key dim x value dim) per head and B = K, x = V must share the head layout; such a teacher cannot share."
        )
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if config.num_attention_heads % kv_heads:
        raise ValueError(
            f"The teacher has {config.num_attention_heads} query heads and {kv_heads} key/value heads, not a "
            "multiple: query heads cannot be grouped onto the key/value heads (B, x)."
        )
    if getattr(config, "attn_logit_softcapping", None) is not None:
        raise ValueError("The teacher soft-caps its attention logits, which the shared attention does not do.")
    for rope in _rope_entries(config).values():
        if rope.get("rope_type", "default") not in ROPE_TYPES:
            raise ValueError(
                f"The teacher's RoPE type {rope.get('rope_type')!r} is not supported (only {', '.join(ROPE_TYPES)})."
            )


def _rope_entries(config: PretrainedConfig) -> dict[str, dict]:
    """RoPE parameters per layer type (transformers 5 keeps one dict, or one per layer type for Gemma-3)."""
    rope = getattr(config, "rope_parameters", None) or {"rope_theta": getattr(config, "rope_theta", 10000.0)}
    if "full_attention" in rope or "sliding_attention" in rope:
        return dict(rope)
    return {"full_attention": rope}


def switch_config(teacher: PretrainedConfig, transpoints, transpoint_cycle=None, **ssm) -> TransMambaSwitchConfig:
    """The student's config: the teacher's shape and semantics plus the schedule and the SSM fields ``ssm``."""
    check_causal_teacher(teacher)
    rope = _rope_entries(teacher)
    full = rope.get("full_attention", {})
    gemma = teacher.model_type in GEMMA_LIKE
    layer_types = getattr(teacher, "layer_types", None) or ["full_attention"] * teacher.num_hidden_layers
    sliding = getattr(teacher, "sliding_window", None) if "sliding_attention" in layer_types else None
    return TransMambaSwitchConfig(
        vocab_size=teacher.vocab_size,
        hidden_size=teacher.hidden_size,
        intermediate_size=teacher.intermediate_size,
        num_hidden_layers=teacher.num_hidden_layers,
        num_attention_heads=teacher.num_attention_heads,
        num_key_value_heads=getattr(teacher, "num_key_value_heads", None) or teacher.num_attention_heads,
        head_dim=getattr(teacher, "head_dim", None) or teacher.hidden_size // teacher.num_attention_heads,
        mlp_bias=getattr(teacher, "mlp_bias", False),
        rms_norm_eps=teacher.rms_norm_eps,
        rope_theta=full.get("rope_theta", 10000.0),
        rope_scaling_factor=full.get("factor", 1.0) if full.get("rope_type") == "linear" else 1.0,
        rope_local_theta=rope.get("sliding_attention", {}).get("rope_theta"),
        layer_types=layer_types if sliding else None,
        sliding_window=sliding,
        query_pre_attn_scalar=getattr(teacher, "query_pre_attn_scalar", None) if gemma else None,
        qk_norm=gemma,
        final_logit_softcapping=getattr(teacher, "final_logit_softcapping", None),
        transpoints=transpoints,
        transpoint_cycle=transpoint_cycle,
        tie_word_embeddings=getattr(teacher, "tie_word_embeddings", False),
        pad_token_id=teacher.pad_token_id,
        bos_token_id=teacher.bos_token_id,
        eos_token_id=teacher.eos_token_id,
        **_gemma_fields(teacher),
        **ssm,
    )


def _bias_flags(attention) -> dict:
    return {"qkv_bias": attention.q_proj.bias is not None, "o_bias": attention.o_proj.bias is not None}


@torch.no_grad()
def convert_lm(
    teacher: str | Path | torch.nn.Module,
    transpoints: int | list[int] | str,
    transpoint_cycle: list[int] | None = None,
    gguf_file: str | None = None,
    **ssm,
) -> tuple[TransMambaSwitchForCausalLM, dict]:
    """A TransMamba-switch model from ``teacher`` (Hub id, folder or a loaded causal LM); returns it and a report.

    ``ssm``: further config fields (time_step_min/max, A_init_range, ssm_chunk_size, ssm_output_norm, ...).
    """
    if isinstance(teacher, torch.nn.Module):
        model, source = teacher.eval(), getattr(teacher.config, "_name_or_path", "")  # copies cast to fp32
    else:
        source = str(teacher)
        options = {"gguf_file": gguf_file} if gguf_file else {}
        switch_config(AutoConfig.from_pretrained(source, **options), transpoints, transpoint_cycle, **ssm)  # vet first
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **options).eval()
    attention = model.model.layers[0].self_attn
    if attention.k_proj.out_features != attention.v_proj.out_features:
        raise ValueError(
            f"The teacher's K projection is {attention.k_proj.out_features} wide and its V projection "
            f"{attention.v_proj.out_features}: B = K and x = V must have the same head layout to share."
        )
    config = switch_config(model.config, transpoints, transpoint_cycle, **_bias_flags(attention), **ssm)
    student = TransMambaSwitchForCausalLM(config).eval()
    copied = {
        "embed_tokens": _copy_module(student.model.embed_tokens, model.model.embed_tokens),
        "norm": _copy_module(student.model.norm, model.model.norm),
        "lm_head": _copy_module(student.lm_head, model.lm_head),
    }
    for index, (ours, theirs) in enumerate(zip(student.model.layers, model.model.layers, strict=True)):
        for name, module in theirs.named_children():
            if name == "self_attn":
                for part, child in module.named_children():
                    copied[f"layers.{index}.self_attn.{part}"] = _copy_module(getattr(ours.self_attn, part), child)
            else:
                copied[f"layers.{index}.{name}"] = _copy_module(getattr(ours, name), module)
    kv, heads = config.num_key_value_heads, config.num_attention_heads
    report = {
        "teacher": source,
        "teacher_class": type(model).__name__,
        "teacher_model_type": model.config.model_type,
        "layer_transpoints": config.layer_transpoints,
        "copied_elements": copied,
        "shared_projections": "W_Q -> Q (attention) and C = Q * scale (SSM); W_K -> K and B; W_V -> V and x",
        "gqa": f"{kv} key/value heads for {heads} query heads: key/value head g is B and x of query heads "
        f"{heads // kv}g..{heads // kv}g+{heads // kv - 1}; every query head has its own Δ, A and state",
        "ssm_init": "dt_proj = 0, dt_bias = softplus^-1(log-uniform in "
        f"[{config.time_step_min}, {config.time_step_max}]), A_log = log U{tuple(config.A_init_range)}, "
        "SSM output norm weight 1 (Mamba-2's init)",
        "equivalence": "every layer with P >= sequence length computes the teacher's attention exactly",
    }
    return student, report
