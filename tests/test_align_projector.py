"""Stage-1 alignment of a tiny LLaVA teacher with tied embeddings (as Gemma has): only the projector trains, the
answer CE falls, checkpoints save despite the tie and a resumed run continues from them."""

from __future__ import annotations

import pytest
import torch
from datasets import DatasetDict
from test_llava_distill import save_teacher, training_args
from transformers import LlavaForConditionalGeneration
from transmamba.trainers.align_projector import AlignArguments, main, run

from transmamba.vqa_eval import vqa_splits


@pytest.fixture(scope="module")
def tied_teacher(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("align") / "teacher"
    save_teacher(folder, DatasetDict({"train": vqa_splits("digits", 40, 4)["train"]}), layers=2)
    model = LlavaForConditionalGeneration.from_pretrained(folder)
    model.config.tie_word_embeddings = model.config.text_config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(folder)
    return folder


def test_only_the_projector_trains_and_a_tied_checkpoint_resumes(tied_teacher, tmp_path):
    before = LlavaForConditionalGeneration.from_pretrained(tied_teacher).state_dict()
    assert before["lm_head.weight"].data_ptr() == before["model.language_model.embed_tokens.weight"].data_ptr()
    args = AlignArguments(teacher=str(tied_teacher), source="digits", max_train_images=40, max_eval_images=2)
    out = tmp_path / "aligned"
    trainer = run(args, training_args(out, max_steps=12, learning_rate=1e-2, save_strategy="steps", save_steps=6))
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert (out / "checkpoint-12" / "model.safetensors").is_file()  # the tie did not stop the checkpoint

    after = LlavaForConditionalGeneration.from_pretrained(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.multi_modal_projector.") for k in changed), sorted(changed)

    resumed = training_args(out, max_steps=14, save_strategy="no", resume_from_checkpoint=str(out / "checkpoint-12"))
    trainer = run(args, resumed)
    assert trainer.state.global_step == 14
    projector = trainer.model.student.model.multi_modal_projector.state_dict()
    assert all(not torch.equal(v, after[f"model.multi_modal_projector.{k}"]) for k, v in projector.items())


def test_bad_arguments_are_one_message(capsys):
    assert main(["--teacher", "x", "--max_train_images", "0", "--output_dir", "o"]) == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_lora_alignment_trains_projector_and_lm_adapters_and_saves_them_merged(tied_teacher, tmp_path):
    before = LlavaForConditionalGeneration.from_pretrained(tied_teacher).state_dict()
    args = AlignArguments(teacher=str(tied_teacher), source="digits", max_train_images=40, max_eval_images=2,
                          lora_r=2, lora_alpha=4, class_repeats=2)  # fmt: skip
    out = tmp_path / "aligned"
    trainer = run(args, training_args(out, max_steps=4, learning_rate=1e-2))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_A." in n or ".lora_B." in n}
    assert adapters and all("language_model" in n for n in adapters)
    assert trainable - adapters == {n for n in trainable if "multi_modal_projector" in n} != set()
    assert len(trainer.train_dataset) == 40 * 5  # the class question twice per image

    saved = LlavaForConditionalGeneration.from_pretrained(out).state_dict()
    assert set(saved) == set(before)  # merged: no adapter or base_layer keys left
    changed = {k for k in before if not torch.equal(before[k], saved[k])}
    lm = {k for k in changed if not k.startswith("model.multi_modal_projector.")}
    assert lm and all(k.startswith("model.language_model.layers.") and k.endswith("_proj.weight") for k in lm)
    assert any(k.startswith("model.multi_modal_projector.") for k in changed)
    assert not any("vision_tower" in k or "embed_tokens" in k for k in changed)


def test_bad_lora_rank_is_refused():
    with pytest.raises(ValueError, match="--lora_r at least 0"):
        AlignArguments(teacher="x", lora_r=-1)
