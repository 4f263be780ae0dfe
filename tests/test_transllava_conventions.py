"""TransLlavaMamba follows transformers 5's LLaVA where users and trainers meet it: loss keyword arguments
(shift_labels), get_image_features' output type, a list for output_hidden_states, set_attn_implementation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_transllava import IMAGE_TOKENS, prompt, tiny_model
from transformers.modeling_outputs import BaseModelOutputWithPooling


@pytest.fixture
def model():
    return tiny_model()


def test_shift_labels_reach_the_loss(model):
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    labels = torch.randint(0, 60, ids.shape)
    shifted = torch.full_like(labels, -100)
    shifted[:, :-2] = labels[:, 1:-1]  # already shifted (context parallel), and the last position left out
    out = model(input_ids=ids, pixel_values=pixels, labels=labels, shift_labels=shifted)
    expected = F.cross_entropy(out.logits[0].float(), shifted[0], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    plain = model(input_ids=ids, pixel_values=pixels, labels=labels).loss
    assert not torch.allclose(plain, out.loss)  # the kwarg changed the loss: it was not ignored


def test_get_image_features_returns_the_llava_output(model):
    pixels = torch.randn(2, 3, 16, 16)
    out = model.get_image_features(pixels)
    assert isinstance(out, BaseModelOutputWithPooling)
    features = out.pooler_output
    assert isinstance(features, list) and len(features) == 2
    assert features[0].shape == (IMAGE_TOKENS, model.config.text_config.hidden_size)
    with torch.no_grad():
        forward = model(input_ids=torch.cat([prompt()] * 2), pixel_values=pixels).image_hidden_states
    torch.testing.assert_close(torch.stack(features), forward)
    as_tuple = model.get_image_features(pixels, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.last_hidden_state)
    last_layer = model.get_image_features(pixels, vision_feature_layer=-1).pooler_output
    assert not torch.allclose(torch.stack(last_layer), torch.stack(features))  # the override is used


def test_a_list_of_hidden_states_captures_only_those(model):
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels, output_hidden_states=True).hidden_states
        some = model(input_ids=ids, pixel_values=pixels, output_hidden_states=[0, -1]).hidden_states
    assert len(full) == len(some) == model.config.text_config.num_hidden_layers + 1
    assert [h is None for h in some] == [False, True, True, False]
    assert torch.equal(some[0], full[0]) and torch.equal(some[-1], full[-1])


def test_set_attn_implementation_on_the_composite_model(model):
    ids, pixels = prompt(), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = model(input_ids=ids, pixel_values=pixels).logits
    model.set_attn_implementation({"": "sdpa"})
    assert model.config.vision_config._attn_implementation == "sdpa"
    model.set_attn_implementation({"vision_config": "eager"})
    assert model.config.vision_config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits, before, rtol=1e-5, atol=1e-5)
