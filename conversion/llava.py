"""Subcloning a LLaVA teacher into a TransLlavaMamba student (paper §3.2 "Multi-modal Task").

Teachers: ``LlavaForConditionalGeneration`` and ``Gemma3ForConditionalGeneration`` (whose pooled projector the
student reproduces). Copied as they are: the vision tower and the projector. From the teacher's language model
(LLaMA-like or Gemma-3): token embeddings, the RMSNorms (Gemma's sandwich norms too) and the gated MLP of the first
``num_layers`` layers, the final norm, ``lm_head``, and each layer's attention ``o_proj`` into the mixer's
``out_proj`` (``o_proj``'s input columns, ``heads * head_dim`` wide, map onto the mixer's first channels: cut when the
mixer is narrower, the rest zero when wider; ``mixer_size="attention"`` makes them equal).
The SSM (x_proj, dt_proj, A_log, D) comes from a pretrained `transformers` Mamba checkpoint (``ssm_from``, as
the paper does) or gets the standard Mamba init; the conv weights are drawn from N(0, 1), as the paper does.
A narrower language model (``hidden_size`` below the teacher's) keeps the teacher's residual channels with the
largest weight norms (one index set for the whole residual stream, as the image path's ``magnitude``).
Tensors are mapped module by module, never by key strings, so renamed checkpoint keys of future `transformers`
versions cannot silently drop a tensor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    MambaForCausalLM,
    PretrainedConfig,
)
from transmamba.modeling_transmamba import TransLlavaMambaConfig, TransLlavaMambaForConditionalGeneration

from ..model_cards.naming import public_name
from ..model_checks import check_weights
from .args import CONV_INITS, LLAVA_STUDENT_PRESET, MIXER_INITS
from .attention_init import attention_informed
from .export import REPORT_NAME
from .importance import _energy, top_indices
from .student_spec import _split_top_level, parse_overrides

# Text models whose decoder layers have LLaMA's module names and semantics (plain RMSNorm, gated MLP, o_proj).
LLAMA_LIKE = ("llama", "mistral", "qwen2")
# Gemma-3: (1 + weight) RMSNorm, sqrt(hidden)-scaled embeddings, sandwich norms, gelu_pytorch_tanh MLP.
GEMMA_LIKE = ("gemma3_text",)
# Vision-language classes whose image path the student reproduces (projector_type "mlp" and "gemma3").
TEACHER_TYPES = ("llava", "gemma3")
STUDENT_PRESET = LLAVA_STUDENT_PRESET
STUDENT_FIELDS = ("num_hidden_layers", "hidden_size", "state_size", "expand", "mixer_size", "conv_kernel",
                  "time_step_rank")  # fmt: skip
SEMANTIC_FIELDS = ("hidden_act", "norm_offset", "embedding_scale", "sandwich_norms", "final_logit_softcapping")
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


def is_multimodal(config: PretrainedConfig) -> bool:
    """A config that should go down the vision-language path (and be vetted by ``check_teacher`` there)."""
    if any(a.endswith("ForImageClassification") for a in config.architectures or []):
        return False  # e.g. CLIPForImageClassification: an image model (the image path names what it supports)
    has_parts = getattr(config, "text_config", None) is not None or getattr(config, "vision_config", None) is not None
    causal = any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in config.architectures or [])
    return has_parts or causal


def check_teacher(config: PretrainedConfig) -> None:
    """Refuse anything that is not LLaVA-shaped (Llava or Gemma-3 VLM) with a LLaMA-like or Gemma-3 text model,
    before loading weights."""
    missing = [key for key in ("vision_config", "text_config", "image_token_id") if getattr(config, key, None) is None]
    if missing:
        raise ValueError(
            f"The teacher ({config.model_type!r}) is not LLaVA-shaped: its config lacks {', '.join(missing)}. "
            "Pass a LlavaForConditionalGeneration checkpoint (vision tower + projector + language model), or a "
            "ViT-family image model (ViT, DeiT, DINOv2) for an image student."
        )
    if config.model_type not in TEACHER_TYPES:
        raise ValueError(
            f"The teacher is a {config.model_type!r} vision-language model, not LLaVA-shaped: subcloning copies the "
            "image path of LlavaForConditionalGeneration (two-layer MLP projector) or Gemma3ForConditionalGeneration "
            "(pooled, normed projector), which it does not share. Wrap its vision tower and language model in a "
            "LlavaConfig."
        )
    text_type = config.text_config.model_type
    if text_type not in LLAMA_LIKE + GEMMA_LIKE:
        raise ValueError(
            f"The teacher's language model is {text_type!r}; subcloning supports LLaMA-shaped text models "
            f"({', '.join(LLAMA_LIKE)}) and Gemma-3 ({', '.join(GEMMA_LIKE)})."
        )


def load_processor(source: str | Path):
    """The teacher's processor (LlavaProcessor: tokenizer + image processor), else its tokenizer, else None."""
    for loader in (AutoProcessor, AutoTokenizer):
        try:
            return loader.from_pretrained(source)
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return None


def parse_student(spec: str) -> dict:
    """``transllava[,key=value...]`` (keys: ``STUDENT_FIELDS``) -> keyword arguments of ``subclone_llava``."""
    preset, *items = [part.strip() for part in _split_top_level(spec)]
    if preset != STUDENT_PRESET:
        raise ValueError(
            f"A LLaVA teacher converts into the {STUDENT_PRESET!r} student, optionally with overrides like "
            f"'{STUDENT_PRESET},num_hidden_layers=8,hidden_size=512'; got preset {preset!r}."
        )
    overrides = parse_overrides(items, list(STUDENT_FIELDS))
    return {"num_layers" if key == "num_hidden_layers" else key: value for key, value in overrides.items()}


def attention_width(text: PretrainedConfig) -> int:
    """Input width of the teacher's ``o_proj``: heads * head_dim (Gemma's head_dim is not hidden / heads)."""
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_attention_heads * head_dim


def _gemma_fields(text: PretrainedConfig) -> dict:
    """The options that make Gemma-3's copied weights mean the same thing; LLaMA's defaults otherwise."""
    if text.model_type not in GEMMA_LIKE:
        return dict(hidden_act=text.hidden_act)
    return dict(
        hidden_act=text.hidden_activation,
        norm_offset=1.0,
        embedding_scale=text.hidden_size**0.5,  # the teacher's scale, whatever the student's width
        sandwich_norms=True,
    )


def student_config(
    teacher: PretrainedConfig,
    num_layers: int | None = None,
    state_size: int = 16,
    expand: int = 2,
    conv_kernel: int = 4,
    time_step_rank: int | str = "auto",
    cross_mamba_layers: list[int] | tuple[int, ...] = (),
    hidden_size: int | None = None,
    mixer_size: int | str | None = None,
) -> TransLlavaMambaConfig:
    """The student's config: the teacher's vision/projector fields and text shape, Mamba mixer fields added.

    ``hidden_size`` below the teacher's gives a narrower language model; ``mixer_size`` sets the mixer width
    (``"attention"``: the teacher's ``heads * head_dim``; default ``expand * hidden_size``).
    """
    text = teacher.text_config
    depth = text.num_hidden_layers if num_layers is None else num_layers
    if not 1 <= depth <= text.num_hidden_layers:
        raise ValueError(
            f"num_layers={depth} does not fit a teacher with {text.num_hidden_layers} layers; the student takes "
            f"the teacher's first n layers, so choose 1..{text.num_hidden_layers}."
        )
    width = text.hidden_size if hidden_size is None else hidden_size
    if not isinstance(width, int) or not 1 <= width <= text.hidden_size:
        raise ValueError(
            f"Text width hidden_size={width!r} does not fit the teacher's {text.hidden_size}: a subcloned language "
            f"model keeps a subset of the teacher's residual channels, so choose an integer in 1..{text.hidden_size}."
        )
    if mixer_size == "attention":
        mixer_size = attention_width(text)
    if mixer_size is not None and (not isinstance(mixer_size, int) or mixer_size < 1):
        raise ValueError(f"mixer_size must be a positive integer or 'attention', got {mixer_size!r}.")
    text_config = dict(
        vocab_size=text.vocab_size,
        hidden_size=width,
        intermediate_size=text.intermediate_size,
        num_hidden_layers=depth,
        mlp_bias=getattr(text, "mlp_bias", False),
        rms_norm_eps=text.rms_norm_eps,
        state_size=state_size,
        expand=expand,
        mixer_size=mixer_size,
        conv_kernel=conv_kernel,
        time_step_rank=time_step_rank,
        out_proj_bias=getattr(text, "attention_bias", False),
        cross_mamba_layers=list(cross_mamba_layers),
        tie_word_embeddings=text.tie_word_embeddings,
        pad_token_id=text.pad_token_id,
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        **_gemma_fields(text),
    )
    return TransLlavaMambaConfig(
        vision_config=teacher.vision_config.to_dict(),
        text_config=text_config,
        image_token_id=teacher.image_token_id,
        tie_word_embeddings=teacher.tie_word_embeddings,
        **_image_path_fields(teacher),
    )


def _image_path_fields(teacher: PretrainedConfig) -> dict:
    """How images become tokens: LLaVA's MLP on a chosen vision layer, or Gemma-3's pooled projector."""
    if teacher.model_type == "gemma3":
        tokens = teacher.mm_tokens_per_image
        return dict(projector_type="gemma3", mm_tokens_per_image=tokens, image_seq_length=tokens)
    return dict(
        image_seq_length=teacher.image_seq_length,
        projector_hidden_act=teacher.projector_hidden_act,
        vision_feature_select_strategy=teacher.vision_feature_select_strategy,
        vision_feature_layer=teacher.vision_feature_layer,
        multimodal_projector_bias=teacher.multimodal_projector_bias,
    )


def _take(tensor: torch.Tensor, shape: torch.Size, residual: torch.Tensor | None) -> torch.Tensor:
    """``tensor`` cut to ``shape``: only the residual width differs between teacher and student, so every axis
    whose size differs is a residual axis and keeps the ``residual`` channels."""
    for axis, (have, want) in enumerate(zip(tensor.shape, shape, strict=True)):
        if have != want:
            if residual is None or want != len(residual):
                raise RuntimeError(f"cannot map a {tuple(tensor.shape)} tensor onto {tuple(shape)}")
            tensor = tensor.index_select(axis, residual)
    return tensor


@torch.no_grad()
def _copy_module(target: nn.Module, source: nn.Module, residual: torch.Tensor | None = None) -> int:
    """Copy every tensor of ``source`` into ``target`` (same names, strict; residual axes sliced); returns the
    element count copied."""
    theirs, ours = source.state_dict(), target.state_dict()
    if theirs.keys() != ours.keys():
        raise RuntimeError(f"{type(source).__name__} and {type(target).__name__} differ: {theirs.keys() ^ ours.keys()}")
    target.load_state_dict({k: _take(v, ours[k].shape, residual) for k, v in theirs.items()}, strict=True)
    return sum(t.numel() for t in target.state_dict().values())


@torch.no_grad()
def _copy_out_proj(out_proj: nn.Linear, o_proj: nn.Linear, residual: torch.Tensor | None) -> None:
    """o_proj (hidden, heads*head_dim) -> out_proj (hidden, mixer_width): column j feeds mixer channel j; cut when
    the mixer is narrower, zero beyond the attention width when wider. Rows keep the residual channels."""
    weight = o_proj.weight if residual is None else o_proj.weight[residual]
    width = min(out_proj.in_features, weight.shape[1])
    out_proj.weight.zero_()
    out_proj.weight[:, :width] = weight[:, :width]
    if out_proj.bias is not None and o_proj.bias is not None:
        out_proj.bias.copy_(o_proj.bias if residual is None else o_proj.bias[residual])


def _per_query_head(weight: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """K/V projection rows repeated per query head, as grouped-query attention shares them: (heads*hd, hidden)."""
    head_dim = weight.shape[0] // kv_heads
    return weight.view(kv_heads, head_dim, -1).repeat_interleave(heads // kv_heads, dim=0).reshape(-1, weight.shape[1])


@torch.no_grad()
def _attention_informed_init(
    mixer: nn.Module, attention: nn.Module, heads: int, kv_heads: int, residual: torch.Tensor | None
) -> None:
    """Beyond the paper: x <- W_V, B <- W_K, C <- W_Q (``attention_init.py``: first ``state_size`` key/query dims
    of head 0; RoPE and Gemma's q/k norms ignored). A narrower student uses the kept residual columns."""
    columns = slice(None) if residual is None else residual
    value = _per_query_head(attention.v_proj.weight, heads, kv_heads)[:, columns]
    key = _per_query_head(attention.k_proj.weight, heads, kv_heads)[:, columns]
    mapped = attention_informed(attention.q_proj.weight[:, columns], key, value, None, heads, mixer.inner, mixer.state)
    rank, state = mixer.rank, mixer.state
    mixer.in_proj.weight[: mapped.width] = mapped.x_weight
    mixer.x_proj.weight[rank : rank + state] = mapped.B
    mixer.x_proj.weight[rank + state :] = mapped.C


# Linear layers of a LLaMA/Gemma decoder layer that read the residual stream (axis 1) or write it (axis 0).
_READS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
_WRITES = ("self_attn.o_proj", "mlp.down_proj")


def residual_importance(teacher: nn.Module, depth: int, norm_offset: float) -> torch.Tensor:
    """Magnitude score per residual channel of the teacher's language model: the L2 norm of every weight of the
    first ``depth`` layers, the embeddings, the final norm, ``lm_head`` and the projector's output that reads or
    writes the channel (norm weights as the gain they apply, ``norm_offset + weight``)."""
    lm = teacher.model.language_model
    projector = teacher.model.multi_modal_projector
    pairs = [(lm.embed_tokens.weight, 1), (lm.norm.weight + norm_offset, 0)]
    if hasattr(projector, "mm_input_projection_weight"):  # Gemma-3: (vision hidden, text hidden)
        pairs.append((projector.mm_input_projection_weight, 1))
    else:
        pairs.append((projector.linear_2.weight, 0))
    if teacher.lm_head.weight.data_ptr() != lm.embed_tokens.weight.data_ptr():
        pairs.append((teacher.lm_head.weight, 1))
    for layer in lm.layers[:depth]:
        for name, module in layer.named_modules():
            if name in _READS + _WRITES:
                pairs.append((module.weight, 1 if name in _READS else 0))
            elif name.endswith("layernorm"):
                pairs.append((module.weight + norm_offset, 0))
    return _energy(pairs, lambda tensor: tensor)


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


def check_options(mixer_init: str, conv_init: str | None, ssm_from, state_size: int, text: PretrainedConfig) -> str:
    """Vet the SSM options (before loading weights); returns the conv init to use."""
    if mixer_init not in MIXER_INITS:
        raise ValueError(f"mixer_init must be one of {', '.join(MIXER_INITS)}, got {mixer_init!r}.")
    conv_init = conv_init or ("identity" if mixer_init == "attention" else "normal")
    if conv_init not in CONV_INITS:
        raise ValueError(f"conv_init must be one of {', '.join(CONV_INITS)}, got {conv_init!r}.")
    if ssm_from is not None and mixer_init == "attention":
        raise ValueError("Choose one SSM source: ssm_from (a Mamba checkpoint) or mixer_init='attention'.")
    if mixer_init == "attention" and state_size > attention_width(text):
        raise ValueError(
            f"state_size {state_size} exceeds the teacher's key width {attention_width(text)}; "
            "the attention-informed init maps key dims to state dims, so choose a smaller state_size."
        )
    return conv_init


@torch.no_grad()
def _init_conv(conv: nn.Conv1d, conv_init: str) -> None:
    if conv_init == "normal":
        nn.init.normal_(conv.weight, 0.0, 1.0)
    elif conv_init == "identity":
        conv.weight.zero_()
        conv.weight[..., -1] = 1.0
    if conv_init != "standard":
        nn.init.zeros_(conv.bias)


def _copy_ssm(target: nn.Module, ssm_from: str | Path, copied: dict) -> None:
    """x_proj, dt_proj, A_log and D of student layer i from layer i of a `transformers` Mamba checkpoint."""
    mamba = MambaForCausalLM.from_pretrained(ssm_from, dtype=torch.float32)
    for index, (layer, mamba_layer) in enumerate(zip(target.layers, mamba.backbone.layers, strict=False)):
        ours, theirs = layer.mixer, mamba_layer.mixer
        count = _copy_module(ours.x_proj, theirs.x_proj) + _copy_module(ours.dt_proj, theirs.dt_proj)
        ours.A_log.copy_(theirs.A_log)
        ours.D.copy_(theirs.D)
        copied[f"layers.{index}.ssm"] = count + theirs.A_log.numel() + theirs.D.numel()


def tensor_provenance(student: nn.Module, taken: list[nn.Module], sliced: bool) -> dict[str, dict]:
    """Each student parameter's status in the form `conversion.export.inherited_parameters` reads: "copied" (or
    "sliced", for a narrower student) when it lies in a module taken from the teacher, else "initialised"."""
    status = "sliced" if sliced else "copied"
    from_teacher = {id(p) for module in taken for p in module.parameters()}
    return {name: {"status": status if id(p) in from_teacher else "initialised"}
            for name, p in student.named_parameters()}  # fmt: skip


def _report(teacher_dir, teacher_config, config, copied, residual, mixer_init, conv_init, ssm_from) -> dict:
    text, student_text = teacher_config.text_config, config.text_config
    width, mixer = attention_width(text), student_text.mixer_size
    report = {
        "teacher": public_name(str(teacher_dir)),
        "teacher_text_model": text.model_type,
        "teacher_layers": text.num_hidden_layers,
        "student_layers": student_text.num_hidden_layers,
        "layers_taken": f"first {student_text.num_hidden_layers}",
        "text_width": f"{student_text.hidden_size} of the teacher's {text.hidden_size}",
        "copied_elements": copied,
        "out_proj_from_o_proj": f"o_proj input width {width} -> mixer width {mixer} "
        + ("(equal)" if width == mixer else "(cut)" if width > mixer else "(rest zero)"),
        "text_semantics": {key: getattr(student_text, key) for key in SEMANTIC_FIELDS},
        "ssm_init": _describe_ssm_init(mixer_init, ssm_from),
        "conv_init": {
            "normal": "N(0, 1) as in the paper",
            "standard": "standard (kaiming uniform)",
            "identity": "identity (last tap 1)",
        }[conv_init],
        "cross_mamba_layers": student_text.cross_mamba_layers,
    }
    if residual is not None:
        report["residual_channels"] = {"importance": "magnitude (weight L2 norms)", "indices": residual.tolist()}
    if getattr(text, "final_logit_softcapping", None) is not None:
        report["final_logit_softcapping"] = "not applied: the teacher's VLM class ignores the text config's"
    return report


@torch.no_grad()
def subclone_llava(
    teacher_dir: str | Path,
    *,
    num_layers: int | None = None,
    hidden_size: int | None = None,
    state_size: int = 16,
    expand: int = 2,
    mixer_size: int | str | None = None,
    conv_kernel: int = 4,
    time_step_rank: int | str = "auto",
    cross_mamba_layers: list[int] | tuple[int, ...] = (),
    mixer_init: str = "standard",
    conv_init: str | None = None,
    ssm_from: str | Path | None = None,
    output_dir: str | Path | None = None,
) -> tuple[TransLlavaMambaForConditionalGeneration, dict]:
    """Build a TransLlavaMamba student from a LLaVA teacher (Hub id or folder; LLaMA-like or Gemma-3 text model)
    or a ``Gemma3ForConditionalGeneration`` (its pooled projector is kept as it is).

    ``hidden_size`` below the teacher's keeps its highest-magnitude residual channels; ``mixer_size`` sets the
    mixer width (``"attention"`` = the teacher's ``heads * head_dim``, so ``o_proj`` maps onto ``out_proj`` 1:1).
    ``mixer_init="standard"`` is the paper's SSM init; ``"attention"`` adds the attention-informed init (see
    ``_attention_informed_init``). ``conv_init`` defaults to the paper's N(0, 1) for the former and to an
    identity conv (last tap 1) for the latter, which the Q/K/V mapping assumes.
    ``ssm_from`` (a `transformers` Mamba checkpoint of the student's mixer shape) supplies x_proj, dt_proj,
    A_log and D of layer i from its layer i, as the paper initialises Trans-LLaVA's SSM.
    Returns the student and a report of what was copied and how the rest was initialised. With
    ``output_dir`` the student is saved there (with its remote code) together with the teacher's tokenizer
    and processor files, ready for ``from_pretrained(..., trust_remote_code=True)``.
    """
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    check_teacher(teacher_config)
    text = teacher_config.text_config
    conv_init = check_options(mixer_init, conv_init, ssm_from, state_size, text)
    config = student_config(
        teacher_config, num_layers, state_size, expand, conv_kernel, time_step_rank, cross_mamba_layers,
        hidden_size, mixer_size,
    )  # fmt: skip
    if ssm_from is not None:
        try:
            ssm_config = AutoConfig.from_pretrained(ssm_from)
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read the Mamba checkpoint ssm_from={str(ssm_from)!r}: {error}") from None
        _check_ssm_source(ssm_config, config)
    check_weights(str(teacher_dir), "Teacher")
    teacher = AutoModelForImageTextToText.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    student = TransLlavaMambaForConditionalGeneration(config).eval()
    depth, width = config.text_config.num_hidden_layers, config.text_config.hidden_size
    residual = None
    if width < text.hidden_size:
        residual = top_indices(residual_importance(teacher, depth, config.text_config.norm_offset), width)

    copied = {
        "vision_tower": _copy_module(student.model.vision_tower, teacher.model.vision_tower),
        "multi_modal_projector": _copy_module(
            student.model.multi_modal_projector, teacher.model.multi_modal_projector, residual
        ),
    }
    source, target = teacher.model.language_model, student.model.language_model
    copied["embed_tokens"] = _copy_module(target.embed_tokens, source.embed_tokens, residual)
    copied["norm"] = _copy_module(target.norm, source.norm, residual)
    copied["lm_head"] = _copy_module(student.lm_head, teacher.lm_head, residual)
    taken = [student.model.vision_tower, student.model.multi_modal_projector, target.embed_tokens, target.norm,
             student.lm_head]  # fmt: skip
    norms = [n for n, _ in target.layers[0].named_children() if n.endswith("layernorm")]
    for index, layer in enumerate(target.layers):
        teacher_layer = source.layers[index]
        for name in (*norms, "mlp"):
            copied[f"layers.{index}.{name}"] = _copy_module(
                getattr(layer, name), getattr(teacher_layer, name), residual
            )
            taken.append(getattr(layer, name))
        _copy_out_proj(layer.mixer.out_proj, teacher_layer.self_attn.o_proj, residual)
        taken.append(layer.mixer.out_proj)
        copied[f"layers.{index}.o_proj->out_proj"] = width * min(layer.mixer.inner, attention_width(text))
        _init_conv(layer.mixer.conv1d, conv_init)
        if mixer_init == "attention":
            _attention_informed_init(
                layer.mixer, teacher_layer.self_attn, text.num_attention_heads, text.num_key_value_heads, residual
            )
    if ssm_from is not None:
        _copy_ssm(target, ssm_from, copied)
    report = _report(teacher_dir, teacher_config, config, copied, residual, mixer_init, conv_init, ssm_from)
    report["teacher_class"] = type(teacher).__name__
    report["tensors"] = tensor_provenance(student, taken, sliced=residual is not None)
    if output_dir is not None:
        output_dir = Path(output_dir)
        student.save_pretrained(output_dir)
        (output_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        teacher_path = Path(teacher_dir)
        for name in PROCESSOR_FILES:
            if (teacher_path / name).is_file():
                shutil.copy2(teacher_path / name, output_dir / name)
    return student, report
