"""Offline text for the language models: the CPython standard-library sources as a `datasets` object.

Source: the ``.py`` files of the running interpreter's standard library (``sysconfig.get_paths()["stdlib"]``),
without ``site-packages`` and the ``test`` packages. Licence: the Python Software Foundation License (the
``LICENSE.txt`` next to them). Every machine with the same Python minor version holds nearly the same files, and
the split is a pure function of each file's relative path (``crc32(path) % every == 0`` -> validation), so it is
fixed: no file is ever in both splits, and adding a file moves no other.

Tokenizers: models converted from Gemma-3 keep Gemma-3's tokenizer; models trained from scratch use
:func:`byte_tokenizer` (a real `tokenizers` byte-level tokenizer: 256 byte tokens + ``<eos>``, nothing learned,
so it needs no download and covers any text).
"""

from __future__ import annotations

import sysconfig
import zlib
from pathlib import Path

from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SOURCE = "CPython standard library sources (.py) of the running interpreter"
LICENSE = "PSF-2.0"
SKIPPED_PARTS = ("site-packages", "dist-packages", "test", "tests", "idle_test")


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not set(p.relative_to(root).parts[:-1]) & set(SKIPPED_PARTS)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_corpus(validation_every: int = 20, root: str | Path | None = None) -> DatasetDict:
    """``DatasetDict(train, validation)`` with columns ``path`` (relative) and ``text`` (one file per row)."""
    if validation_every < 2:
        raise ValueError(f"validation_every must be >= 2 (one file in N goes to validation), got {validation_every}.")
    root = Path(root or sysconfig.get_paths()["stdlib"])
    rows: dict[str, dict[str, list[str]]] = {"train": {"path": [], "text": []}, "validation": {"path": [], "text": []}}
    for path in stdlib_files(root):
        relative = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            continue
        split = "validation" if zlib.crc32(relative.encode()) % validation_every == 0 else "train"
        rows[split]["path"].append(relative)
        rows[split]["text"].append(text)
    if not rows["validation"]["text"]:
        raise ValueError(f"No Python sources found under {root}; pass the folder of a CPython standard library.")
    return DatasetDict({name: Dataset.from_dict(columns) for name, columns in rows.items()})


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0-255 are the bytes (GPT-2's printable byte alphabet), 256 is ``<eos>``."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = sorted(alphabet, key=lambda c: _byte_of(c))
    vocab = {char: i for i, char in enumerate(byte_to_char)}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


def _byte_of(char: str) -> int:
    """The byte GPT-2's byte-level alphabet maps to ``char`` (printable bytes are themselves, others shifted)."""
    code = ord(char)
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    if code in printable:
        return code
    others = [b for b in range(256) if b not in printable]
    return others[code - 256]


def pack(split: Dataset, tokenizer, block_size: int, max_blocks: int | None = None) -> Dataset:
    """Tokenise every file, join them with ``<eos>`` and cut the stream into ``block_size`` blocks (the last,
    shorter one is dropped): equal-length rows with ``input_ids`` and ``labels``, no padding."""
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}.")
    stream: list[int] = []
    limit = None if max_blocks is None else max_blocks * block_size
    for text in split["text"]:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
        if limit is not None and len(stream) >= limit:
            break
    count = len(stream) // block_size if limit is None else min(len(stream) // block_size, max_blocks)
    blocks = [stream[i * block_size : (i + 1) * block_size] for i in range(count)]
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks})
