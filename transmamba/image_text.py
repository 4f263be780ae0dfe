"""Image-text data for distilling a TransLlavaMamba: LLaVA-format conversations, and the batches a LLaVA model eats.

A dataset here is a `datasets.DatasetDict` whose rows hold an ``image`` and a conversation in LLaVA's format:
``conversations = [{"from": "human", "value": "<image>\\nWhat is shown in this image?"}, {"from": "gpt", "value":
"A photo of a sneaker."}]`` (``messages`` with ``role``/``content``, the chat format, works too).

Specs: ``default`` (Fashion-MNIST when the Debian package ``dataset-fashion-mnist`` is installed, else
scikit-learn's digits: both ship offline), ``fashion_mnist``, ``digits``, a folder written by ``save_to_disk``,
any folder ``load_dataset`` reads, or a Hub dataset id already in LLaVA format.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset, DatasetDict

from transmamba.data import FASHION_MNIST_DIR, FASHION_MNIST_LABELS, load_image_dataset, load_stored_dataset

IMAGE_PLACEHOLDER = "<image>"  # LLaVA's DEFAULT_IMAGE_TOKEN; replaced by the processor's own image token
CONVERSATION_COLUMNS = ("conversations", "messages")
USER_ROLES, ASSISTANT_ROLES = ("human", "user"), ("gpt", "assistant")
OFFLINE_SOURCES = ("default", "fashion_mnist", "digits")
PROMPT_FORMATS = ("auto", "chat_template", "llava")
SPLIT_SEED = 0

# (question, answer) pairs; {name} is the class name, {article} "a"/"an" before it.
FASHION_TEMPLATES = [
    ("What is shown in this image?", "A photo of {article} {name}."),
    ("What kind of clothing item is this?", "It is {article} {name}."),
    ("Describe the object in the picture.", "This is {article} {name}."),
]
DIGIT_TEMPLATES = [
    ("Which digit is this?", "The digit {name}."),
    ("What number is written here?", "It is the number {name}."),
    ("What is shown in this image?", "A handwritten {name}."),
]


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def _conversations(labels: Sequence[int], names: Sequence[str], templates: list, seed: int) -> list[list[dict]]:
    """One question/answer pair per label, the template drawn with a fixed seed."""
    picks = np.random.default_rng(seed).integers(0, len(templates), len(labels))
    rows = []
    for label, pick in zip(labels, picks, strict=True):
        question, answer = templates[pick]
        name = names[label]
        rows.append(
            [
                {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}"},
                {"from": "gpt", "value": answer.format(name=name, article=_article(name))},
            ]
        )
    return rows


def offline_image_text(source: str = "default", max_samples: int | None = None, seed: int = 0) -> DatasetDict:
    """Classification images turned into LLaVA conversations ("What is shown in this image?" -> "A photo of a
    sneaker."): real images, answers that need the image, nothing to download.

    ``source``: ``fashion_mnist``, ``digits`` or ``default`` (the former when its Debian package is installed).
    ``max_samples`` caps every split (first rows, so repeated calls agree). The ``label`` column is kept.
    """
    if source not in OFFLINE_SOURCES:
        raise ValueError(f"Unknown offline image-text source {source!r}; choose one of {', '.join(OFFLINE_SOURCES)}.")
    if source == "default":
        source = "fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "digits"
    if source == "fashion_mnist":
        names, templates = [n.lower() for n in FASHION_MNIST_LABELS], FASHION_TEMPLATES
    else:
        names, templates = [str(i) for i in range(10)], DIGIT_TEMPLATES
    images = load_image_dataset(source)
    splits = {}
    for index, (split, data) in enumerate(images.items()):
        if max_samples is not None:
            data = data.select(range(min(max_samples, len(data))))
        rows = _conversations(data["label"], names, templates, seed + index)
        splits[split] = data.add_column("conversations", rows)  # a new column: the image bytes are not rewritten
    return DatasetDict(splits)


def conversation_column(
    dataset: Dataset, spec: str = "the dataset", image_column: str = "image", column: str | None = None
) -> str:
    """The conversation column (``column``, else the first of CONVERSATION_COLUMNS present); a ValueError naming
    the missing columns when the rows are not LLaVA-shaped."""
    columns = dataset.column_names
    wanted = (column,) if column else CONVERSATION_COLUMNS
    found = next((c for c in wanted if c in columns), None)
    missing = ([image_column] if image_column not in columns else []) + ([" or ".join(wanted)] if not found else [])
    if missing:
        raise ValueError(
            f"{spec} is not in LLaVA conversation format: missing column(s) {', '.join(missing)} (it has "
            f"{', '.join(columns)}). Each row needs an image and 'conversations' (a list of {{'from': 'human'|'gpt', "
            "'value': text}, the user turn holding '<image>') or 'messages' ({'role', 'content'}); name other "
            "columns with --image_column / --conversation_column."
        )
    return found


def load_image_text_dataset(
    spec: str = "default",
    max_samples: int | None = None,
    seed: int = 0,
    image_column: str = "image",
    column: str | None = None,
) -> DatasetDict:
    """A spec (see the module docstring) -> DatasetDict with a ``train`` split, checked to be LLaVA-shaped
    (``image_column`` and the conversation ``column``, see :func:`conversation_column`).

    Without an evaluation split ("validation"/"test"), 10% of train is held out with a fixed seed.
    """
    if spec in OFFLINE_SOURCES:
        data = offline_image_text(spec, max_samples, seed)
    else:
        accepted = f"{', '.join(OFFLINE_SOURCES)}, a folder written by save_to_disk, a Hub dataset in LLaVA format"
        data = load_stored_dataset(spec, "image-text dataset", accepted)
    if isinstance(data, Dataset):
        data = DatasetDict({"train": data})
    if "train" not in data:
        raise ValueError(f"Dataset {spec!r} has no train split (splits: {', '.join(data)}).")
    conversation_column(data["train"], f"Dataset {spec!r}", image_column, column)
    if not any(s in data for s in ("validation", "test")):
        held_out = data["train"].train_test_split(test_size=0.1, seed=SPLIT_SEED)
        data = DatasetDict({**data, "train": held_out["train"], "test": held_out["test"]})
    return data


def _content_text(content) -> str:
    """Chat content: a string, or parts like ``{"type": "image"}`` / ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return content
    parts = [IMAGE_PLACEHOLDER if part.get("type") == "image" else part.get("text") or "" for part in content]
    return "\n".join(p for p in parts if p)


def conversation_turns(conversation: list[dict]) -> list[tuple[str, str]]:
    """LLaVA (``from``/``value``) or chat (``role``/``content``) turns -> [("user"|"assistant", text)]."""
    turns = []
    for turn in conversation:
        role = turn.get("from", turn.get("role"))
        text = turn["value"] if "value" in turn and turn["value"] is not None else _content_text(turn.get("content"))
        if role in USER_ROLES:
            turns.append(("user", text.strip()))
        elif role in ASSISTANT_ROLES:
            turns.append(("assistant", text.strip()))
        elif role != "system":
            raise ValueError(f"Unknown conversation role {role!r}; use human/user and gpt/assistant.")
    if not any(role == "assistant" for role, _ in turns):
        raise ValueError("A conversation has no assistant (gpt) turn: there is no answer to learn.")
    return turns


class LlavaConversationEncoder:
    """Batch transform for ``Dataset.with_transform``: image + conversation -> ``input_ids``, ``labels``,
    ``pixel_values``, through the teacher's ``LlavaProcessor``.

    The prompt is the processor's chat template when it has one (``processor.apply_chat_template``; Gemma-3's
    turn format, for instance), else LLaVA-1.5's fixed prompt ("USER: <image>\\nquestion ASSISTANT: answer</s>");
    ``prompt_format`` forces either. The segment holding the image goes through the processor, which expands the
    placeholder to one token per image feature; the other segments through its tokenizer. ``labels`` are -100
    everywhere except the answer tokens (and the EOS or end-of-turn marker closing each answer), so the model is
    taught only what the assistant says.
    """

    def __init__(
        self,
        processor,
        image_column: str = "image",
        conversation_column: str = "conversations",
        prompt_format: str = "auto",
    ):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}.")
        has_template = bool(getattr(processor, "chat_template", None))
        if prompt_format == "chat_template" and not has_template:
            raise ValueError("prompt_format='chat_template' but the processor has no chat template; use 'llava'.")
        self.chat = prompt_format == "chat_template" or (prompt_format == "auto" and has_template)
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.image_token = getattr(processor, "image_token", None) or IMAGE_PLACEHOLDER
        self.image_column, self.conversation_column = image_column, conversation_column
        self.eos = self.tokenizer.eos_token or ""

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end an answer, for ``generate``: EOS, and the first token a chat template puts after one."""
        stops = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        if self.chat:
            turns = [("user", "?"), ("assistant", "X")]
            full = self._render(turns, False)
            closing = full[full.rindex("X") + 1 :]
            closing_ids = self.tokenizer(closing, add_special_tokens=False)["input_ids"] if closing.strip() else []
            stops += closing_ids[:1]
        return list(dict.fromkeys(stops))

    def _render(self, turns: list[tuple[str, str]], generation_prompt: bool) -> str:
        messages = [{"role": role, "content": text} for role, text in turns]
        return self.processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)

    def _segments(self, turns: list[tuple[str, str]], prompt_only: bool) -> list[tuple[str, bool]]:
        """(text, is_answer) pieces whose concatenation is the whole prompt (+ answers unless ``prompt_only``)."""
        if prompt_only:
            last = max(i for i, (role, _) in enumerate(turns) if role == "assistant")
            turns = turns[:last]
        segments: list[tuple[str, bool]] = []
        if not self.chat:
            for role, text in turns:
                if role == "user":
                    segments.append((f"{' ' if segments else ''}USER: {text} ASSISTANT:", False))
                else:
                    segments.append((f" {text}{self.eos}", True))
            return segments
        done = ""
        for i, (role, _) in enumerate(turns):
            if role != "assistant":
                continue
            prompt, full = self._render(turns[:i], True), self._render(turns[: i + 1], False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise ValueError("The chat template does not render a conversation as a prefix of its extension.")
            segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
            done = full
        if prompt_only:
            segments.append((self._render(turns, True)[len(done) :], False))
        return segments

    def encode(self, image, conversation: list[dict], prompt_only: bool = False) -> dict[str, list[int] | torch.Tensor]:
        """``prompt_only``: drop the last answer and end with the assistant's cue, for ``generate``."""
        turns = conversation_turns(conversation)
        if not any(IMAGE_PLACEHOLDER in text for role, text in turns if role == "user"):
            first_user = next(i for i, (role, _) in enumerate(turns) if role == "user")
            turns[first_user] = ("user", f"{IMAGE_PLACEHOLDER}\n{turns[first_user][1]}")
        ids: list[int] = []
        labels: list[int] = []
        pixel_values = None
        bos = self.tokenizer.bos_token
        for segment, is_answer in self._segments(turns, prompt_only):
            # A chat template writes its own BOS; the fixed prompt gets the tokenizer's at the start.
            special = not ids and not (self.chat and bos and segment.startswith(bos))
            if IMAGE_PLACEHOLDER in segment:
                if pixel_values is not None or segment.count(IMAGE_PLACEHOLDER) > 1:
                    raise ValueError("Each conversation takes one image: put '<image>' in one user turn, once.")
                text = segment.replace(IMAGE_PLACEHOLDER, self.image_token)
                encoded = self.processor(
                    images=image.convert("RGB"), text=text, return_tensors="pt", add_special_tokens=special
                )
                pixel_values, tokens = encoded["pixel_values"][0], encoded["input_ids"][0].tolist()
            else:
                tokens = self.tokenizer(segment, add_special_tokens=special)["input_ids"]
            ids += tokens
            labels += tokens if is_answer else [-100] * len(tokens)
        return {"input_ids": ids, "labels": labels, "pixel_values": pixel_values}

    def __call__(self, batch: dict) -> dict[str, list]:
        rows = [
            self.encode(image, conversation)
            for image, conversation in zip(batch[self.image_column], batch[self.conversation_column], strict=True)
        ]
        return {key: [row[key] for row in rows] for key in ("input_ids", "labels", "pixel_values")}


class LlavaCollator:
    """Pads a list of encoded rows on the right (ids with ``pad_token_id``, labels with -100) and stacks the images.

    Right padding keeps every real token's prefix unchanged for a causal teacher and a recurrent student alike.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(row["input_ids"]) for row in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n], labels[i, :n] = torch.as_tensor(row["input_ids"]), torch.as_tensor(row["labels"])
            mask[i, :n] = 1
        pixels = torch.stack([torch.as_tensor(row["pixel_values"]) for row in rows])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}
