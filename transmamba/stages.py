"""Resumable pipeline stages: each stage works in its own folder and is done only when its marker says so.

A stage writes everything into ``work/<stage>/`` and, last, ``stage.json`` (atomically) with the hash of its
inputs (its options and the hashes of the stages it reads). A rerun skips a stage whose marker exists, whose
inputs hash is unchanged and whose listed files still exist; a killed stage has no marker and runs again, from
its own partial state (e.g. Trainer checkpoints) when that was started with the same inputs, else from scratch.
A stage that another live process on this host is running is refused with a message, not shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
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


def _process_start(pid: int) -> str | None:
    """The process's start time (Linux), so a reused pid is not taken for the process that wrote a stage."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid())}


def _running_elsewhere(owner: dict) -> bool:
    """Whether the process that started a stage still runs (on this host): two processes on one stage would
    overwrite each other's checkpoints, and one with other inputs would delete the folder under the other."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return _process_start(pid) == owner.get("process_start")


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
            start = json.loads(started.read_text())
        except (OSError, json.JSONDecodeError):
            start = {}
        if _running_elsewhere(start.get("owner", {})):
            raise ValueError(
                f"Stage {name} in {directory} is being run by another process (pid {start['owner']['pid']}); wait "
                "for it to finish, or use another --work-dir."
            )
        same_start = start.get("inputs_hash") == digest
        if directory.exists() and not same_start:
            if not started.is_file() and any(directory.iterdir()):
                raise ValueError(
                    f"{directory} holds files that transmamba did not write (no {STARTED}); choose another --work-dir "
                    "(stages write WORK_DIR/<stage>/)."
                )
            shutil.rmtree(directory)  # left by other inputs: nothing in it can be reused
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).unlink(missing_ok=True)
        _write_json(started, {"inputs_hash": digest, "inputs": inputs, "owner": _owner()})
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
