"""The trained student's card: built only from stored results, parses with ModelCard.load, numbers match."""

from __future__ import annotations

import copy
import json

import pytest
from huggingface_hub import ModelCard
from transmamba.model_cards.card import RESULTS_FORMAT, RESULTS_NAME
from transmamba.model_cards.results import RunResults
from transmamba.modeling_transmamba.selective_scan import NUMBA_HINT, NUMBA_SPEEDUP

from transmamba.cli import main as cli_main

RESULTS = {
    "format": RESULTS_FORMAT,
    "model_name": "trans-pmamba-fashion",
    "license": "mit",
    "repo_id": "me/trans-pmamba-fashion",
    "teacher": {"source": "runs/teacher", "base_model": None, "class": "ViTForImageClassification",
                "trained_here": True, "steps": 300},
    "student": {"spec": "pmamba-t,num_hidden_layers=4", "family": "PlainMamba", "parameters": 1234567,
                "hidden_size": 192, "num_hidden_layers": 4, "num_directions": 4, "image_size": 28, "patch_size": 4},
    "dataset": {"name": "fashion_mnist", "hub_id": "zalando-datasets/fashion_mnist", "source": "Debian package",
                "train_split": "train", "eval_split": "test", "train_size": 4000, "eval_size": 1000, "num_labels": 10},
    "budget": {"steps": 250, "epochs": 2.0, "batch_size": 32, "learning_rate": 0.001, "image_size": 28,
               "seeds": [0], "distillation": "wsab", "alpha": 0.5},
    "accuracy": {"teacher": 0.8512, "scratch": 0.7431, "transmamba": 0.8023},
    "timings": {"teacher": 61.2, "convert": 3.1, "scratch": 90.4, "transmamba": 120.9},
    "date": "2026-11-24T17:00:00+00:00",
    "machine": "2 CPU cores, torch 2.13.0+cpu",
}  # fmt: skip


def written(tmp_path, results: dict) -> ModelCard:
    RunResults.from_dict(results).save(tmp_path)
    assert cli_main(["card", str(tmp_path)]) == 0
    return ModelCard.load(tmp_path / "README.md")


def test_card_metadata_and_model_index_equal_the_stored_results(tmp_path):
    card = written(tmp_path, RESULTS)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-classification"
    assert data.license == "mit" and data.metrics == ["accuracy"]
    assert data.datasets == ["zalando-datasets/fashion_mnist"]
    assert data.base_model is None  # the teacher was trained locally: no Hub id to claim
    assert {"transmamba", "wsab", "plainmamba"} <= set(data.tags)
    assert data.model_name == "trans-pmamba-fashion"
    (result,) = data.eval_results
    stored = RunResults.load(tmp_path)
    assert result.metric_value == stored.accuracy["transmamba"]
    assert (result.metric_type, result.dataset_split, result.dataset_type) == (
        "accuracy",
        "test",
        "zalando-datasets/fashion_mnist",
    )
    body = card.text
    for value in RESULTS["accuracy"].values():
        assert f"| {100 * value:.2f} % |" in body
    assert "trust_remote_code=True" in body and 'from_pretrained("me/trans-pmamba-fashion"' in body
    assert "## Limitations" in body and "One seed" in body and "4,000" in body
    usage = body.split("## How to load")[1].split("## ")[0]
    assert NUMBA_HINT.format(speedup=NUMBA_SPEEDUP) in usage  # what the model logs without numba


def test_unmeasured_numbers_are_left_out_not_invented(tmp_path):
    results = copy.deepcopy(RESULTS)
    results["accuracy"] = {"transmamba": 0.8023, "scratch": None}
    results["teacher"] = {"source": "facebook/deit-tiny-patch16-224", "base_model": "facebook/deit-tiny-patch16-224"}
    body = written(tmp_path, results).text
    table = [line for line in body.splitlines() if line.endswith(" % |")]
    assert table == ["| This model: subcloned + WSAB, 250 steps | 80.23 % |"]
    assert "Student from scratch" not in body
    assert ModelCard.load(tmp_path / "README.md").data.base_model == "facebook/deit-tiny-patch16-224"

    results["accuracy"] = {}
    card = written(tmp_path, results)
    assert card.data.eval_results is None and " % |" not in card.text


def test_card_is_regenerated_from_the_file_not_remembered(tmp_path):
    written(tmp_path, RESULTS)
    stored = json.loads((tmp_path / RESULTS_NAME).read_text())
    stored["accuracy"]["transmamba"] = 0.9
    (tmp_path / RESULTS_NAME).write_text(json.dumps(stored))
    assert cli_main(["card", str(tmp_path)]) == 0
    assert ModelCard.load(tmp_path / "README.md").data.eval_results[0].metric_value == 0.9


def test_folder_without_results_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "README.md").write_text("keep me")
    assert cli_main(["card", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"has no {RESULTS_NAME}" in err and "transmamba run" in err and "Traceback" not in err
    assert (tmp_path / "README.md").read_text() == "keep me"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("dataset"), "lacks dataset"),
        (lambda r: r["accuracy"].update(transmamba=80.2), "not a fraction"),
        (lambda r: r["accuracy"].update(student=0.5), "unknown accuracy"),
        (lambda r: r.update(format="other/1"), "expected 'transmamba-results/1'"),
    ],
)
def test_bad_results_are_refused(tmp_path, change, message):
    results = copy.deepcopy(RESULTS)
    change(results)
    with pytest.raises(ValueError, match=message):
        RunResults.from_dict(results).save(tmp_path)
    assert not (tmp_path / RESULTS_NAME).exists()


@pytest.mark.parametrize(
    ("accuracy", "said", "not_said"),
    [
        ({"teacher": 0.85, "scratch": 0.74, "transmamba": 0.80}, "6.00 points above the student trained from scratch",
         "below"),
        ({"teacher": 0.85, "scratch": 0.80, "transmamba": 0.74}, "6.00 points **below** the student trained from",
         "6.00 points above"),
        ({"teacher": 0.60, "scratch": 0.70, "transmamba": 0.74}, "The teacher scores below the students",
         "the student can only inherit what that teacher learned"),
    ],
)  # fmt: skip
def test_card_says_what_the_numbers_say(tmp_path, accuracy, said, not_said):
    results = copy.deepcopy(RESULTS)
    results["accuracy"] = accuracy
    body = written(tmp_path, results).text
    assert said in body and not_said not in body
    assert "**This model**" not in body


def test_cards_never_publish_local_paths(tmp_path):
    """A local teacher copy: the card's base_model is the Hub id its config recorded, and no local path appears."""
    from transformers import ViTConfig, ViTForImageClassification
    from transmamba.conversion.cli import main as convert_main

    from transmamba.data import dataset_names

    teacher = tmp_path / "copies" / "deit-tiny"
    ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                                         patch_size=8, intermediate_size=64)).save_pretrained(teacher)  # fmt: skip
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "_name_or_path": "facebook/deit-tiny-patch16-224"}))
    out = tmp_path / "out"
    spec = "pmamba-t,hidden_size=32,num_hidden_layers=2,mlp_ratio=2,state_size=4,scan_backend=sequential"
    assert convert_main(["--teacher", str(teacher), "--student", spec, "--output", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "facebook/deit-tiny-patch16-224"
    for name in ("README.md", "subcloning_report.json"):
        assert str(tmp_path) not in (out / name).read_text(), name
    (tmp_path / "my-photos").mkdir()
    assert dataset_names(str(tmp_path / "my-photos"), None) == ("my-photos", None, "local folder my-photos")
    assert dataset_names(str(tmp_path / "my-photos"), "pets")[0] == "pets"


def test_machine_line_names_the_cpu_generation_and_vector_unit(tmp_path):
    """The name "AMD EPYC" alone covers CPU generations that round differently: the line must tell them apart."""
    from transmamba.model_cards.results import _cpu_identity

    block = "processor\t: {n}\nmodel name\t: AMD EPYC\ncpu family\t: {family}\nmodel\t\t: 1\nflags\t\t: fpu {flags}\n"
    zen3, zen4 = tmp_path / "zen3", tmp_path / "zen4"
    zen3.write_text("\n".join(block.format(n=n, family=25, flags="avx avx2") for n in range(2)))
    zen4.write_text(block.format(n=0, family=25, flags="avx avx2 avx512f").replace("model\t\t: 1", "model\t\t: 17"))
    assert _cpu_identity(str(zen3)) == "AMD EPYC (family 25 model 1, AVX2)"
    assert _cpu_identity(str(zen4)) == "AMD EPYC (family 25 model 17, AVX512F)"
    assert _cpu_identity(str(tmp_path / "missing")) is None
