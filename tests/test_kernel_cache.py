"""The numba kernels compile once per machine: one cache keyed by the kernel source serves every exported folder
(a second process from another folder compiles nothing), a read-only cache is read, and an unwritable one costs
only a recompile and one warning line."""

from __future__ import annotations

import logging
import shutil
import stat

import pytest
import torch
from conftest import tiny_config
from exported_code import last_json, run_isolated
from transmamba.modeling_transmamba import TransMambaForImageClassification

pytest.importorskip("numba")
from transmamba.modeling_transmamba import selective_scan_numba_cache as kernel_cache  # noqa: E402

COMPILING = "compiling the CPU scan kernel"

CHILD = r"""
import json, sys
import torch
from transformers import AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(torch.ones(1, 3, 32, 32)).logits
package = type(model).__module__.rsplit(".", 1)[0]
print(json.dumps({"backends": sorted(sys.modules[package + ".selective_scan"]._announced), "logits": logits.tolist()}))
"""


def _forward_index(folder) -> list:
    return sorted(folder.glob("selective_scan_numba_kernels._forward-*.nbi"))


def test_a_second_folder_in_a_second_process_reuses_the_compiled_kernel(tmp_path):
    model = TransMambaForImageClassification(tiny_config("vim-t", scan_backend="auto")).eval()
    first, second = tmp_path / "first-model", tmp_path / "second-model"  # two module names under transformers_modules
    model.save_pretrained(first)
    model.save_pretrained(second)
    cache = kernel_cache.cache_dir()
    warm = bool(_forward_index(cache))
    proc = run_isolated(CHILD, [first], tmp_path)
    a = last_json(proc)
    assert a["backends"] == ["numba"]
    assert proc.stderr.count(COMPILING) == (0 if warm else 1), proc.stderr[-2000:]
    assert _forward_index(cache), f"nothing cached in {cache}"

    # The second process reads a read-only copy of that cache: it loads, compiles nothing, writes nothing.
    readonly = tmp_path / "readonly" / cache.name
    shutil.copytree(cache, readonly)
    for path in [readonly, *readonly.iterdir()]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = sorted(p.name for p in readonly.iterdir())
    proc = run_isolated(CHILD, [second], tmp_path, TRANSMAMBA_NUMBA_CACHE_DIR=str(readonly.parent))
    b = last_json(proc)
    assert COMPILING not in proc.stderr and b["backends"] == ["numba"], proc.stderr[-2000:]
    assert sorted(p.name for p in readonly.iterdir()) == before
    assert b["logits"] == a["logits"]


def _double(x):
    return 2.0 * x


def test_first_compile_says_one_line_and_the_next_loads_from_disk(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(kernel_cache.ENV_CACHE_DIR, str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger=kernel_cache.__name__):
        assert kernel_cache.compile_kernel(_double, "f8(f8)", "forward f8")(1.5) == 3.0
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and lines[0].startswith(f"transmamba: {COMPILING} (forward f8) once, about ")
        assert str(tmp_path / "cache") in lines[0]
        caplog.clear()
        again = kernel_cache.compile_kernel(_double, "f8(f8)", "forward f8")  # a new dispatcher, as in a new process
        assert again(2.0) == 4.0 and caplog.records == []
        assert list(again.stats.cache_hits.values()) == [1]


def test_an_unwritable_cache_folder_only_costs_a_recompile(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a folder below a file cannot be created, even by root
    monkeypatch.setenv(kernel_cache.ENV_CACHE_DIR, str(blocker / "cache"))
    monkeypatch.setattr(kernel_cache.SourceKeyedCache, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=kernel_cache.__name__):
        kernel = kernel_cache.compile_kernel(_double, "f8(f8)", "forward f8")
        assert kernel(torch.tensor(4.0).item()) == 8.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and COMPILING in messages[0]
    assert "cannot write the kernel cache" in messages[1] and kernel_cache.ENV_CACHE_DIR in messages[1]
    assert all("\n" not in m for m in messages)
