"""A vision-language model answers the held-out questions of `transmamba.vqa_eval` by greedy generation.

The same code scores a LLaVA teacher (``LlavaForConditionalGeneration``) and a TransLlavaMamba student: both take
``input_ids``/``pixel_values`` and ``generate``; the prompt is built by the :class:`LlavaConversationEncoder` the
model was trained with (chat template or LLaVA-1.5), cut before the answer.
"""

from __future__ import annotations

import time

import torch
from datasets import Dataset

from transmamba.image_text import LlavaConversationEncoder
from transmamba.vqa_eval import score


@torch.no_grad()
def generate_answers(model, encoder: LlavaConversationEncoder, rows: Dataset, max_new_tokens: int = 8) -> list[str]:
    """Greedy answers, one question at a time (no padding, so a recurrent student sees exactly its prompt)."""
    model.eval()
    stops = encoder.stop_token_ids
    pad = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else stops[0]
    answers = []
    for row in rows:
        encoded = encoder.encode(row["image"], row["conversations"], prompt_only=True)
        ids = torch.tensor([encoded["input_ids"]])
        out = model.generate(
            input_ids=ids,
            pixel_values=encoded["pixel_values"][None].to(model.dtype),
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=pad,
        )
        answers.append(encoder.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return answers


def evaluate_answers(model, encoder: LlavaConversationEncoder, rows: Dataset, max_new_tokens: int = 8) -> dict:
    """Exact match (overall, per kind, chance) of ``model`` on ``rows``, the answers and the time it took."""
    started = time.perf_counter()
    predictions = generate_answers(model, encoder, rows, max_new_tokens)
    result = score(predictions, rows["answer"], rows["kind"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["predictions"] = predictions
    return result
