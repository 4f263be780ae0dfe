"""The students as transformers models: presets, sizes, outputs, loss, positions, checkpointing, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForImageClassification
from transmamba.modeling_transmamba import (
    PRESETS,
    TransMambaConfig,
    TransMambaForImageClassification,
    TransMambaModel,
)
from transmamba.modeling_transmamba.mixer import NUM_MOVES, TransMambaMixer
from transmamba.modeling_transmamba.selective_scan import ENV_BACKEND

# Parameters of each preset at 224 px with a 1000-class head: (blocks with the ViT-shaped MLP, ratio 4; mlp_ratio=0).
PARAMS_224_IN1K = {
    "pmamba-t": (7_176_424, 3_621_352),
    "pmamba-s": (26_958_376, 12_770_344),
    "pmamba-b": (104_344_744, 47_657_128),
    "vim-t": (14_285_992, 7_175_848),
    "vim-s": (54_228_328, 25_852_264),
}


def counted_from_config(config: TransMambaConfig) -> int:
    """Parameter count written out from the architecture description, independent of the module code."""
    hidden, inner, state, rank = config.hidden_size, config.intermediate_size, config.state_size, config.time_step_rank
    sets = 1 if config.share_ssm_params else config.num_directions
    kernel = config.conv_kernel
    conv = inner * kernel * kernel + inner if config.conv_dim == 2 else sets * inner * (kernel + 1)
    mixer = (
        hidden * 2 * inner
        + 2 * inner  # in_proj
        + conv
        + sets * (rank + 2 * state) * inner  # x_proj
        + sets * (inner * rank + inner)  # dt_proj
        + sets * inner * (state + 1)  # A_log, D
        + (NUM_MOVES * state if config.direction_aware_update else 0)
        + inner * hidden
        + hidden  # out_proj
    )
    mlp_width = config.mlp_hidden_size
    mlp = 2 * hidden + 2 * hidden * mlp_width + mlp_width + hidden if mlp_width else 0  # LN + fc1 + fc2
    layer = 2 * hidden + mixer + mlp
    cls = 1 if config.use_cls_token else 0
    patches = config.grid_size**2
    embeddings = config.num_channels * config.patch_size**2 * hidden + hidden + (patches + cls) * hidden + cls * hidden
    head = hidden * config.num_labels + config.num_labels
    return embeddings + config.num_hidden_layers * layer + 2 * hidden + head


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_parameter_counts_at_224(preset):
    counts = []
    for mlp_ratio in (4.0, 0.0):
        config = TransMambaConfig.from_preset(preset, num_labels=1000, mlp_ratio=mlp_ratio)
        with torch.device("meta"):  # full size, no memory
            model = TransMambaForImageClassification(config)
        counts.append(sum(p.numel() for p in model.parameters()))
        assert counts[-1] == counted_from_config(config)
    print(f"{preset}: {counts[0]:,} parameters at 224 px, 1000 classes ({counts[1]:,} with mlp_ratio=0)")
    assert tuple(counts) == PARAMS_224_IN1K[preset]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_and_classifies(preset):
    """The real presets (full width and depth) at a small image size."""
    config = TransMambaConfig.from_preset(preset, image_size=32, num_labels=7, scan_backend="sequential")
    model = TransMambaForImageClassification(config).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_outputs_loss_and_hidden_states(preset):
    config = tiny_config(preset)
    model = TransMambaForImageClassification(config).eval()
    pixels, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 2])
    out = model(pixels, labels=labels, output_hidden_states=True, output_direction_outputs=True)
    assert out.loss.ndim == 0
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))
    out.loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused  # every parameter trains (DDP without find_unused_parameters relies on it)
    tokens = 16 + (1 if config.use_cls_token else 0)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (3, tokens, config.hidden_size) for h in out.hidden_states)
    assert len(out.direction_outputs) == config.num_hidden_layers
    assert out.direction_outputs[0].shape == (3, config.num_directions, tokens, config.hidden_size)
    plain = model(pixels)
    assert plain.hidden_states is None and plain.direction_outputs is None
    assert torch.allclose(plain.logits, out.logits)
    as_tuple = model(pixels, labels=labels, return_dict=False)
    assert torch.allclose(as_tuple[0], out.loss) and torch.allclose(as_tuple[1], out.logits)


def test_vim_reads_the_class_token_from_the_middle():
    config = tiny_config("vim-t")
    model = TransMambaModel(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert torch.equal(out.pooler_output, out.last_hidden_state[:, 8])  # 16 patches: class token at index 8


def perturb(model: torch.nn.Module) -> None:
    """Move every tensor off its init, so a re-initialisation during loading could not go unnoticed."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))


@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_scan_backends_agree_inside_the_model(preset, monkeypatch):
    model = TransMambaForImageClassification(tiny_config(preset)).eval()
    perturb(model)
    pixels = torch.randn(2, 3, 32, 32)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return model.transmamba(pixels, output_direction_outputs=True).direction_outputs[-1]

    sequential = run()
    model.config.scan_backend = "chunked"
    chunked = run()
    model.config.scan_backend = "auto"  # the environment variable decides
    monkeypatch.setenv(ENV_BACKEND, "chunked")
    from_env = run()
    model.config.scan_backend = "cuda"  # the mixers read the config at every call: a CPU model must refuse it
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        run()
    assert rel_err(chunked, sequential) < 1e-5
    assert torch.equal(from_env, chunked)


@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_interpolate_pos_encoding(preset):
    model = TransMambaForImageClassification(tiny_config(preset)).eval()
    pixels = torch.randn(1, 3, 48, 40)  # 6x5 patches instead of 4x4
    with torch.no_grad():
        logits = model(pixels, interpolate_pos_encoding=True).logits
        assert logits.shape == (1, 5)
        with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
            model(pixels)
        same = model(torch.randn(1, 3, 32, 32), interpolate_pos_encoding=True)  # native size: unchanged path
    assert same.logits.shape == (1, 5)


@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    model = TransMambaForImageClassification(tiny_config(preset)).train()
    pixels, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    calls = []
    for layer in model.transmamba.layers:
        layer.mixer.register_forward_hook(lambda *_: calls.append(1))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        calls.clear()
        out = model(pixels, labels=labels, output_direction_outputs=True)
        # The distillation back-propagates through every direction output too.
        (out.loss + sum(d.square().mean() for d in out.direction_outputs)).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert len(calls) == model.config.num_hidden_layers
    model.activation_checkpointing_enable()  # transformers 5's name for gradient_checkpointing_enable
    checkpointed = gradients()
    assert len(calls) == 2 * model.config.num_hidden_layers  # the backward re-ran each layer: checkpointing is on
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("preset", ["pmamba-t", "vim-t"])
def test_save_and_load_round_trip_is_bit_exact(preset, tmp_path):
    model = TransMambaForImageClassification(tiny_config(preset)).eval()
    perturb(model)
    model.save_pretrained(tmp_path)
    loaded, info = AutoModelForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is TransMambaForImageClassification
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(pixels).logits, model(pixels).logits)
    reloaded, original = AutoConfig.from_pretrained(tmp_path).to_dict(), model.config.to_dict()
    reloaded.pop("_name_or_path"), original.pop("_name_or_path")
    assert reloaded == original


def test_loading_initialises_only_the_missing_tensors(tmp_path):
    """The mixer's Mamba init runs for tensors absent from the checkpoint and skips every loaded one."""
    config = tiny_config("pmamba-t")
    model = TransMambaForImageClassification(config)
    perturb(model)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = "transmamba.layers.0.mixer.A_log"
    del weights[missing]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = TransMambaForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == {missing}
    a_log = loaded.state_dict()[missing]
    s4d_real = torch.log(torch.arange(1, config.state_size + 1, dtype=torch.float32)).expand_as(a_log)
    assert torch.equal(a_log, s4d_real)
    for name, tensor in model.state_dict().items():
        if name != missing:
            assert torch.equal(loaded.state_dict()[name], tensor), name


def test_fresh_model_has_mamba_init():
    model = TransMambaForImageClassification(tiny_config("vim-t"))
    mixer: TransMambaMixer = model.transmamba.layers[0].mixer
    state = model.config.state_size
    assert torch.equal(mixer.A_log[0, 0], torch.log(torch.arange(1.0, state + 1)))
    assert torch.equal(mixer.D, torch.ones_like(mixer.D))
    bound = model.config.intermediate_size**-0.5  # nn.Linear(inner, R + 2N)'s default init, per parameter set
    assert 0.9 * bound < mixer.x_proj_weight.abs().max() <= bound
    dt = F.softplus(mixer.dt_proj_bias)  # inverse-softplus init: dt in [time_step_min, time_step_max]
    assert dt.min() >= model.config.time_step_min * 0.999 and dt.max() <= model.config.time_step_max * 1.001
    assert model.transmamba.embeddings.position_embeddings.std() > 0


def test_low_precision_weights_run_close_to_fp32():
    model = TransMambaForImageClassification(tiny_config("vim-t")).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(pixels).logits
        low = model.to(torch.bfloat16)(pixels.bfloat16()).logits
    assert low.dtype == torch.bfloat16
    assert rel_err(low.float(), reference) < 5e-2


@pytest.fixture
def tiny_model() -> TransMambaForImageClassification:
    return TransMambaForImageClassification(tiny_config("pmamba-t")).eval()


@pytest.fixture
def projection_calls(tiny_model) -> list[int]:
    """Counts patch-projection calls, to show a bad input is refused before any heavy work."""
    calls: list[int] = []
    tiny_model.transmamba.embeddings.patch_embeddings.projection.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 1, 32, 32), r"convert images to 3 channels \(e\.g\. PIL's \.convert\('RGB'\)\) or build the model"),
        ((1, 4, 32, 32), "matching num_channels"),
        ((3, 32, 32), r"shape \(batch, 3, height, width\)"),
        ((1, 3, 36, 32), "crop to a multiple of 8"),
    ],
    ids=["grayscale", "rgba", "unbatched", "not-divisible"],
)
def test_bad_pixel_values_are_refused_with_the_fix(tiny_model, projection_calls, shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(torch.randn(shape), interpolate_pos_encoding=True)
    assert not projection_calls


def test_missing_pixel_values_are_refused(tiny_model):
    with pytest.raises(ValueError, match="pixel_values is required"):
        tiny_model(labels=torch.tensor([0]))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: TransMambaConfig.from_preset("pmamba-xl"), "choose one of pmamba-t, pmamba-s, pmamba-b, vim-t, vim-s"),
        (lambda: tiny_config("pmamba-t", scan_directions=["rows", "spiral"]), r"\['spiral'\]; choose from forward"),
        (lambda: tiny_config("pmamba-t", scan_directions=[]), "choose from"),
        (lambda: tiny_config("pmamba-t", use_cls_token=True), "set use_cls_token=False"),
        (lambda: tiny_config("vim-t", conv_dim=2), "set use_cls_token=False .* or conv_dim"),
        (lambda: tiny_config("pmamba-t", image_size=36), "use an image size that is a multiple of 8"),
        (lambda: tiny_config("pmamba-t", pooling="cls"), "'cls' with use_cls_token=True"),
        (lambda: tiny_config("vim-t", direction_aware_update=True), "needs share_ssm_params=True"),
        (lambda: tiny_config("vim-t", combine_directions="max"), "'sum' or 'mean'"),
    ],
    ids=[
        "unknown-preset",
        "unknown-direction",
        "no-direction",
        "cls-with-2d-scans",
        "cls-with-2d-conv",
        "image-not-divisible",
        "cls-pooling-without-token",
        "direction-table-unshared",
        "unknown-combine",
    ],
)
def test_bad_configs_are_refused_with_the_fix(make, message):
    with pytest.raises(ValueError, match=message):
        make()
