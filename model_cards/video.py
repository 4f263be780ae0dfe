"""Cards of TransVideoMamba folders: the stage-1 video student and the text-video retrieval model."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from .card import CITATION

STUDENT_BODY = """
# {title}

A **TransVideoMamba** video student (VideoMamba-style: Conv3d tubelets, class token first, `(t n)` tokens scanned
forward and backward by a selective-SSM mixer), subcloned from the image Transformer `{teacher}`
(`{teacher_class}`) with [transmamba](https://github.com/) — stage 1 of TransMamba. Not trained yet: distil it
with `transmamba train` (video classification) or `transmamba train-retrieval`.

- Student: `{student}` — {layers} layers, width {width}, {frames} frames, tubelet {tubelet}, {params:,} parameters.
- Tubelet: the teacher's 2-D patch embedding inflated over time ({inflation}); spatial positions from the teacher;
  temporal positions zero; norms, MLPs and attention output projections copied; SSM: {ssm_init}.
- Tensors: {copied} copied, {sliced} sliced/reshaped, {initialised} initialised.

```python
from transformers import AutoModelForVideoClassification, AutoImageProcessor
model = AutoModelForVideoClassification.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{repo}")
pixel_values = processor(list_of_frames, return_tensors="pt").pixel_values  # (1, frames, 3, H, W)
logits = model(pixel_values).logits
```

{citation}
"""


def video_student_card(
    *, teacher: str, teacher_class: str, base_model: str | None, license: str | None, student_spec: str, config,
    num_parameters: int, inflation: str, ssm_init: str, summary: dict, repo_id: str | None,
) -> ModelCard:  # fmt: skip
    metadata = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="video-classification",
        license=license,
        tags=["transmamba", "mamba", "video", "video-classification", "subcloning", "videomamba", "stage-1"],
    )
    counts = {status: summary.get(status, {}).get("tensors", 0) for status in ("copied", "sliced", "initialised")}
    body = STUDENT_BODY.format(
        title=repo_id.split("/")[-1] if repo_id else f"TransVideoMamba {student_spec} from {base_model or teacher}",
        teacher=base_model or teacher,
        teacher_class=teacher_class,
        student=student_spec,
        layers=config.num_hidden_layers,
        width=config.hidden_size,
        frames=config.num_frames,
        tubelet=config.tubelet_size,
        params=num_parameters,
        inflation=inflation,
        ssm_init=ssm_init,
        repo=repo_id or "path/to/this/folder",
        citation=CITATION,
        **counts,
    )
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
