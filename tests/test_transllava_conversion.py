"""Subcloning a tiny random LLaVA teacher (CLIP vision + LLaMA text, saved to a folder, loaded by path)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MambaConfig,
    MambaForCausalLM,
)
from transmamba.conversion.llava import subclone_llava

IMAGE_TOKEN = 63


def tiny_llava(**text) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=8
    )
    text_config = LlamaConfig(
        **{
            "vocab_size": 64,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            **text,
        }
    )
    config = LlavaConfig(vision_config=vision, text_config=text_config, image_token_id=IMAGE_TOKEN, image_seq_length=4)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # off the init, so a tensor left at its init cannot pass for a copied one
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("llava")
    tiny_llava().save_pretrained(folder)
    return folder


def inputs():
    ids = torch.tensor([[1, 5, *[IMAGE_TOKEN] * 4, 7, 8, 9]])
    return dict(input_ids=ids, pixel_values=torch.randn(1, 3, 16, 16))


def test_every_copied_tensor_is_in_place(teacher_dir):
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir)
    student, report = subclone_llava(teacher_dir, num_layers=2, cross_mamba_layers=[1])
    t, s = teacher.state_dict(), student.state_dict()
    shared = [k for k in s if k in t]
    assert {k for k in t if k not in s} == {
        f"model.language_model.layers.{i}.self_attn.{p}_proj.weight" for i in range(3) for p in "qkvo"
    } | {k for k in t if ".layers.2." in k and "language_model" in k}
    for key in shared:
        assert torch.equal(s[key], t[key]), key
    assert any(k.startswith("model.vision_tower.") for k in shared) and "lm_head.weight" in shared
    for i in range(2):
        out_proj = s[f"model.language_model.layers.{i}.mixer.out_proj.weight"]  # mixer width 32, attention 16
        o_proj = t[f"model.language_model.layers.{i}.self_attn.o_proj.weight"]
        assert torch.equal(out_proj[:, :16], o_proj) and not out_proj[:, 16:].any()
        conv = s[f"model.language_model.layers.{i}.mixer.conv1d.weight"]
        assert 0.6 < conv.std() < 1.5  # N(0, 1), as the paper initialises it
        a_log = s[f"model.language_model.layers.{i}.mixer.A_log"]
        assert torch.equal(a_log[0], torch.log(torch.arange(1.0, 17)))  # standard Mamba (S4D-real) init
    assert report["layers_taken"] == "first 2" and report["conv_init"].startswith("N(0, 1)")
    status = {name: entry["status"] for name, entry in report["tensors"].items()}
    assert status.keys() == dict(student.named_parameters()).keys()
    taken = {k for k, v in status.items() if v == "copied"}
    out_projs = {f"model.language_model.layers.{i}.mixer.out_proj.weight" for i in range(2)}
    assert taken == ({k for k in shared if k in status} | out_projs)  # what train-vlm trains at the lower rate


def test_with_attention_and_mixer_silenced_student_equals_truncated_teacher(teacher_dir):
    """Zero o_proj in the teacher and out_proj in the student: both become the same MLP-only network."""
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir).eval()
    student, _ = subclone_llava(teacher_dir, num_layers=2)
    teacher.model.language_model.layers = teacher.model.language_model.layers[:2]
    teacher.config.text_config.num_hidden_layers = 2
    with torch.no_grad():
        for layer in teacher.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
        for layer in student.model.language_model.layers:
            layer.mixer.out_proj.weight.zero_()
        batch = inputs()
        expected = teacher(**batch, output_hidden_states=True)
        actual = student(**batch, output_hidden_states=True)
    assert rel_err(actual.logits, expected.logits) < 1e-5
    assert len(actual.hidden_states) == len(expected.hidden_states)
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        assert rel_err(a, e) < 1e-5


def test_converted_folder_loads_and_generates(teacher_dir, tmp_path):
    student, _ = subclone_llava(teacher_dir, num_layers=2, output_dir=tmp_path / "student")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "student").eval()
    batch = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, student(**batch).logits)
    out = loaded.generate(**batch, attention_mask=torch.ones_like(batch["input_ids"]), max_new_tokens=3)
    assert out.shape == (1, 12)


def test_bad_teachers_and_depths_are_refused_before_loading(teacher_dir, tmp_path):
    with pytest.raises(ValueError, match="first n layers, so choose 1..3"):
        subclone_llava(teacher_dir, num_layers=5)
    LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "llama"
    )
    with pytest.raises(ValueError, match="not LLaVA-shaped"):
        subclone_llava(tmp_path / "llama")
    with pytest.raises(ValueError, match="conv_init"):
        subclone_llava(teacher_dir, conv_init="zeros")


def answer_kd_loss(student_logits, teacher_logits, labels, temperature: float = 2.0) -> torch.Tensor:
    """Logits KD on answer tokens only: KL(teacher || student) at the positions that predict a label != -100."""
    scored = labels[:, 1:] != -100
    s = student_logits[:, :-1][scored] / temperature
    t = teacher_logits[:, :-1][scored] / temperature
    return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean") * temperature**2


def test_short_logits_distillation_on_answer_tokens_lowers_the_loss(teacher_dir):
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir).eval()
    student, _ = subclone_llava(teacher_dir, num_layers=2, cross_mamba_layers=[1])
    student.train().model.vision_tower.requires_grad_(False)
    prompts = torch.randint(0, IMAGE_TOKEN, (4, 9))
    prompts[:, 2:6] = IMAGE_TOKEN  # "USER: <image> question ASSISTANT: answer"
    labels = prompts.clone()
    labels[:, :7] = -100
    batch = dict(input_ids=prompts, pixel_values=torch.randn(4, 3, 16, 16))
    with torch.no_grad():
        target = teacher(**batch).logits
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = answer_kd_loss(student(**batch).logits, target, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_attention_informed_init_maps_q_k_v_onto_c_b_x(teacher_dir):
    """Beyond the paper: with an identity conv, x = W_V h gives B = W_K[:N] h and C = W_Q[:N] h on W_V's rows."""
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir)
    student, report = subclone_llava(teacher_dir, num_layers=1, state_size=4, mixer_init="attention")
    attention = teacher.model.language_model.layers[0].self_attn
    mixer = student.model.language_model.layers[0].mixer
    value = attention.v_proj.weight.repeat(2, 1)  # 1 KV head shared by 2 query heads -> (16, 16)
    key = attention.k_proj.weight.repeat(2, 1)
    assert torch.equal(mixer.in_proj.weight[:16], value)
    assert torch.equal(mixer.conv1d.weight[..., -1], torch.ones(32, 1)) and not mixer.conv1d.weight[..., :-1].any()
    h = value.T @ torch.randn(16)  # a hidden state in W_V's row space
    rank = mixer.rank
    b_rows, c_rows = mixer.x_proj.weight[rank : rank + 4, :16], mixer.x_proj.weight[rank + 4 :, :16]
    assert rel_err(b_rows @ (value @ h), key[:4] @ h) < 1e-4
    assert rel_err(c_rows @ (value @ h), attention.q_proj.weight[:4] @ h) < 1e-4
    assert "attention-informed" in report["ssm_init"] and report["conv_init"].startswith("identity")
    with pytest.raises(ValueError, match="exceeds the teacher's key width 16"):
        subclone_llava(teacher_dir, state_size=32, mixer_init="attention")


def test_ssm_from_a_mamba_checkpoint_copies_x_dt_a_d(teacher_dir, tmp_path):
    """The paper's Trans-LLaVA init: SSM parameters from a pretrained Mamba of the same mixer shape."""
    mamba = MambaForCausalLM(MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3, state_size=4))
    with torch.no_grad():
        for param in mamba.parameters():
            param.add_(0.2 * torch.randn_like(param))
    mamba.save_pretrained(tmp_path / "mamba")
    student, report = subclone_llava(teacher_dir, num_layers=2, state_size=4, ssm_from=tmp_path / "mamba")
    for ours, theirs in zip(student.model.language_model.layers, mamba.backbone.layers[:2], strict=True):
        for name in ("x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"):
            assert torch.equal(ours.mixer.get_parameter(name), theirs.mixer.get_parameter(name)), name
    assert "from the Mamba checkpoint" in report["ssm_init"]
    with pytest.raises(ValueError, match=r"does not fit the student's \(32, 16, 1\)"):
        subclone_llava(teacher_dir, ssm_from=tmp_path / "mamba")  # state 16 vs the checkpoint's 4
