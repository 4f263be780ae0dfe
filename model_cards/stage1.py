"""Model cards of stage-1 (subcloned, untrained) students: image classifiers and TransLlavaMamba VLMs."""

from __future__ import annotations

import os

from huggingface_hub import ModelCard, ModelCardData

from .card import CITATION, KERNELS_NOTE
from .naming import family_of

BODY = """
# {title}

A **TransMamba** vision student ({family}) initialised from the Transformer `{teacher}` by weight subcloning —
stage 1 of [TransMamba](https://arxiv.org/abs/2502.15130) (Chen et al., 2025).

> **Stage 1 only — not trained.** {copied_parts} come from the teacher; the selective-SSM
> parameters are freshly initialised, so the model does not classify well yet.
> Distil it (stage 2, `transmamba train`) before use.

## How to load

```python
from transformers import AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("{repo}", trust_remote_code=True)
classifier = pipeline("image-classification", model="{repo}", trust_remote_code=True)
```

{kernels}

## How it was made

| | |
|---|---|
| Teacher | `{teacher}` ({teacher_class}) |
| Student | `{student}`: {layers} layers, width {width}, {directions} scan directions, {params:,} parameters |
| Channel selection | {importance} |
| Data for selection | {data} |
| Tensors copied / sliced / initialised | {copied} / {sliced} / {initialised} |

`subcloning_report.json` lists, for every tensor, whether it was copied, sliced (with the index source) or
initialised.

## Citation

{citation}
"""


def teacher_license(source: str) -> str | None:
    """The teacher card's license (local folder README.md or cached/online Hub card), or None if unknown."""
    if os.path.isdir(source):
        source = os.path.join(source, "README.md")
        if not os.path.isfile(source):
            return None
    try:
        return ModelCard.load(source).data.license
    except Exception:  # noqa: BLE001 - no card, offline, not cached: the license is simply unknown
        return None


def stage1_card(
    *,
    teacher: str,
    teacher_class: str,
    base_model: str | None,
    license: str | None,
    student_spec: str,
    config,
    num_parameters: int,
    importance: str,
    data: str | None,
    summary: dict,
    repo_id: str | None,
    copied_parts: str = "Patch embedding, position embeddings, norms, MLPs, the attention output projections and "
    "the head",
) -> ModelCard:
    family = family_of(config)
    tags = ["transmamba", "mamba", "vision", "image-classification", "subcloning", family.lower(), "stage-1"]
    metadata = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="image-classification",
        license=license,
        tags=tags,
        datasets=[data] if data and "/" in data else None,
    )
    counts = {status: summary.get(status, {}).get("tensors", 0) for status in ("copied", "sliced", "initialised")}
    body = BODY.format(
        kernels=KERNELS_NOTE,
        citation=CITATION,
        title=repo_id.split("/")[-1] if repo_id else f"TransMamba {student_spec} from {base_model or teacher}",
        family=family,
        teacher=base_model or teacher,
        teacher_class=teacher_class,
        repo=repo_id or "path/to/this/folder",
        student=student_spec,
        layers=config.num_hidden_layers,
        width=config.hidden_size,
        directions=config.num_directions,
        params=num_parameters,
        importance="none (as wide as the teacher)" if importance == "identity" else importance,
        data=data or "none",
        copied_parts=copied_parts,
        **counts,
    )
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")


VLM_BODY = """
# {title}

A **TransLlavaMamba** vision-language student: the LLaVA teacher `{teacher}`'s vision tower and projector in
front of a Mamba language model initialised from the teacher's {text_model} by weight subcloning — stage 1 of
[TransMamba](https://arxiv.org/abs/2502.15130) (Chen et al., 2025).

> **Stage 1 only — not trained.** Vision tower, projector, embeddings, norms, MLPs, the attention output
> projections and `lm_head` come from the teacher; the selective-SSM parameters are initialised as below, so the
> model does not answer well yet. Distil it against the teacher before use.

## How to load

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)  # reads our config to find LlavaProcessor
```

{kernels}
`generate()` keeps a fixed-size recurrent state per layer instead of a growing KV cache.

## How it was made

| | |
|---|---|
| Teacher | `{teacher}` ({teacher_class}, {text_model} language model) |
| Student | `{student}`: {params:,} parameters |
| Language model | the teacher's first {layers} layers as Mamba layers, width {width} ({text_width}), mixer {mixer} |
| Cross-Mamba layers | {cross} |
| SSM init | {ssm_init} |
| Conv init | {conv_init} |
| `o_proj` -> `out_proj` | {out_proj} |
{notice}
`subcloning_report.json` lists what was copied (element counts per module) and how the rest was initialised.

## Citation

{citation}
"""

GEMMA_NOTICE = """Gemma is provided under and subject to the Gemma Terms of Use found at https://ai.google.dev/gemma/terms.
This model's language model is derived from Gemma 3; its use is subject to those terms.
"""


def stage1_vlm_card(
    *,
    teacher: str,
    teacher_class: str,
    base_model: str | None,
    license: str | None,
    student_spec: str,
    config,
    num_parameters: int,
    report: dict,
    repo_id: str | None,
) -> ModelCard:
    """Card of a TransLlavaMamba student fresh from ``subclone_llava`` (``report`` is its report)."""
    text = config.text_config
    gemma = report["teacher_text_model"].startswith("gemma")
    metadata = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        license=license or ("gemma" if gemma else None),
        tags=["transmamba", "mamba", "llava", "vision-language", "image-text-to-text", "subcloning", "stage-1"],
    )
    body = VLM_BODY.format(
        kernels=KERNELS_NOTE,
        citation=CITATION,
        title=repo_id.split("/")[-1] if repo_id else f"TransLlavaMamba from {base_model or teacher}",
        teacher=base_model or teacher,
        teacher_class=teacher_class,
        text_model=report["teacher_text_model"],
        repo=repo_id or "path/to/this/folder",
        student=student_spec,
        layers=text.num_hidden_layers,
        width=text.hidden_size,
        text_width=report["text_width"]
        + (", highest-magnitude residual channels" if "residual_channels" in report else ""),
        mixer=text.mixer_size,
        params=num_parameters,
        cross=", ".join(map(str, text.cross_mamba_layers)) or "none",
        ssm_init=report["ssm_init"],
        conv_init=report["conv_init"],
        out_proj=report["out_proj_from_o_proj"],
        notice=f"\n{GEMMA_NOTICE}(See `NOTICE`.)\n" if gemma else "",
    )
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
