"""TransMamba-switch: attention before each layer's TransPoint, the SSM from it on, losslessly joined."""

from __future__ import annotations

import pytest
import torch
from conftest import rel_err
from transformers import BertConfig, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM
from transmamba.conversion.switch_lm import check_causal_teacher, convert_lm
from transmamba.modeling_transmamba import TransMambaSwitchConfig, TransMambaSwitchForCausalLM
from transmamba.modeling_transmamba.switch_ssm import ssd_chunked, ssm_sequential

VOCAB, T = 61, 20


def tiny(transpoints, **overrides) -> TransMambaSwitchForCausalLM:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        transpoints=transpoints,
        ssm_chunk_size=8,
    )
    return TransMambaSwitchForCausalLM(TransMambaSwitchConfig(**{**fields, **overrides})).eval()


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=500.0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma() -> Gemma3ForCausalLM:
    config = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # Gemma's norms start at 0 (gain 1): give them values so copying them is tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return model


def _mixer_inputs(mixer, hidden):
    q, k, v = mixer.projections(hidden)
    return mixer.ssm_inputs(hidden, q, k, v)


def test_chunked_ssd_and_memory_converter_equal_the_sequential_recurrence():
    b, h, n, d = 2, 3, 29, 8
    q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
    delta = torch.rand(b, h, n)
    log_decay = -delta * torch.rand(h)[None, :, None] * 4
    state0 = torch.randn(b, h, d, d)
    expected, last = ssm_sequential(q, k, v, delta, log_decay, state0)
    y, state = ssd_chunked(q, k, v, delta, log_decay, state0, chunk_size=8)
    assert rel_err(y, expected) < 1e-5 and rel_err(state, last) < 1e-5


@pytest.mark.parametrize("teacher_factory", [tiny_llama, tiny_gemma], ids=["llama", "gemma3"])
def test_converted_model_with_transpoints_past_the_sequence_is_its_teacher(teacher_factory):
    teacher = teacher_factory()
    student, report = convert_lm(teacher, transpoints=T)
    ids = torch.randint(0, VOCAB, (2, T))
    with torch.no_grad():
        assert rel_err(student(ids).logits, teacher(ids).logits) < 1e-5
    assert report["layer_transpoints"] == [T] * teacher.config.num_hidden_layers
    assert "B and x of query heads" in report["gqa"]


def test_pure_ssm_equals_the_sequential_reference_recurrence():
    model = tiny(0, ssm_output_norm=False)
    mixer = model.model.layers[0].self_attn
    hidden = torch.randn(2, T, 32)
    with torch.no_grad():
        expected, _ = ssm_sequential(*_mixer_inputs(mixer, hidden))
        assert rel_err(mixer.mix(hidden), expected) < 1e-5


def test_switch_keeps_attention_before_p_and_the_whole_sequence_ssm_after():
    P = 7
    switch = tiny(P)
    attention = tiny(T)
    attention.load_state_dict(switch.state_dict())
    ids = torch.randint(0, VOCAB, (2, T))
    with torch.no_grad():
        ours, theirs = switch(ids).logits, attention(ids).logits
        assert rel_err(ours[:, :P], theirs[:, :P]) < 1e-6  # before P: every layer is the attention layer
        assert rel_err(ours[:, P:], theirs[:, P:]) > 1e-2  # from P on the SSM answers
        mixer, hidden = switch.model.layers[0].self_attn, torch.randn(2, T, 32)
        y = mixer.mix(hidden)
        full, _ = ssm_sequential(*_mixer_inputs(mixer, hidden))  # the SSM over the *whole* sequence
        assert rel_err(y[:, :, P:], mixer.ssm_norm(full[:, :, P:])) < 1e-5  # the converter lost nothing
        y_attention = attention.model.layers[0].self_attn.mix(hidden)
        assert rel_err(y[:, :, :P], y_attention[:, :, :P]) < 1e-6


def test_gradients_flow_through_attention_and_ssm_and_across_the_switch():
    P = 6
    mixer = tiny(P).model.layers[0].self_attn
    hidden = torch.randn(1, T, 32, requires_grad=True)
    y = mixer.mix(hidden)
    y[:, :, P:].square().sum().backward()  # a loss on the SSM tokens only
    assert hidden.grad[:, :P].abs().sum() > 0  # ... reaches the prefix through the memory converter
    assert mixer.dt_bias.grad.abs().sum() > 0 and mixer.A_log.grad.abs().sum() > 0
    mixer.zero_grad()
    hidden.grad = None
    mixer.mix(hidden)[:, :, :P].square().sum().backward()  # a loss on the attention tokens only
    assert mixer.q_proj.weight.grad.abs().sum() > 0
    assert mixer.dt_bias.grad is None or not mixer.dt_bias.grad.any()  # attention tokens never read the SSM


@pytest.mark.parametrize("prompt", [3, 6, 11], ids=["shorter", "equal", "longer"])
def test_cached_greedy_generate_equals_uncached_argmax(prompt):
    model = tiny([4, 6], sliding_window=3, layer_types=["sliding_attention", "full_attention"])
    ids = torch.randint(0, VOCAB, (1, prompt))
    generated = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=0
    )
    expected = ids
    with torch.no_grad():
        for _ in range(8):
            logits = model(expected, use_cache=False).logits[:, -1]
            expected = torch.cat([expected, logits.argmax(-1, keepdim=True)], dim=1)
    assert generated.tolist() == expected.tolist()


def test_cache_drops_keys_and_values_past_each_transpoint():
    model = tiny([3, 9])
    with torch.no_grad():
        out = model(torch.randint(0, VOCAB, (1, 5)), use_cache=True)
        assert out.cache.kv_tokens() == [0, 5]  # layer 0 is past P=3: no KV; layer 1 keeps its 5 tokens
        for _ in range(5):
            out = model(torch.randint(0, VOCAB, (1, 1)), cache=out.cache, use_cache=True)
        assert out.cache.kv_tokens() == [0, 0] and out.cache.seen_tokens == 10
        size = out.cache.nbytes()
        out = model(torch.randint(0, VOCAB, (1, 1)), cache=out.cache, use_cache=True)
        assert out.cache.nbytes() == size  # constant memory per token past the largest TransPoint


def test_paper_cycle_schedule_and_bad_schedules_have_clear_messages():
    config = TransMambaSwitchConfig(num_hidden_layers=10, transpoints="cycle")
    assert config.layer_transpoints == [0, 128, 256, 512, 1024, 2048, 4096, 8192, 0, 128]
    with pytest.raises(ValueError, match="has 3 entries but the model has 2 layers"):
        tiny([1, 2, 3])
    with pytest.raises(ValueError, match="has 1 entries but the model has 2 layers"):
        tiny([1])
    with pytest.raises(ValueError, match="TransPoint -1 of layer 0 is not a non-negative integer"):
        tiny(-1)


def test_teachers_that_cannot_share_are_refused_with_one_message():
    with pytest.raises(ValueError, match="not a causal language model"):
        check_causal_teacher(BertConfig(architectures=["BertModel"]))
    bad_value = LlamaConfig(hidden_size=32, num_attention_heads=4, v_head_dim=4)
    with pytest.raises(ValueError, match="value heads are 4 wide but its key heads 8"):
        check_causal_teacher(bad_value)
    teacher = tiny_llama()
    teacher.model.layers[0].self_attn.v_proj = torch.nn.Linear(32, 8, bias=False)
    with pytest.raises(ValueError, match="K projection is 16 wide and its V projection 8"):
        convert_lm(teacher, transpoints=4)


def test_padded_batches_are_refused():
    model = tiny(4)
    with pytest.raises(ValueError, match="does not take padded batches"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.tensor([[1] * 5, [0, 1, 1, 1, 1]]))


def test_asking_for_the_cuda_kernel_without_it_is_one_clear_error():
    model = tiny(0, ssm_backend="mamba_ssm")
    with pytest.raises(RuntimeError, match="needs the mamba_ssm package and CUDA tensors"):
        model(torch.zeros(1, 4, dtype=torch.long))
