"""`transmamba convert` with LLaVA teachers (tiny, random, real folders): detected from the config, converted with
subclone_llava, exported through the same folder/report/card path as image students; bad input -> exit 2 with one
clear message and nothing written."""

from __future__ import annotations

import json
import re

import pytest
import torch
from huggingface_hub import ModelCard
from test_llava_gemma import tiny_gemma3_vlm, tiny_gemma_llava
from test_transllava_conversion import IMAGE_TOKEN, tiny_llava
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessorPil,
    LlamaConfig,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    ViTConfig,
)
from transmamba.conversion.cli import main
from transmamba.conversion.export import REPORT_NAME
from transmamba.conversion.llava import subclone_llava


def llava_processor() -> LlavaProcessor:
    vocab = {f"w{i}": i for i in range(6, IMAGE_TOKEN)}
    vocab.update({"<unk>": 0, "USER:": 1, "ASSISTANT:": 2, "What": 3, "is": 4, "this?": 5, "<image>": IMAGE_TOKEN})
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", extra_special_tokens={"image_token": "<image>"}
    )
    images = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


@pytest.fixture(scope="module")
def llama_teacher(tmp_path_factory):
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("llava_llama")
    tiny_llava().save_pretrained(folder)
    llava_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gemma_teacher(tmp_path_factory):
    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp("llava_gemma")
    tiny_gemma_llava().save_pretrained(folder)  # no processor files: the export goes without
    return folder


def test_help_explains_llava_teachers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("LLaVA teachers", "--ssm-from", "--cross-mamba-layers", "--mixer-init", "transllava", "Gemma-3"):
        assert words in text


def test_llava_teacher_converts_into_a_hub_ready_folder(llama_teacher, tmp_path, capsys):
    out = tmp_path / "student"
    spec = "transllava,num_hidden_layers=2,state_size=4"
    argv = ["--teacher", str(llama_teacher), "--student", spec, "--output", str(out)]
    assert main([*argv, "--cross-mamba-layers", "1", "--mixer-init", "attention", "--seed", "3"]) == 0
    assert "SSM init: attention-informed" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", REPORT_NAME, "mamba_lm.py", "tokenizer.json"} <= files
    assert "NOTICE" not in files  # a LLaMA teacher: no Gemma terms
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["ssm_init"].startswith("attention-informed") and report["conv_init"].startswith("identity")
    assert report["student"]["num_hidden_layers"] == 2 and report["cross_mamba_layers"] == [1]
    assert report["processor"] == "LlavaProcessor"
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-text-to-text" and "attention-informed" in card.text

    loaded = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True).eval()
    torch.manual_seed(3)
    expected, _ = subclone_llava(
        llama_teacher, num_layers=2, state_size=4, cross_mamba_layers=[1], mixer_init="attention"
    )
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    processor = AutoProcessor.from_pretrained(out)
    inputs = processor(
        images=torch.zeros(3, 16, 16), text="USER: <image> What is this? ASSISTANT:", return_tensors="pt"
    )
    assert loaded.generate(**inputs, max_new_tokens=3).shape == (1, inputs["input_ids"].shape[1] + 3)


def test_gemma_teacher_narrower_student_dry_run(gemma_teacher, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "student"
    spec = "transllava,num_hidden_layers=1,hidden_size=12,mixer_size=attention,state_size=4"
    argv = ["--teacher", str(gemma_teacher), "--student", spec, "--output", str(out)]
    assert main([*argv, "--push-to-hub", "me/trans-gemma-llava", "--dry-run"]) == 0
    assert "would upload" in capsys.readouterr().out
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["text_width"] == "12 of the teacher's 16" and len(report["residual_channels"]["indices"]) == 12
    assert report["out_proj_from_o_proj"].endswith("(equal)") and report["processor"].startswith("none")
    assert report["ssm_init"].startswith("standard Mamba")
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "gemma" and "Gemma Terms of Use" in card.text
    assert "Gemma Terms of Use" in (out / "NOTICE").read_text()
    assert AutoModelForImageTextToText.from_pretrained(out).config.text_config.hidden_size == 12


def test_gemma3_vlm_teacher_converts_narrower(tmp_path):
    torch.manual_seed(6)
    tiny_gemma3_vlm().save_pretrained(tmp_path / "gemma3")
    out = tmp_path / "student"
    spec = "transllava,num_hidden_layers=2,hidden_size=12,state_size=4"
    assert main(["--teacher", str(tmp_path / "gemma3"), "--student", spec, "--output", str(out)]) == 0
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["teacher_class"] == "Gemma3ForConditionalGeneration" and report["text_width"].startswith("12 of")
    assert "Gemma3ForConditionalGeneration" in ModelCard.load(out / "README.md").text
    student = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True).eval()
    ids = torch.tensor([[2, 5, 61, *[IMAGE_TOKEN] * 4, 62, 7]])
    assert student(input_ids=ids, pixel_values=torch.randn(1, 3, 16, 16)).logits.shape == (1, 9, 64)


def test_bad_inputs_exit_2_with_one_message_and_write_nothing(llama_teacher, tmp_path, capsys):
    causal = LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    causal.architectures = ["LlamaForCausalLM"]
    causal.save_pretrained(tmp_path / "llama")
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path / "vit"
    )
    out = tmp_path / "out"
    llava = ["--teacher", str(llama_teacher), "--output", str(out)]
    cases = [
        (["--teacher", str(tmp_path / "llama"), "--student", "transllava", "--output", str(out)], "not LLaVA-shaped"),
        ([*llava, "--student", "transllava,hidden_size=32"], "Text width hidden_size=32 does not fit the teacher's 16"),
        ([*llava, "--student", "transllava", "--data", "digits"], "--data apply to image teachers only"),
        ([*llava, "--student", "pmamba-s"], "converts into the 'transllava' student"),
        ([*llava, "--student", "transllava,num_hidden_layers=2", "--cross-mamba-layers", "7"], r"\[7\] are outside"),
        ([*llava, "--student", "transllava", "--cross-mamba-layers", "a,b"], "comma-separated layer indices"),
        (
            ["--teacher", str(tmp_path / "vit"), "--student", "pmamba-t", "--output", str(out), "--ssm-from", "x"],
            "--ssm-from apply to LLaVA teachers only",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("error:") == 1
        assert re.search(message, err), (message, err)
        assert not out.exists()
