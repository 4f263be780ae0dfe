"""`transmamba convert-lm` and `transmamba train-lm` end to end on a tiny LLaMA teacher built here."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset, DatasetDict
from test_switch_lm import VOCAB, tiny_llama
from transformers import AutoModelForCausalLM, BertConfig, BertModel

from transmamba.cli import main
from transmamba.text_data import byte_tokenizer, stdlib_files

ARGS = [
    "--per_device_train_batch_size",
    "2",
    "--max_steps",
    "2",
    "--logging_steps",
    "1",
    "--use_cpu",
    "true",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "no",
    "--report_to",
    "none",
]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    tokenizer = byte_tokenizer()
    teacher = tiny_llama()
    teacher.resize_token_embeddings(len(tokenizer))  # the byte tokenizer's 257 ids
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    files = stdlib_files()[:6]  # real text: six standard-library modules
    texts = [p.read_text(encoding="utf-8")[:3000] for p in files]
    folder = tmp_path_factory.mktemp("text")
    DatasetDict(
        {"train": Dataset.from_dict({"text": texts[:4]}), "validation": Dataset.from_dict({"text": texts[4:]})}
    ).save_to_disk(folder)
    return folder


def test_convert_lm_writes_a_folder_that_is_the_teacher_then_train_lm_distils_it(teacher_dir, text_dir, tmp_path):
    out = tmp_path / "switch"
    assert main(["convert-lm", "--teacher", str(teacher_dir), "--output", str(out), "--transpoints", "64"]) == 0
    report = json.loads((out / "subcloning_report.json").read_text())
    assert report["layer_transpoints"] == [64, 64]
    assert "TransMamba-switch" in (out / "README.md").read_text()
    student = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    ids = torch.randint(0, 257, (1, 30))
    with torch.no_grad():
        assert torch.allclose(student(ids).logits, teacher(ids).logits, atol=1e-5)

    trained = tmp_path / "trained"
    code = main(
        [
            "train-lm",
            "--student",
            str(out),
            "--teacher",
            str(teacher_dir),
            "--dataset",
            str(text_dir),
            "--block_size",
            "32",
            "--output_dir",
            str(trained),
            *ARGS,
        ]
    )
    assert code == 0
    model = AutoModelForCausalLM.from_pretrained(trained, trust_remote_code=True)
    assert model.config.layer_transpoints == [64, 64]
    card = (trained / "README.md").read_text()
    assert f"distilled from `{teacher_dir}`" in card and "Validation loss" in card


def test_train_lm_from_scratch_uses_the_plain_trainer(text_dir, tmp_path):
    from test_switch_lm import tiny

    scratch = tmp_path / "scratch"
    tiny([8, 0], vocab_size=257).save_pretrained(scratch)
    code = main(
        [
            "train-lm",
            "--student",
            str(scratch),
            "--dataset",
            str(text_dir),
            "--block_size",
            "16",
            "--output_dir",
            str(tmp_path / "out"),
            *ARGS,
        ]
    )
    assert code == 0 and "trained from scratch" in (tmp_path / "out" / "README.md").read_text()


def test_bad_input_is_one_message_and_exit_code_2(teacher_dir, tmp_path, capsys):
    assert (
        main(["convert-lm", "--teacher", str(teacher_dir), "--output", str(tmp_path / "a"), "--transpoints", "x,1"])
        == 2
    )
    assert "is not a TransPoint schedule" in capsys.readouterr().err
    assert (
        main(["convert-lm", "--teacher", str(teacher_dir), "--output", str(tmp_path / "b"), "--transpoints", "1,2,3"])
        == 2
    )
    assert "has 3 entries but the model has 2 layers" in capsys.readouterr().err
    bert = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=VOCAB)
    ).save_pretrained(bert)
    assert main(["convert-lm", "--teacher", str(bert), "--output", str(tmp_path / "c")]) == 2
    assert "not a causal language model" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
