"""TransLlavaMamba: LLaVA-shaped inputs/outputs, recurrent-cache generation, Cross-Mamba causality, remote code."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err
from exported_code import auto_map_modules, code_closure, last_json, run_isolated
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    CLIPImageProcessorPil,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transmamba.modeling_transmamba import (
    TransLlavaMambaConfig,
    TransLlavaMambaForConditionalGeneration,
)
from transmamba.modeling_transmamba.mamba_lm import TransLlavaMambaCache

IMAGE_TOKEN = 63
IMAGE_TOKENS = 4  # (16 / 8) ** 2 patches, class token dropped ("default" strategy)
VISION = dict(
    model_type="clip_vision_model",
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=16,
    patch_size=8,
)


def tiny_config(cross_mamba_layers=(1,), **text) -> TransLlavaMambaConfig:
    text_config = dict(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        state_size=4,
        time_step_rank=3,
        cross_mamba_layers=list(cross_mamba_layers),
        scan_backend="sequential",
        eos_token_id=None,
        **text,
    )
    return TransLlavaMambaConfig(vision_config=dict(VISION), text_config=text_config, image_token_id=IMAGE_TOKEN)


def tiny_model(**kwargs) -> TransLlavaMambaForConditionalGeneration:
    model = TransLlavaMambaForConditionalGeneration(tiny_config(**kwargs)).eval()
    with torch.no_grad():  # move off the (tiny-std) init so every path matters in the outputs
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


def prompt(prefix=(1, 5), suffix=(7, 8, 9)) -> torch.Tensor:
    return torch.tensor([[*prefix, *[IMAGE_TOKEN] * IMAGE_TOKENS, *suffix]])


def greedy_without_cache(model, input_ids, pixel_values, steps: int) -> torch.Tensor:
    sequence = input_ids
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=sequence, pixel_values=pixel_values, use_cache=False).logits
        sequence = torch.cat([sequence, logits[:, -1:].argmax(-1)], dim=1)
    return sequence


def test_forward_is_llava_shaped_and_loss_is_shifted_ce():
    model = tiny_model()
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    labels = ids.clone()
    labels[:, :6] = -100  # prompt and image ignored, answer tokens scored
    out = model(input_ids=ids, pixel_values=pixels, labels=labels, output_hidden_states=True)
    assert out.logits.shape == (1, ids.shape[1], 64)
    assert out.image_hidden_states.shape == (1, IMAGE_TOKENS, 16)
    assert len(out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    expected = F.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert model.model.language_model.layers[1].mixer.cross_x_proj.weight.grad.abs().sum() > 0


def test_image_placeholder_count_mismatch_is_one_clear_error():
    model = tiny_model()
    ids = torch.tensor([[1, 5, IMAGE_TOKEN, IMAGE_TOKEN, 7]])  # 2 placeholders, the image gives 4 features
    with pytest.raises(ValueError, match="Image features and image tokens do not match.*2 image placeholder"):
        model(input_ids=ids, pixel_values=torch.randn(1, 3, 16, 16))


def test_cached_greedy_generate_equals_uncached_argmax():
    model = tiny_model()
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    generated = model.generate(
        input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False
    )
    assert torch.equal(generated, greedy_without_cache(model, ids, pixels, 10))


def test_beam_search_with_the_recurrent_cache_equals_beam_search_without():
    """Beam search reorders the cache (``reorder_cache``); it must pick what full recomputation picks."""
    model = tiny_model()
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    mask = torch.ones_like(ids)
    kwargs = dict(
        input_ids=ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=8, num_beams=4, num_return_sequences=4
    )
    assert torch.equal(model.generate(**kwargs), model.generate(**kwargs, use_cache=False))


@pytest.mark.parametrize("conv_kernel", [4, 1])
def test_recurrent_steps_match_the_full_sequence_logits(conv_kernel):
    """Feeding tokens one by one through the cache reproduces the parallel scan, Cross-Mamba included."""
    model = tiny_model(cross_mamba_layers=(0, 2), conv_kernel=conv_kernel)
    ids, pixels = prompt(suffix=(7, 8, 9, 10, 11, 12)), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels, use_cache=False).logits
        split = 8
        first = model(input_ids=ids[:, :split], pixel_values=pixels, use_cache=True)
        cache = first.cache
        steps = [model(input_ids=ids[:, t : t + 1], cache=cache).logits for t in range(split, ids.shape[1])]
    assert isinstance(cache, TransLlavaMambaCache) and cache.get_seq_length() == ids.shape[1]
    assert rel_err(torch.cat([first.logits, *steps], dim=1), full) < 1e-5
    state_bytes = cache.nbytes()
    with torch.no_grad():
        model(input_ids=ids[:, -1:], cache=cache)
    assert cache.nbytes() == state_bytes  # O(1) memory per new token


def test_left_padded_batch_generates_what_each_prompt_generates_alone():
    model = tiny_model()
    long, short = prompt(prefix=(1, 5, 6)), prompt()
    pixels = torch.randn(2, 3, 16, 16)
    batch = torch.stack([long[0], F.pad(short[0], (1, 0), value=0)])
    mask = torch.ones_like(batch)
    mask[1, 0] = 0
    generated = model.generate(input_ids=batch, pixel_values=pixels, attention_mask=mask, max_new_tokens=6)
    alone_long = greedy_without_cache(model, long, pixels[:1], 6)
    alone_short = greedy_without_cache(model, short, pixels[1:], 6)
    assert torch.equal(generated[0], alone_long[0])
    assert torch.equal(generated[1, 1:], alone_short[0])


def test_outputs_never_depend_on_future_tokens():
    """Causality, Cross-Mamba included: change everything after position t, logits up to t stay the same."""
    model = tiny_model(cross_mamba_layers=(0, 1, 2))
    ids, pixels = prompt(suffix=(7, 8, 9, 10, 11)), torch.randn(1, 3, 16, 16)
    cut = 8
    other = ids.clone()
    other[:, cut:] = torch.randint(0, IMAGE_TOKEN, (1, ids.shape[1] - cut))
    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=pixels).logits
        b = model(input_ids=other, pixel_values=pixels).logits
        c = model(input_ids=ids, pixel_values=torch.randn(1, 3, 16, 16)).logits
    assert torch.equal(a[:, :cut], b[:, :cut])
    assert not torch.allclose(a[:, cut:], b[:, cut:])
    assert torch.equal(a[:, :2], c[:, :2])  # text before the image cannot see it
    assert not torch.allclose(a[:, 2:], c[:, 2:])


def test_cross_mamba_is_switchable_per_layer_and_reads_only_image_tokens():
    plain = tiny_model(cross_mamba_layers=())
    crossed = TransLlavaMambaForConditionalGeneration(tiny_config(cross_mamba_layers=(1,))).eval()
    missing, unexpected = crossed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == [
        f"model.language_model.layers.1.mixer.{name}" for name in ("cross_A_log", "cross_dt_proj.bias")
    ] + [f"model.language_model.layers.1.mixer.{n}.weight" for n in ("cross_dt_proj", "cross_x_proj")]
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        a = plain(input_ids=ids, pixel_values=pixels).logits
        b = crossed(input_ids=ids, pixel_values=pixels).logits
    first_image = 2
    assert torch.equal(a[:, : first_image + IMAGE_TOKENS], b[:, : first_image + IMAGE_TOKENS])  # no cross term
    assert not torch.allclose(a[:, first_image + IMAGE_TOKENS :], b[:, first_image + IMAGE_TOKENS :])
    with torch.no_grad():  # without images there is nothing to read: the cross term vanishes
        assert torch.equal(plain(input_ids=ids).logits, crossed(input_ids=ids).logits)


def test_llava_processor_prompt_generates():
    """The usual LLaVA path: LlavaProcessor expands '<image>' to the feature count, generate() consumes it all."""
    vocab = {f"w{i}": i for i in range(6, IMAGE_TOKEN)}
    vocab.update({"<unk>": 0, "USER:": 1, "ASSISTANT:": 2, "What": 3, "is": 4, "this?": 5, "<image>": IMAGE_TOKEN})
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", extra_special_tokens={"image_token": "<image>"}
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8))
    inputs = processor(images=image, text="USER: <image> What is this? ASSISTANT:", return_tensors="pt")
    assert inputs["input_ids"].tolist() == [[1, *[IMAGE_TOKEN] * IMAGE_TOKENS, 3, 4, 5, 2]]
    model = tiny_model()
    generated = model.generate(**inputs, max_new_tokens=4)
    expected = greedy_without_cache(model, inputs["input_ids"], inputs["pixel_values"], 4)
    assert torch.equal(generated, expected)


# Runs in a fresh process without our package (exported_code.run_isolated): only the saved folder's code exists.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForImageTextToText
    model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    ids, pixels = torch.tensor(json.loads(sys.argv[2])), torch.load(sys.argv[3])
    out = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), max_new_tokens=6)
    print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__, "tokens": out.tolist()}))
    """
)


def test_exported_folder_generates_in_a_fresh_process_without_the_package(tmp_path):
    model = tiny_model()
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForImageTextToText"].endswith("TransLlavaMambaForConditionalGeneration")
    code = code_closure(*auto_map_modules(folder))
    assert {"mamba_lm.py", "selective_scan_numba_kernels.py"} <= code
    assert {p.name for p in folder.iterdir()} == code | {"config.json", "generation_config.json", "model.safetensors"}
    assert type(AutoConfig.from_pretrained(folder)) is TransLlavaMambaConfig
    assert type(AutoModelForImageTextToText.from_pretrained(folder)) is TransLlavaMambaForConditionalGeneration
    torch.save(pixels, tmp_path / "pixels.pt")
    args = [folder, json.dumps(ids.tolist()), tmp_path / "pixels.pt"]
    answer = last_json(run_isolated(REMOTE_SCRIPT, args, tmp_path))
    assert answer["class"].startswith("transformers_modules.")
    expected = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), max_new_tokens=6)
    assert answer["tokens"] == expected.tolist()
