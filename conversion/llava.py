"""Subcloning a LLaVA teacher into a TransLlavaMamba student (paper §3.2 "Multi-modal Task").

Copied as they are: the vision tower and the projector. From the teacher's LLaMA: token embeddings, both
RMSNorms and the gated MLP of the first ``num_layers`` layers, the final norm, ``lm_head``, and each layer's
attention ``o_proj`` into the mixer's ``out_proj`` (input side cut or zero-padded to the mixer width).
The SSM (x_proj, dt_proj, A_log, D) comes from a pretrained `transformers` Mamba checkpoint (``ssm_from``, as
the paper does) or gets the standard Mamba init; the conv weights are drawn from N(0, 1), as the paper does.
Tensors are mapped module by module, never by key strings, so renamed checkpoint keys of future `transformers`
versions cannot silently drop a tensor.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, MambaForCausalLM, PretrainedConfig
from transmamba.modeling_transmamba import TransLlavaMambaConfig, TransLlavaMambaForConditionalGeneration

# Text models whose decoder layers have LLaMA's module names and semantics (plain RMSNorm, gated MLP, o_proj).
LLAMA_LIKE = ("llama", "mistral", "qwen2")
CONV_INITS = ("normal", "standard", "identity")
MIXER_INITS = ("standard", "attention")
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
)


def _check_teacher(config: PretrainedConfig) -> None:
    """Refuse anything that is not LLaVA-shaped with a LLaMA-like text model, before loading weights."""
    missing = [key for key in ("vision_config", "text_config", "image_token_id") if getattr(config, key, None) is None]
    if missing:
        raise ValueError(
            f"The teacher ({config.model_type!r}) is not LLaVA-shaped: its config lacks {', '.join(missing)}. "
            "Pass a LlavaForConditionalGeneration checkpoint (vision tower + projector + language model)."
        )
    text_type = config.text_config.model_type
    if text_type not in LLAMA_LIKE:
        raise ValueError(
            f"The teacher's language model is {text_type!r}; subcloning supports LLaMA-shaped text models "
            f"({', '.join(LLAMA_LIKE)}). Gemma-style models (scaled embeddings, extra norms) need their own mapping."
        )


def student_config(
    teacher: PretrainedConfig,
    num_layers: int | None = None,
    state_size: int = 16,
    expand: int = 2,
    conv_kernel: int = 4,
    time_step_rank: int | str = "auto",
    cross_mamba_layers: list[int] | tuple[int, ...] = (),
) -> TransLlavaMambaConfig:
    """The student's config: the teacher's vision/projector fields and LLaMA shape, Mamba mixer fields added."""
    text = teacher.text_config
    depth = text.num_hidden_layers if num_layers is None else num_layers
    if not 1 <= depth <= text.num_hidden_layers:
        raise ValueError(
            f"num_layers={depth} does not fit a teacher with {text.num_hidden_layers} layers; the student takes "
            f"the teacher's first n layers, so choose 1..{text.num_hidden_layers}."
        )
    text_config = dict(
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_hidden_layers=depth,
        hidden_act=text.hidden_act,
        mlp_bias=getattr(text, "mlp_bias", False),
        rms_norm_eps=text.rms_norm_eps,
        state_size=state_size,
        expand=expand,
        conv_kernel=conv_kernel,
        time_step_rank=time_step_rank,
        out_proj_bias=getattr(text, "attention_bias", False),
        cross_mamba_layers=list(cross_mamba_layers),
        tie_word_embeddings=text.tie_word_embeddings,
        pad_token_id=text.pad_token_id,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
    )
    return TransLlavaMambaConfig(
        vision_config=teacher.vision_config.to_dict(),
        text_config=text_config,
        image_token_id=teacher.image_token_id,
        image_seq_length=teacher.image_seq_length,
        projector_hidden_act=teacher.projector_hidden_act,
        vision_feature_select_strategy=teacher.vision_feature_select_strategy,
        vision_feature_layer=teacher.vision_feature_layer,
        multimodal_projector_bias=teacher.multimodal_projector_bias,
        tie_word_embeddings=teacher.tie_word_embeddings,
    )


def _copy_module(target: nn.Module, source: nn.Module) -> int:
    """Copy every tensor of ``source`` into ``target`` (same structure, strict); returns the element count."""
    target.load_state_dict(source.state_dict(), strict=True)
    return sum(t.numel() for t in source.state_dict().values())


@torch.no_grad()
def _copy_out_proj(out_proj: nn.Linear, o_proj: nn.Linear) -> None:
    """o_proj (hidden, attn_width) -> out_proj (hidden, mixer_width): cut when narrower, zero-pad when wider."""
    width = min(out_proj.in_features, o_proj.in_features)
    out_proj.weight.zero_()
    out_proj.weight[:, :width] = o_proj.weight[:, :width]
    if out_proj.bias is not None and o_proj.bias is not None:
        out_proj.bias.copy_(o_proj.bias)


def _per_query_head(weight: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """K/V projection rows repeated per query head, as grouped-query attention shares them: (heads*hd, hidden)."""
    head_dim = weight.shape[0] // kv_heads
    return weight.view(kv_heads, head_dim, -1).repeat_interleave(heads // kv_heads, dim=0).reshape(-1, weight.shape[1])


@torch.no_grad()
def _attention_informed_init(mixer: nn.Module, attention: nn.Module, heads: int, kv_heads: int) -> None:
    """Beyond the paper: x <- W_V, B <- W_K, C <- W_Q (first ``state_size`` key/query dims, RoPE ignored).

    ``in_proj``'s x rows take W_V (per query head); B's and C's rows of ``x_proj`` take the least-squares maps
    W_K[:N] pinv(W_V) and W_Q[:N] pinv(W_V), so with an identity conv ``B_t = k_t[:N]`` and ``C_t = q_t[:N]``
    whenever ``x_t = W_V h_t`` (exact on W_V's row space, SiLU aside). Δ, A and D keep the standard init.
    """
    value = _per_query_head(attention.v_proj.weight, heads, kv_heads).float()
    key = _per_query_head(attention.k_proj.weight, heads, kv_heads).float()
    query = attention.q_proj.weight.float()
    width, state, rank = min(mixer.inner, value.shape[0]), mixer.state, mixer.rank
    value = value[:width]
    mixer.in_proj.weight[:width] = value
    inverse = torch.linalg.pinv(value)  # (hidden, width)
    mixer.x_proj.weight[rank:] = 0
    mixer.x_proj.weight[rank : rank + state, :width] = key[:state] @ inverse
    mixer.x_proj.weight[rank + state :, :width] = query[:state] @ inverse


def _check_ssm_source(config: PretrainedConfig, student: TransLlavaMambaConfig) -> None:
    """The Mamba checkpoint must have the student's mixer shape and at least its depth."""
    text = student.text_config
    if config.model_type != "mamba":
        raise ValueError(f"ssm_from must be a `transformers` Mamba checkpoint, got model_type {config.model_type!r}.")
    ours = (text.mixer_size, text.state_size, text.time_step_rank)
    theirs = (config.intermediate_size, config.state_size, config.time_step_rank)
    if ours != theirs or config.num_hidden_layers < text.num_hidden_layers:
        raise ValueError(
            f"The Mamba checkpoint's mixer (width, state, dt rank) = {theirs} with {config.num_hidden_layers} layers "
            f"does not fit the student's {ours} with {text.num_hidden_layers} layers; set expand/state_size/"
            "time_step_rank to match it."
        )


def _describe_ssm_init(mixer_init: str, ssm_from: str | Path | None) -> str:
    if ssm_from is not None:
        return f"x_proj, dt_proj, A_log, D from the Mamba checkpoint {ssm_from} (as the paper); in_proj default init"
    if mixer_init == "attention":
        return "attention-informed: x <- W_V, B <- W_K, C <- W_Q (beyond the paper); dt, A, D standard Mamba init"
    return "standard Mamba init (S4D-real A, log-uniform dt, D=1); in_proj/x_proj default init"


@torch.no_grad()
def subclone_llava(
    teacher_dir: str | Path,
    *,
    num_layers: int | None = None,
    state_size: int = 16,
    expand: int = 2,
    conv_kernel: int = 4,
    time_step_rank: int | str = "auto",
    cross_mamba_layers: list[int] | tuple[int, ...] = (),
    mixer_init: str = "standard",
    conv_init: str | None = None,
    ssm_from: str | Path | None = None,
    output_dir: str | Path | None = None,
) -> tuple[TransLlavaMambaForConditionalGeneration, dict]:
    """Build a TransLlavaMamba student from a LLaVA teacher (Hub id or folder).

    ``mixer_init="standard"`` is the paper's SSM init; ``"attention"`` adds the attention-informed init (see
    ``_attention_informed_init``). ``conv_init`` defaults to the paper's N(0, 1) for the former and to an
    identity conv (last tap 1) for the latter, which the Q/K/V mapping assumes.
    ``ssm_from`` (a `transformers` Mamba checkpoint of the student's mixer shape) supplies x_proj, dt_proj,
    A_log and D of layer i from its layer i, as the paper initialises Trans-LLaVA's SSM.
    Returns the student and a report of what was copied and how the rest was initialised. With
    ``output_dir`` the student is saved there (with its remote code) together with the teacher's tokenizer
    and processor files, ready for ``from_pretrained(..., trust_remote_code=True)``.
    """
    if mixer_init not in MIXER_INITS:
        raise ValueError(f"mixer_init must be one of {', '.join(MIXER_INITS)}, got {mixer_init!r}.")
    conv_init = conv_init or ("identity" if mixer_init == "attention" else "normal")
    if conv_init not in CONV_INITS:
        raise ValueError(f"conv_init must be one of {', '.join(CONV_INITS)}, got {conv_init!r}.")
    if ssm_from is not None and mixer_init == "attention":
        raise ValueError("Choose one SSM source: ssm_from (a Mamba checkpoint) or mixer_init='attention'.")
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    _check_teacher(teacher_config)
    config = student_config(
        teacher_config, num_layers, state_size, expand, conv_kernel, time_step_rank, cross_mamba_layers
    )
    if ssm_from is not None:
        _check_ssm_source(AutoConfig.from_pretrained(ssm_from), config)
    text = teacher_config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    if mixer_init == "attention" and state_size > head_dim * text.num_attention_heads:
        raise ValueError(
            f"state_size {state_size} exceeds the teacher's key width {head_dim * text.num_attention_heads}; "
            "the attention-informed init maps key dims to state dims, so choose a smaller state_size."
        )
    teacher = AutoModelForImageTextToText.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    student = TransLlavaMambaForConditionalGeneration(config).eval()

    copied = {
        "vision_tower": _copy_module(student.model.vision_tower, teacher.model.vision_tower),
        "multi_modal_projector": _copy_module(student.model.multi_modal_projector, teacher.model.multi_modal_projector),
    }
    source, target = teacher.model.language_model, student.model.language_model
    copied["embed_tokens"] = _copy_module(target.embed_tokens, source.embed_tokens)
    copied["norm"] = _copy_module(target.norm, source.norm)
    copied["lm_head"] = _copy_module(student.lm_head, teacher.lm_head)
    for index, layer in enumerate(target.layers):
        teacher_layer = source.layers[index]
        for name in ("input_layernorm", "post_attention_layernorm", "mlp"):
            copied[f"layers.{index}.{name}"] = _copy_module(getattr(layer, name), getattr(teacher_layer, name))
        _copy_out_proj(layer.mixer.out_proj, teacher_layer.self_attn.o_proj)
        copied[f"layers.{index}.o_proj->out_proj"] = min(layer.mixer.inner, teacher_layer.self_attn.o_proj.in_features)
        if conv_init == "normal":
            nn.init.normal_(layer.mixer.conv1d.weight, 0.0, 1.0)
        elif conv_init == "identity":
            layer.mixer.conv1d.weight.zero_()
            layer.mixer.conv1d.weight[..., -1] = 1.0
        if conv_init != "standard":
            nn.init.zeros_(layer.mixer.conv1d.bias)
        if mixer_init == "attention":
            _attention_informed_init(
                layer.mixer, teacher_layer.self_attn, text.num_attention_heads, text.num_key_value_heads
            )

    if ssm_from is not None:
        mamba = MambaForCausalLM.from_pretrained(ssm_from, dtype=torch.float32)
        for index, (layer, mamba_layer) in enumerate(zip(target.layers, mamba.backbone.layers, strict=False)):
            ours, theirs = layer.mixer, mamba_layer.mixer
            copied[f"layers.{index}.ssm"] = _copy_module(ours.x_proj, theirs.x_proj)
            copied[f"layers.{index}.ssm"] += _copy_module(ours.dt_proj, theirs.dt_proj)
            ours.A_log.copy_(theirs.A_log)
            ours.D.copy_(theirs.D)
            copied[f"layers.{index}.ssm"] += theirs.A_log.numel() + theirs.D.numel()
    attention_width = source.layers[0].self_attn.o_proj.in_features
    report = {
        "teacher": str(teacher_dir),
        "teacher_layers": teacher_config.text_config.num_hidden_layers,
        "student_layers": config.text_config.num_hidden_layers,
        "layers_taken": f"first {config.text_config.num_hidden_layers}",
        "copied_elements": copied,
        "out_proj_from_o_proj": (
            f"o_proj input width {attention_width} -> mixer width {config.text_config.mixer_size} "
            + ("(cut)" if attention_width >= config.text_config.mixer_size else "(rest zero)")
        ),
        "ssm_init": _describe_ssm_init(mixer_init, ssm_from),
        "conv_init": {
            "normal": "N(0, 1) as in the paper",
            "standard": "standard (kaiming uniform)",
            "identity": "identity (last tap 1)",
        }[conv_init],
        "cross_mamba_layers": config.text_config.cross_mamba_layers,
    }
    if output_dir is not None:
        output_dir = Path(output_dir)
        student.save_pretrained(output_dir)
        teacher_path = Path(teacher_dir)
        for name in PROCESSOR_FILES:
            if (teacher_path / name).is_file():
                shutil.copy2(teacher_path / name, output_dir / name)
    return student, report
