"""Helpers for tests of exported model folders: which code files a folder must carry, and a child process that runs
a script the way a Hub user does, where only the folder's own copy of our code exists."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parents[1] / "modeling_transmamba"

# `python -I -S`: no site processing, so the editable install's finder never loads; the plain site-packages folder
# (torch, transformers, numba) is put back by hand. The first check proves our package is gone.
PRELUDE = """
import sys
sys.path.append({site!r})
{block_numba}
for _name in ("transmamba", "modeling_transmamba"):
    try:
        __import__(_name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{{_name}} is importable in the child: the test would not prove anything")
"""
# What a user without numba has: `import numba` raises ImportError (not a mock of our code).
BLOCK_NUMBA = "sys.modules['numba'] = None"


def code_closure(*entry_modules: str) -> set[str]:
    """Every file of `modeling_transmamba/` that the entry modules import, transitively, in any relative form.

    Read with `ast`, not transformers' regex: a `from . import x` that transformers would not copy still counts here,
    so a folder missing it fails the exact file-set check.
    """
    found: set[str] = set()
    pending = list(entry_modules)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        tree = ast.parse((CODE_DIR / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                pending.extend([node.module] if node.module else [alias.name for alias in node.names])
    return {f"{name}.py" for name in found}


def auto_map_modules(folder: Path) -> list[str]:
    """The modules a folder's config.json points the Auto classes at."""
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    return sorted({reference.split(".")[0] for reference in auto_map.values()})


def run_isolated(
    script: str, args: list[str], cwd: Path, *, numba: bool = True, timeout: int = 300, **env: str
) -> subprocess.CompletedProcess:
    """Run ``script`` (argv = ``args``) in a fresh interpreter without our package, offline, one thread.

    HOME (and TRANSMAMBA_NUMBA_CACHE_DIR if set) pass through, so the child shares this machine's kernel cache, and
    MKL_CBWR (conftest), so its GEMMs round as this process's do.
    """
    child_env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(cwd / "hf_home"),
        "OMP_NUM_THREADS": "1",
        **{key: os.environ[key] for key in ("HOME", "TRANSMAMBA_NUMBA_CACHE_DIR", "MKL_CBWR") if key in os.environ},
        **env,
    }
    prelude = PRELUDE.format(site=sysconfig.get_paths()["purelib"], block_numba="" if numba else BLOCK_NUMBA)
    code = prelude + textwrap.dedent(script)
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, *map(str, args)],
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(proc: subprocess.CompletedProcess) -> dict:
    """The child's result: the last stdout line, as JSON (after checking it succeeded)."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
