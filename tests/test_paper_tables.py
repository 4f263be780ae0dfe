"""The paper-table experiment script on a tiny budget: every student of a table trains through the pipeline's
stages with its own init, loss and data fraction, results are written, and a rerun trains nothing again."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import ViTConfig, ViTModel

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "paper_tables.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("paper_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def _headless_teacher(folder: Path) -> Path:
    """A pretrained-style encoder without a classification head, like DINOv2 or a ViTModel on the Hub."""
    config = ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=128)  # fmt: skip
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def test_table6_runs_every_student_once_and_resumes(tmp_path: Path, capsys) -> None:
    tables = _load_script()
    teacher = _headless_teacher(tmp_path / "teacher")
    argv = ["table6", "--teacher", str(teacher), "--dataset", "digits", "--work-dir", str(tmp_path / "work"),
            "--out-dir", str(tmp_path / "out"), "--image-size", "16", "--train-size", "80", "--eval-size", "40",
            "--steps", "4", "--batch-size", "8", "--teacher-steps", "3", "--teacher-tune", "head",
            "--eval-every", "2", "--threads", "1"]  # fmt: skip
    assert tables.main(argv) == 0

    record = json.loads((tmp_path / "out" / "table6.json").read_text())
    students = {(s["init"], s["distillation"], s["fraction"]): s for s in record["students"]}
    assert set(students) == {("subclone", "wsab", f) for f in (0.25, 0.5, 0.75, 1.0)} | {("scratch", "none", 1.0)}
    for (init, _, fraction), student in students.items():
        assert 0.0 <= student["top1"] <= 1.0
        stage = json.loads((tmp_path / "work" / _name(student) / "stage.json").read_text())
        assert stage["outputs"]["train_images"] == round(fraction * 80)
        assert stage["outputs"]["init"] == init
        evaluated = [h["step"] for h in student["history"] if "eval_accuracy" in h]
        assert evaluated == ([2, 4] if student["curves"] else [])
    assert "| TransMamba (subclone + WSAB), 25 % of the data |" in (tmp_path / "out" / "table6.md").read_text()

    # --teacher-tune head: only the new head trained, the encoder is the pretrained one.
    tuned = load_file(tmp_path / "work" / "teacher" / "model" / "model.safetensors")
    original = load_file(teacher / "model.safetensors")
    encoder = [key for key in original if "encoder" in key]
    assert encoder and all(torch.equal(tuned[f"vit.{key}"], original[key]) for key in encoder)
    assert not torch.equal(tuned["classifier.weight"], torch.zeros_like(tuned["classifier.weight"]))

    capsys.readouterr()
    assert tables.main(argv) == 0
    log = capsys.readouterr().out
    assert "train " not in log.replace("done in an earlier run", "")  # nothing retrained
    assert log.count("done in an earlier run") == 4 + 5  # data, teacher, outputs, convert + five students


def _name(student: dict) -> str:
    return f"{student['family']}-{student['init']}-{student['distillation']}-f{round(100 * student['fraction'])}-" \
           f"s{student['seed']}"  # fmt: skip


def test_figure3_reuses_the_students_of_a_table(tmp_path: Path, capsys) -> None:
    tables = _load_script()
    teacher = _headless_teacher(tmp_path / "teacher")
    common = ["--teacher", str(teacher), "--dataset", "digits", "--work-dir", str(tmp_path / "work"),
              "--out-dir", str(tmp_path / "out"), "--image-size", "16", "--train-size", "48", "--eval-size", "16",
              "--steps", "2", "--batch-size", "8", "--teacher-steps", "1", "--eval-every", "1", "--threads", "1",
              "--seeds", "0"]  # fmt: skip
    assert tables.main(["table5", *common]) == 0
    capsys.readouterr()
    assert tables.main(["figure3", *common]) == 0
    assert "train " not in capsys.readouterr().out.replace("done in an earlier run", "")
    png = (tmp_path / "out" / "figure3.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_a_table_grows_across_runs_and_refuses_another_budget(tmp_path: Path, capsys) -> None:
    tables = _load_script()
    teacher = _headless_teacher(tmp_path / "teacher")
    common = ["recipes", "--teacher", str(teacher), "--dataset", "digits", "--work-dir", str(tmp_path / "work"),
              "--out-dir", str(tmp_path / "out"), "--image-size", "16", "--train-size", "48", "--eval-size", "16",
              "--batch-size", "8", "--teacher-steps", "1", "--threads", "1", "--recipes", "scratch"]  # fmt: skip
    assert tables.main([*common, "--steps", "2", "--seeds", "0"]) == 0
    path = tmp_path / "out" / "recipes.json"
    earlier = json.loads(path.read_text())
    first = earlier["budget"]["since"]  # its first write
    for student in earlier["students"]:  # a file written before Student had its weighting field
        del student["weighting"]
    path.write_text(json.dumps(earlier))
    # Another process, another seed and more recipes (KD without the subclone, KD on half the data, WSAB with
    # uniform layer weights), same table.
    more = ["--recipes", "scratch", "scratch-logits", "logits-half", "wsab-uniform"]
    assert tables.main([*common, "--steps", "2", "--seeds", "1", *more]) == 0
    record = json.loads(path.read_text())
    got = [(s["seed"], s["init"], s["distillation"], s["fraction"], s["weighting"]) for s in record["students"]]
    assert got == [(0, "scratch", "none", 1, "misaligned"), (1, "scratch", "none", 1, "misaligned"),
                   (1, "scratch", "logits", 1, "misaligned"), (1, "subclone", "logits", 0.5, "misaligned"),
                   (1, "subclone", "wsab", 1, "uniform")]  # fmt: skip
    # The weighting reached the loss: every one of the 2 layers weighs 1/2 in every direction, and the log says so.
    logged = [h for h in record["students"][-1]["history"] if "loss" in h]
    maxima = [v for h in logged for k, v in h.items() if k.startswith("layer_weight_max/")]
    assert maxima and all(v == 0.5 for v in maxima)
    assert record["budget"]["seeds"] == [0, 1] and record["budget"]["since"] == first
    markdown = (tmp_path / "out" / "recipes.md").read_text()
    assert "| pmamba-s: scratch | " in markdown and "(2 seeds)" in markdown
    assert "| pmamba-s: scratch + logits KD | " in markdown
    assert "| pmamba-s: subclone + logits KD, 50 % of the data | " in markdown
    assert "| pmamba-s: subclone + WSAB, uniform layer weights | " in markdown
    png = (tmp_path / "out" / "recipes.png").read_bytes()  # the loss curves of every seed's scratch row
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    capsys.readouterr()
    try:  # a changed budget must not mix into that table, and must stop before any student trains
        tables.main([*common, "--steps", "3", "--seeds", "2"])
    except SystemExit as stop:
        assert "students differ" in str(stop) and "--tag" in str(stop)
    else:
        raise AssertionError("a table of another budget was extended")
    assert "train scratch" not in capsys.readouterr().out
    assert len(json.loads(path.read_text())["students"]) == 5


def test_the_recipes_table_plans_every_family_seed_by_seed() -> None:
    tables = _load_script()
    planned = tables.plan("recipes", [0, 1], ["scratch", "feature"], ("pmamba-s", "vim-s"))
    got = [(s.seed, s.family, s.init, s.distillation) for s in planned]
    assert got == [(seed, family, init, distill) for seed in (0, 1) for family in ("pmamba-s", "vim-s")
                   for init, distill in (("scratch", "none"), ("subclone", "feature"))]  # fmt: skip
    assert len({s.name for s in planned}) == len(planned)  # each its own stage
    assert tables.build_parser().parse_args(["recipes"]).families == ["pmamba-s"]  # the committed tables' rows
