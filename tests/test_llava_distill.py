"""Distilling a TransLlavaMamba from a tiny random LLaVA teacher (CLIP + LLaMA, with a real tokenizer and processor
saved to a folder) on the offline image-text conversations: data, label masks, the loss, a short run, the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    TrainingArguments,
)
from transmamba.conversion.llava import subclone_llava
from transmamba.trainers.args import DistillationArguments, VlmDistillationArguments
from transmamba.trainers.llava_distill import AnswerDistillation, answer_kd_loss, answer_positions, matched_layers
from transmamba.trainers.train import train as train_image
from transmamba.trainers.train_vlm import train_vlm

from transmamba import cli
from transmamba.image_text import (
    LlavaCollator,
    LlavaConversationEncoder,
    conversation_turns,
    load_image_text_dataset,
    offline_image_text,
)

IMAGE_TOKENS = 4  # (16 / 8) ** 2 CLIP patches; the class token is dropped ("default" strategy)
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]


@pytest.fixture(autouse=True)
def _sequential_scan(monkeypatch):
    monkeypatch.setenv("TRANSMAMBA_SCAN_BACKEND", "sequential")  # exact and JIT-free for tiny tests


@pytest.fixture(scope="module")
def data() -> DatasetDict:
    return offline_image_text("digits", max_samples=64)


def tiny_processor(texts: list[str]) -> LlavaProcessor:
    """A word-level tokenizer trained in memory on the conversations, and CLIP's image processor at 16 px."""
    word_level = Tokenizer(models.WordLevel(unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.train_from_iterator(texts + ["USER: ASSISTANT:"], trainers.WordLevelTrainer(special_tokens=SPECIAL))
    word_level.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    return LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def save_teacher(folder, data: DatasetDict, layers: int = 3) -> str:
    texts = [turn["value"] for row in data["train"]["conversations"] for turn in row]
    processor = tiny_processor(texts)
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=8
    )
    text = LlamaConfig(
        vocab_size=len(processor.tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=processor.tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=IMAGE_TOKENS,
    )
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # a teacher with opinions: off the near-zero init
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, data):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("llava")
    teacher = save_teacher(folder / "teacher", data)
    subclone_llava(teacher, num_layers=2, state_size=4, cross_mamba_layers=[1], output_dir=folder / "student")
    return teacher, str(folder / "student")


def training_args(folder, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(folder),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        eval_strategy="no",
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    return TrainingArguments(**{**values, **overrides})


def test_offline_dataset_is_llava_conversations_with_seeded_templates(data):
    assert set(data) == {"train", "test"} and {"image", "conversations", "label"} <= set(data["train"].column_names)
    row = data["train"][0]
    (user, question), (assistant, answer) = conversation_turns(row["conversations"])
    assert (user, assistant) == ("user", "assistant") and question.startswith("<image>\n")
    assert str(row["label"]) in answer and isinstance(row["image"], Image.Image)
    again = offline_image_text("digits", max_samples=64)
    assert again["train"]["conversations"] == data["train"]["conversations"]  # seeded
    questions = {conv[0]["value"] for conv in data["train"]["conversations"]}
    assert len(questions) == 3  # every template used
    default = load_image_text_dataset("default", max_samples=4)  # Fashion-MNIST when the Debian package is here
    assert len(default["train"]) == 4 and default["train"][0]["conversations"][1]["value"].endswith(".")


def test_chat_messages_format_is_read_too():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A bag."}]},
    ]
    assert conversation_turns(messages) == [("user", "<image>\nWhat is it?"), ("assistant", "A bag.")]
    with pytest.raises(ValueError, match="no assistant"):
        conversation_turns(messages[:2])


def test_encoding_expands_the_image_and_labels_only_the_answers(pair, data):
    teacher_dir, _ = pair
    processor = AutoProcessor.from_pretrained(teacher_dir)
    encoder = LlavaConversationEncoder(processor)
    row = data["train"][0]
    encoded = encoder.encode(row["image"], row["conversations"])
    ids, labels = encoded["input_ids"], encoded["labels"]
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert ids.count(image_token) == IMAGE_TOKENS and ids[0] == processor.tokenizer.bos_token_id
    answer = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert [label for label in labels if label != -100] == answer == ids[-len(answer) :]
    answer_text = row["conversations"][1]["value"]
    assert processor.tokenizer.decode(answer) == processor.tokenizer.decode(
        processor.tokenizer(f"{answer_text}</s>", add_special_tokens=False)["input_ids"]
    )
    # A second round: its question is masked, its answer is learned.
    two_rounds = row["conversations"] + [{"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]
    longer = encoder.encode(row["image"], two_rounds)
    second = processor.tokenizer(" Yes.</s>", add_special_tokens=False)["input_ids"]
    assert [label for label in longer["labels"] if label != -100] == answer + second
    assert longer["input_ids"][: len(ids)] == ids and len(longer["input_ids"]) > len(ids) + len(second)
    batch = LlavaCollator(processor.tokenizer.pad_token_id)([encoded, longer])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].sum() == len(ids) and (batch["labels"][0, len(ids) :] == -100).all()
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir).eval()
    with torch.no_grad():  # the teacher accepts it: one placeholder per image feature
        features = teacher.model.get_image_features(batch["pixel_values"])
        features = features.pooler_output if hasattr(features, "pooler_output") else features
        teacher(**{k: v for k, v in batch.items() if k != "labels"})
    count = sum(f.shape[0] for f in features) if isinstance(features, (list, tuple)) else features.shape[:2].numel()
    assert count == 2 * IMAGE_TOKENS


def test_answer_kd_equals_the_hand_computed_kl():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [1.0, -1.0, 0.0]])
    T = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        p = [math.exp(v / T) / zt for v in t_row]
        q = [math.exp(v / T) / zs for v in s_row]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = expected / 2 * T**2
    assert answer_kd_loss(student, teacher, T).item() == pytest.approx(expected, rel=1e-6)
    assert answer_kd_loss(teacher, teacher, T).item() == pytest.approx(0.0, abs=1e-7)
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, -100, -100]])
    scored, targets = answer_positions(labels)
    assert scored.tolist() == [[False, True, True, False], [True, False, False, False]]
    assert targets.tolist() == [5, 6, 7]


def test_matched_layers_and_calibration():
    assert matched_layers(2, 4) == [2, 4] and matched_layers(3, 3) == [1, 2, 3] and matched_layers(1, 5) == [5]
    # A first-n-layers subclone meets the layers it took its weights from, and the teacher's last at the end.
    assert matched_layers(3, 18, "inherited") == [1, 2, 18] and matched_layers(3, 18) == [6, 12, 18]
    assert matched_layers(3, 3, "inherited") == [1, 2, 3] and matched_layers(1, 5, "inherited") == [5]
    assert AnswerDistillation(2, 6, 8, 8, feature_layers="inherited").layers == [1, 6]
    with pytest.raises(ValueError, match="spread, inherited"):
        AnswerDistillation(2, 6, 8, 8, feature_layers="top")
    loss = AnswerDistillation(2, 4, student_dim=8, teacher_dim=12)
    assert all(isinstance(c, torch.nn.Linear) for c in loss.calibration)  # widths differ: trainable map
    student_hidden = tuple(torch.randn(2, 5, 8) for _ in range(3))
    teacher_hidden = torch.randn(2, 2, 5, 12)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    per_layer = loss.feature_loss(student_hidden, teacher_hidden, mask)
    padded = teacher_hidden.clone()
    padded[:, 1, 3:] = 100.0  # padding never counts
    assert torch.allclose(per_layer, loss.feature_loss(student_hidden, padded, mask))
    mapped = loss.calibration[0](student_hidden[1])
    expected = 1 - F.cosine_similarity(mapped, teacher_hidden[0], dim=-1)[mask].mean()
    assert per_layer[0].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="deeper than its teacher"):
        AnswerDistillation(3, 2, 8, 8)


def test_short_distillation_lowers_the_loss_and_exports_the_student(pair, data, tmp_path):
    teacher_dir, student_dir = pair
    # One rate for every tensor: this checks the loss's gradients; the rate split has its own test below.
    args = VlmDistillationArguments(teacher=teacher_dir, student=student_dir, alpha=0.2, inherited_lr_scale=1.0)
    trainer = train_vlm(args, training_args(tmp_path / "out", max_steps=16), data).trainer
    rows = [row for row in trainer.state.log_history if "loss" in row]
    assert len(rows) == 16 and {"kd_loss", "feature_loss", "task_loss"} <= set(rows[0])
    first, last = (sum(r["loss"] for r in part) / 4 for part in (rows[:4], rows[-4:]))
    assert last < 0.8 * first, [r["loss"] for r in rows]
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.parameters())
    vision = trainer.model.student.model.vision_tower
    assert all(not p.requires_grad for p in vision.parameters())  # frozen, as LLaVA does
    assert "eval_loss" in trainer.state.log_history[-1]
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", trust_remote_code=True)
    assert type(loaded).__name__ == "TransLlavaMambaForConditionalGeneration"
    trained = trainer.model.student.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in loaded.state_dict().items())
    assert (tmp_path / "out" / "processor_config.json").is_file()
    assert (tmp_path / "out" / "modeling_transllava.py").is_file()  # remote code travels with the weights
    assert "pipeline_tag: image-text-to-text" in (tmp_path / "out" / "README.md").read_text()


def test_ce_only_runs_without_the_teacher_and_frozen_embeddings_stay_put(pair, data, tmp_path):
    teacher_dir, student_dir = pair
    args = VlmDistillationArguments(teacher=teacher_dir, student=student_dir, alpha=1.0, freeze_embeddings=True)
    trainer = train_vlm(args, training_args(tmp_path / "out", max_steps=3), data).trainer
    assert trainer.teacher is None and not trainer.model.needs_teacher  # no teacher forward at alpha 1
    assert {"task_loss"} == {k for k in trainer.state.log_history[0] if k.endswith("_loss")}
    initial = type(trainer.model.student).from_pretrained(student_dir).state_dict()
    trained = trainer.model.student.state_dict()
    key = "model.language_model.embed_tokens.weight"
    assert torch.equal(trained[key], initial[key])
    assert not torch.equal(trained["model.multi_modal_projector.linear_1.weight"],
                           initial["model.multi_modal_projector.linear_1.weight"])  # fmt: skip


def test_subcloned_tensors_train_at_the_inherited_rate(pair, data, tmp_path):
    teacher_dir, student_dir = pair
    args = VlmDistillationArguments(teacher=teacher_dir, student=student_dir, inherited_lr_scale=0.25)
    trainer = train_vlm(args, training_args(tmp_path / "out", max_steps=1), data).trainer
    names = {id(p): n.removeprefix("student.") for n, p in trainer.model.named_parameters()}
    rate = {names[id(p)]: group["lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    layer = "model.language_model.layers.0."
    for taken in ("mlp.down_proj.weight", "mixer.out_proj.weight", "input_layernorm.weight"):
        assert rate[layer + taken] == pytest.approx(0.25 * 3e-3), taken
    for new in ("mixer.A_log", "mixer.x_proj.weight", "mixer.in_proj.weight"):
        assert rate[layer + new] == pytest.approx(3e-3), new
    assert rate["model.multi_modal_projector.linear_1.weight"] == pytest.approx(0.25 * 3e-3)
    assert not any("vision_tower" in name for name in rate)  # frozen: in no parameter group


def test_accumulating_2_batches_of_2_equals_one_batch_of_4(pair, data, tmp_path):
    """Rows of one template (equal lengths, so every micro-batch has as many tokens as the next)."""
    teacher_dir, student_dir = pair
    question = data["train"][0]["conversations"][0]["value"]
    same = data["train"].filter(lambda row: row["conversations"][0]["value"] == question).select(range(4))
    subset = DatasetDict({"train": same, "test": same})
    args = VlmDistillationArguments(teacher=teacher_dir, student=student_dir)
    common = dict(max_steps=1, optim="sgd", learning_rate=0.5)
    whole = train_vlm(args, training_args(tmp_path / "a", per_device_train_batch_size=4, **common), subset).trainer
    split = train_vlm(
        args, training_args(tmp_path / "b", per_device_train_batch_size=2, gradient_accumulation_steps=2, **common),
        subset,
    ).trainer  # fmt: skip
    one, two = whole.model.student.state_dict(), split.model.student.state_dict()
    initial = type(whole.model.student).from_pretrained(student_dir).state_dict()
    moved = max((one[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3
    assert max((one[k] - two[k]).abs().max().item() for k in initial) < 1e-5 * max(1.0, moved)


def test_bad_input_fails_before_training(pair, data, tmp_path):
    teacher_dir, student_dir = pair
    training = training_args(tmp_path / "out", max_steps=1)
    no_conversations = DatasetDict({"train": Dataset.from_dict({"image": [None], "caption": ["x"]})})
    with pytest.raises(ValueError, match=r"missing column\(s\) conversations or messages"):
        train_vlm(VlmDistillationArguments(teacher=teacher_dir, student=student_dir), training, no_conversations)
    renamed = data.rename_column("image", "picture")
    with pytest.raises(ValueError, match=r"missing column\(s\) image \("):
        train_vlm(VlmDistillationArguments(teacher=teacher_dir, student=student_dir), training, renamed)
    with pytest.raises(ValueError, match="not a TransLlavaMamba"):
        train_vlm(VlmDistillationArguments(teacher=teacher_dir, student=teacher_dir), training, data)
    with pytest.raises(ValueError, match="use `transmamba train-vlm`"):
        train_image(DistillationArguments(teacher=teacher_dir, student=student_dir), training)
    with pytest.raises(ValueError, match="Cannot load image-text dataset"):
        load_image_text_dataset(str(tmp_path / "nowhere"))
    assert not (tmp_path / "out").exists()


def test_cli_help_and_a_run_from_a_saved_dataset(pair, data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train-vlm", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--teacher", "--student", "--dataset", "--alpha", "--temperature", "--feature_weight"):
        assert option in text
    assert "train-vlm" in cli._usage()
    teacher_dir, student_dir = pair
    data.save_to_disk(tmp_path / "vqa")
    argv = ["--teacher", teacher_dir, "--student", student_dir, "--dataset", str(tmp_path / "vqa")]
    argv += ["--use_cpu", "--max_steps", "2", "--max_eval_samples", "4", "--output_dir", str(tmp_path / "out")]
    assert cli.main(["train-vlm", *argv, "--report_to", "none", "--disable_tqdm", "true"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
