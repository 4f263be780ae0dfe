"""Resumable pipeline stages: each stage works in its own folder and is done only when its marker says so.

A stage writes everything into ``work/<stage>/`` and, last, ``stage.json`` (atomically) with the hash of its
inputs (its options and the hashes of the stages it reads). A rerun skips a stage whose marker exists, whose
inputs hash is unchanged and whose listed files still exist; a killed stage has no marker and runs again, from
its own partial state (e.g. Trainer checkpoints) when that was started with the same inputs, else from scratch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from .folders import atomic_write_text

MARKER = "stage.json"
STARTED = "stage.started.json"


def inputs_hash(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


class Stages:
    """Runs named stages in order under ``work``, with one header line per stage as the progress display."""

    def __init__(self, work: Path, names: list[str]):
        self.work, self.names = work, names
        self.hashes: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.skipped: list[str] = []

    def _valid(self, directory: Path, digest: str) -> dict | None:
        try:
            marker = json.loads((directory / MARKER).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        files = [directory / name for name in marker.get("files", [])]
        return marker if marker.get("inputs_hash") == digest and all(p.exists() for p in files) else None

    def run(self, name: str, description: str, inputs: dict, work: Callable[[Path], tuple[dict, list[str]]]) -> dict:
        """``work(directory) -> (outputs, files)``; outputs (JSON) are returned, and replayed when skipped."""
        directory = self.work / name
        digest = inputs_hash({"stage": name, **inputs})
        self.hashes[name] = digest
        position = f"[{self.names.index(name) + 1}/{len(self.names)}]"
        marker = self._valid(directory, digest)
        if marker is not None:
            self.seconds[name] = marker["seconds"]
            self.skipped.append(name)
            tqdm.write(f"{position} {name}: done in an earlier run (inputs unchanged), skipped")
            return marker["outputs"]
        tqdm.write(f"{position} {name}: {description}")
        started = directory / STARTED
        try:
            same_start = json.loads(started.read_text()).get("inputs_hash") == digest
        except (OSError, json.JSONDecodeError):
            same_start = False
        if directory.exists() and not same_start:
            if not started.is_file() and any(directory.iterdir()):
                raise ValueError(
                    f"{directory} holds files that transmamba did not write (no {STARTED}); choose another --work-dir "
                    "(stages write WORK_DIR/<stage>/)."
                )
            shutil.rmtree(directory)  # left by other inputs: nothing in it can be reused
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).unlink(missing_ok=True)
        _write_json(started, {"inputs_hash": digest, "inputs": inputs})
        begin = time.perf_counter()
        outputs, files = work(directory)
        self.seconds[name] = round(time.perf_counter() - begin, 1)
        _write_json(
            directory / MARKER,
            {
                "stage": name,
                "inputs_hash": digest,
                "inputs": inputs,
                "outputs": outputs,
                "files": files,
                "seconds": self.seconds[name],
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        tqdm.write(f"{position} {name}: done in {self.seconds[name]:.1f} s")
        return outputs
