"""Gemma-3 text teachers inside a LLaVA (tiny, random, saved to a folder): every copied tensor lands in place and
means the same thing (scaled embeddings, (1 + w) RMSNorm, sandwich norms, gelu-tanh MLP, head_dim != hidden /
heads, tied head); narrower language models keep the strongest residual channels; bad input fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import rel_err
from PIL import Image
from test_transllava_conversion import tiny_llava
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPVisionConfig,
    Dinov2Config,
    Dinov2Model,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    PreTrainedTokenizerFast,
)
from transmamba.conversion.compose_gemma_llava import compose
from transmamba.conversion.llava import parse_student, residual_importance, subclone_llava
from transmamba.modeling_transmamba import TransLlavaMambaForConditionalGeneration

IMAGE_TOKEN = 63
HIDDEN, HEADS, HEAD_DIM = 16, 2, 12  # o_proj input width 24: not the hidden size, not the default mixer width 32
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16)


def gemma_text(**overrides) -> Gemma3TextConfig:
    fields = dict(
        vocab_size=64,
        hidden_size=HIDDEN,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=HEADS,
        num_key_value_heads=1,
        head_dim=HEAD_DIM,
        query_pre_attn_scalar=HEAD_DIM,
        sliding_window=4,
    )
    return Gemma3TextConfig(**{**fields, **overrides})


def tiny_gemma_llava(**text) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(**VISION, patch_size=8)
    config = LlavaConfig(vision_config=vision, text_config=gemma_text(**text), image_token_id=IMAGE_TOKEN)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # off the init (Gemma's norm weights start at 0), so nothing passes by being at its init
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp("gemma_llava")
    tiny_gemma_llava().save_pretrained(folder)
    return folder


def batch(images: int = 1) -> dict:
    ids = torch.tensor([[2, 5, *[IMAGE_TOKEN] * 4, 7, 8, 9]] * images)
    return dict(input_ids=ids, pixel_values=torch.randn(images, 3, 16, 16))


class SameMap(torch.nn.Module):
    """Stands in for both the teacher's attention and the student's mixer: one token-wise linear map."""

    def __init__(self, linear: torch.nn.Linear, returns_tuple: bool):
        super().__init__()
        self.linear, self.returns_tuple = linear, returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        out = self.linear(hidden_states)
        return (out, None) if self.returns_tuple else out


def share_mixing(teacher: LlavaForConditionalGeneration, student: TransLlavaMambaForConditionalGeneration, depth: int):
    """Truncate the teacher to ``depth`` layers and put the same map in place of attention and mixer, so the rest
    (embeddings, every norm, MLPs, head) must agree exactly."""
    teacher.model.language_model.layers = teacher.model.language_model.layers[:depth]
    teacher.config.text_config.num_hidden_layers = depth
    teacher.config.text_config.layer_types = teacher.config.text_config.layer_types[:depth]
    for t_layer, s_layer in zip(teacher.model.language_model.layers, student.model.language_model.layers, strict=True):
        linear = torch.nn.Linear(HIDDEN, HIDDEN)
        t_layer.self_attn = SameMap(linear, returns_tuple=True)
        s_layer.mixer = SameMap(linear, returns_tuple=False)


def test_every_copied_tensor_is_in_place(teacher_dir):
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir)
    student, report = subclone_llava(teacher_dir, num_layers=2, cross_mamba_layers=[1])
    t, s = teacher.state_dict(), student.state_dict()
    attention = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_norm.weight", "k_norm.weight"}
    prefix = "model.language_model.layers"
    assert {k for k in t if k not in s} == {f"{prefix}.{i}.self_attn.{n}" for i in range(3) for n in attention} | {
        k for k in t if k.startswith(f"{prefix}.2.")
    }
    for key in (k for k in s if k in t):
        assert torch.equal(s[key], t[key]), key
    for norm in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
        assert f"{prefix}.1.{norm}_layernorm.weight" in s
    assert student.lm_head.weight is student.model.language_model.embed_tokens.weight  # tied, as Gemma's
    for i in range(2):
        out_proj = s[f"{prefix}.{i}.mixer.out_proj.weight"]  # mixer width 32, o_proj input 2 heads * 12 = 24
        assert torch.equal(out_proj[:, :24], t[f"{prefix}.{i}.self_attn.o_proj.weight"]) and not out_proj[:, 24:].any()
    assert report["out_proj_from_o_proj"] == "o_proj input width 24 -> mixer width 32 (rest zero)"
    assert report["text_semantics"] == {
        "hidden_act": "gelu_pytorch_tanh",
        "norm_offset": 1.0,
        "embedding_scale": HIDDEN**0.5,
        "sandwich_norms": True,
        "final_logit_softcapping": None,
    }
    assert report["teacher_text_model"] == "gemma3_text" and report["ssm_init"].startswith("standard Mamba")


def test_with_attention_and_mixer_alike_student_equals_truncated_gemma_teacher(teacher_dir):
    """Proves the copied tensors mean the same: scaled embeddings, (1 + w) norms, sandwich norms, gelu-tanh MLP."""
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir).eval()
    student, _ = subclone_llava(teacher_dir, num_layers=2)
    share_mixing(teacher, student, 2)
    inputs = batch()
    with torch.no_grad():
        expected = teacher(**inputs, output_hidden_states=True)
        actual = student(**inputs, output_hidden_states=True)
    assert rel_err(actual.logits, expected.logits) < 1e-5
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        assert rel_err(a, e) < 1e-5
    with torch.no_grad():  # and each option matters: without the embedding scale the outputs differ
        student.model.language_model.embed_tokens.scale = 1.0
        assert rel_err(student(**inputs).logits, expected.logits) > 1e-2


def test_mixer_as_wide_as_the_attention_takes_o_proj_one_to_one(teacher_dir):
    teacher = LlavaForConditionalGeneration.from_pretrained(teacher_dir)
    student, report = subclone_llava(teacher_dir, num_layers=1, mixer_size="attention", state_size=4)
    mixer = student.model.language_model.layers[0].mixer
    assert mixer.inner == HEADS * HEAD_DIM and mixer.in_proj.out_features == 2 * HEADS * HEAD_DIM
    assert torch.equal(mixer.out_proj.weight, teacher.model.language_model.layers[0].self_attn.o_proj.weight)
    assert report["out_proj_from_o_proj"] == "o_proj input width 24 -> mixer width 24 (equal)"
    narrow, report = subclone_llava(teacher_dir, num_layers=1, mixer_size=20, state_size=4)
    o_proj = teacher.model.language_model.layers[0].self_attn.o_proj.weight
    assert torch.equal(narrow.model.language_model.layers[0].mixer.out_proj.weight, o_proj[:, :20])
    assert report["out_proj_from_o_proj"] == "o_proj input width 24 -> mixer width 20 (cut)"
    attention, _ = subclone_llava(teacher_dir, num_layers=1, mixer_size="attention", mixer_init="attention")
    value = teacher.model.language_model.layers[0].self_attn.v_proj.weight.repeat(2, 1)  # 1 KV head, 2 query heads
    assert torch.equal(attention.model.language_model.layers[0].mixer.in_proj.weight[:24], value)


def test_converted_gemma_student_generates_with_cache_as_without(teacher_dir, tmp_path):
    student, _ = subclone_llava(teacher_dir, num_layers=2, cross_mamba_layers=[1], output_dir=tmp_path / "student")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "student").eval()
    assert loaded.config.text_config.sandwich_norms and loaded.config.text_config.norm_offset == 1.0
    inputs = batch()
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, student(**inputs).logits)
    generated = loaded.generate(**inputs, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    sequence = ids
    for _ in range(8):
        with torch.no_grad():
            logits = loaded(input_ids=sequence, pixel_values=pixels, use_cache=False).logits
        sequence = torch.cat([sequence, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, sequence)


def test_narrower_language_model_keeps_the_strongest_residual_channels(tmp_path):
    torch.manual_seed(3)
    teacher = tiny_gemma_llava()
    weak, strong = 5, 11
    lm = teacher.model.language_model
    with torch.no_grad():  # channel 5 carries nothing (gain 1 + w = 0, no weights), channel 11 carries a lot
        for name, param in lm.named_parameters():
            if "self_attn.q_norm" in name or "self_attn.k_norm" in name:
                continue
            if name.endswith("layernorm.weight") or name == "norm.weight":
                param[weak], param[strong] = -1.0, 5.0
            elif param.shape[-1] == HIDDEN and "o_proj" not in name and "down_proj" not in name:
                param[:, weak], param[:, strong] = 0.0, 5.0
            else:
                param[weak], param[strong] = 0.0, 5.0
        teacher.model.multi_modal_projector.linear_2.weight[weak] = 0.0
        teacher.model.multi_modal_projector.linear_2.bias[weak] = 0.0
    teacher.save_pretrained(tmp_path / "teacher")
    scores = residual_importance(teacher, 3, norm_offset=1.0)
    assert scores.argmin() == weak and scores.argmax() == strong
    student, report = subclone_llava(tmp_path / "teacher", hidden_size=12, num_layers=2)
    kept = torch.tensor(report["residual_channels"]["indices"])
    assert len(kept) == 12 and weak not in kept and strong in kept and torch.equal(kept, kept.sort().values)
    s, t = student.state_dict(), teacher.state_dict()
    prefix = "model.language_model"
    assert torch.equal(s[f"{prefix}.embed_tokens.weight"], t[f"{prefix}.embed_tokens.weight"][:, kept])
    assert torch.equal(s[f"{prefix}.norm.weight"], t[f"{prefix}.norm.weight"][kept])
    assert torch.equal(
        s[f"{prefix}.layers.1.mlp.gate_proj.weight"], t[f"{prefix}.layers.1.mlp.gate_proj.weight"][:, kept]
    )
    assert torch.equal(s[f"{prefix}.layers.1.mlp.down_proj.weight"], t[f"{prefix}.layers.1.mlp.down_proj.weight"][kept])
    o_proj = t[f"{prefix}.layers.0.self_attn.o_proj.weight"][kept]
    assert torch.equal(s[f"{prefix}.layers.0.mixer.out_proj.weight"][:, :24], o_proj)
    projector = "model.multi_modal_projector.linear_2.weight"
    assert torch.equal(s[projector], t[projector][kept][:, kept])
    assert student.config.text_config.embedding_scale == HIDDEN**0.5  # the teacher's scale, not sqrt(12)
    assert report["text_width"] == "12 of the teacher's 16"
    inputs = batch()
    out = student.generate(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]), max_new_tokens=3)
    assert out.shape == (1, 12)


def test_narrower_llama_teacher_slices_its_untied_head(tmp_path):
    torch.manual_seed(4)
    teacher = tiny_llava()
    teacher.save_pretrained(tmp_path / "llama")
    student, report = subclone_llava(tmp_path / "llama", hidden_size=12, num_layers=2)
    kept = torch.tensor(report["residual_channels"]["indices"])
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight[:, kept])
    assert student.lm_head.weight is not student.model.language_model.embed_tokens.weight
    assert student.config.text_config.norm_offset == 0.0 and not student.config.text_config.sandwich_norms
    assert student(**batch()).logits.shape == (1, 9, 64)


def test_bad_inputs_fail_with_one_clear_message(teacher_dir, tmp_path):
    for width in (17, 0):
        with pytest.raises(ValueError, match=r"Text width hidden_size=.* does not fit the teacher's 16.*1\.\.16"):
            subclone_llava(teacher_dir, hidden_size=width)
    llava_next = LlavaNextConfig(vision_config=CLIPVisionConfig(**VISION, patch_size=8), text_config=gemma_text())
    llava_next.save_pretrained(tmp_path / "llava_next")
    with pytest.raises(ValueError, match="'llava_next' vision-language model, not LLaVA-shaped"):
        subclone_llava(tmp_path / "llava_next")
    with pytest.raises(ValueError, match="Cannot read the Mamba checkpoint ssm_from="):
        subclone_llava(teacher_dir, ssm_from=tmp_path / "no-such-mamba")
    with pytest.raises(ValueError, match="mixer_size must be a positive integer or 'attention'"):
        subclone_llava(teacher_dir, mixer_size="wide")
    student, _ = subclone_llava(teacher_dir, num_layers=1)
    inputs = batch(images=2)
    inputs["input_ids"] = inputs["input_ids"][:1]  # 4 placeholders for 2 images of 4 features each
    with pytest.raises(ValueError, match="Image features and image tokens do not match.*4 image placeholder.*2 image"):
        student(**inputs)
    assert parse_student("transllava,num_hidden_layers=2,hidden_size=12,mixer_size=attention") == {
        "num_layers": 2,
        "hidden_size": 12,
        "mixer_size": "attention",
    }
    with pytest.raises(ValueError, match="key one of num_hidden_layers"):
        parse_student("transllava,heads=2")
    with pytest.raises(ValueError, match="converts into the 'transllava' student"):
        parse_student("pmamba-s")


def test_final_logit_softcapping_bounds_the_logits(teacher_dir):
    student, _ = subclone_llava(teacher_dir, num_layers=1)
    with torch.no_grad():
        plain = student(**(inputs := batch())).logits
        student.config.text_config.final_logit_softcapping = 0.5
        capped = student(**inputs).logits
    assert rel_err(capped, 0.5 * torch.tanh(plain / 0.5)) < 1e-6 and capped.abs().max() < 0.5


def test_fresh_gemma_shaped_student_starts_with_unit_norm_gains(teacher_dir):
    student, _ = subclone_llava(teacher_dir, num_layers=1)
    fresh = TransLlavaMambaForConditionalGeneration(student.config)
    norm = fresh.model.language_model.layers[0].pre_feedforward_layernorm
    assert norm.offset == 1.0 and not norm.weight.any()  # gain = offset + weight = 1


def test_compose_joins_a_vision_tower_and_a_gemma_lm_into_a_llava_teacher(tmp_path):
    """The offline recipe (DINOv2 + Gemma-3 270M) on tiny random parts: the composed LLaVA reproduces the language
    model exactly on text, carries the vision tower unchanged, and converts."""
    vision = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                                      patch_size=7, intermediate_size=32))  # fmt: skip
    vision.save_pretrained(tmp_path / "vision")
    language = Gemma3ForCausalLM(gemma_text()).eval()
    language.save_pretrained(tmp_path / "gemma")
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "The": 4, "capital": 5, "<unused0>": 6, "is": 7}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", extra_special_tokens={"image_token": "<unused0>"}
    )  # a special token splits from its neighbours, as Gemma's <unusedN> do
    tokenizer.save_pretrained(tmp_path / "gemma")
    summary = compose(tmp_path / "vision", tmp_path / "gemma", tmp_path / "llava", image_size=14)
    assert summary["text_only_logits_rel_err_vs_language_model"] == 0.0 and summary["image_tokens_per_image"] == 4
    assert (tmp_path / "llava" / "NOTICE").is_file()
    teacher = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    assert teacher.config.image_token_id == 6
    for key, value in vision.state_dict().items():
        assert torch.equal(teacher.model.vision_tower.state_dict()[key], value), key
    processor = AutoProcessor.from_pretrained(tmp_path / "llava")
    rendered = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                             "text": "Hi"}]}], add_generation_prompt=True)  # fmt: skip
    assert rendered == "<start_of_turn>user\n<image>\nHi<end_of_turn>\n<start_of_turn>model\n"  # Gemma's turns
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8))
    assert summary["image_token"] == "<image> = 6"  # spelt as LLaVA users type it, same id as <unused0>
    inputs = processor(images=image, text="The <image> is", return_tensors="pt")
    assert inputs["input_ids"].tolist() == [[4, 6, 6, 6, 6, 7]] and inputs["pixel_values"].shape[-1] == 14
    with torch.no_grad():
        assert teacher(**inputs).logits.shape == (1, 6, 64)
    student, report = subclone_llava(tmp_path / "llava", num_layers=1)
    assert report["teacher_text_model"] == "gemma3_text" and student(**inputs).logits.shape == (1, 6, 64)
    with pytest.raises(ValueError, match="already exists"):
        compose(tmp_path / "vision", tmp_path / "gemma", tmp_path / "llava")


def tiny_gemma3_vlm() -> Gemma3ForConditionalGeneration:
    """Gemma-3's own VLM class: SigLIP tower, 4x4 patches average-pooled to 4 image tokens, normed projector."""
    siglip = dict(model_type="siglip_vision_model", **VISION, patch_size=4)
    config = Gemma3Config(vision_config=siglip, text_config=gemma_text().to_dict(), mm_tokens_per_image=4,
                          image_token_index=IMAGE_TOKEN, boi_token_index=61, eoi_token_index=62)  # fmt: skip
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


def test_gemma3_vlm_teacher_keeps_its_pooled_projector_and_meaning(tmp_path):
    torch.manual_seed(5)
    tiny_gemma3_vlm().save_pretrained(tmp_path / "gemma3")
    teacher = Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "gemma3").eval()
    student, report = subclone_llava(tmp_path / "gemma3", num_layers=2, cross_mamba_layers=[1])
    assert student.config.projector_type == "gemma3" and student.config.image_seq_length == 4
    t, s = teacher.state_dict(), student.state_dict()
    assert {k for k in t if k.startswith("model.multi_modal_projector.")} <= set(s)
    assert not [k for k in t if k.startswith("model.vision_tower.") and k not in s]
    for key in (k for k in s if k in t):
        assert torch.equal(s[key], t[key]), key
    inputs = dict(
        input_ids=torch.tensor([[2, 5, 61, *[IMAGE_TOKEN] * 4, 62, 7, 8]]), pixel_values=torch.randn(1, 3, 16, 16)
    )
    with torch.no_grad():
        assert torch.equal(student.get_image_features(inputs["pixel_values"]).pooler_output,
                           teacher.model.get_image_features(inputs["pixel_values"]).pooler_output)  # fmt: skip
    mask = torch.ones_like(inputs["input_ids"])
    cached = student.generate(**inputs, attention_mask=mask, max_new_tokens=5, do_sample=False)
    uncached = student.generate(**inputs, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    share_mixing(teacher, student, 2)  # a token-wise map makes Gemma-3's bidirectional image mask irrelevant
    with torch.no_grad():
        assert rel_err(student(**inputs).logits, teacher(**inputs).logits) < 1e-5
    assert report["teacher_text_model"] == "gemma3_text" and report["teacher_class"] == "Gemma3ForConditionalGeneration"
