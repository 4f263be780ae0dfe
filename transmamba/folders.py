"""Safe writes for every command: an output folder is complete or absent, and nothing we did not write is deleted.

`atomic_folder` hands out a hidden sibling (``.NAME.partial-*``) to write into, fsyncs it and renames it over the
output only when the writing finished. The writer holds an ``flock`` on ``.NAME.partial-*.lock`` for as long as it
writes, so the next writer removes a sibling only when its lock is free: its process died (SIGKILL, power loss).
A live writer's sibling is never touched. `--overwrite` replaces only an empty folder or one this project wrote
(it holds one of `OUR_MARKERS` with a ``transmamba-`` format); anything else is refused with a message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial-"
LOCK_SUFFIX = ".lock"
# A folder holding one of these files, with a "transmamba-..." format, was written by this project.
OUR_MARKERS = ("transmamba_results.json", "subcloning_report.json")


def written_by_us(folder: Path) -> bool:
    """True when ``folder`` holds one of our reports (convert's subcloning report, run's/train's results)."""
    for name in OUR_MARKERS:
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and str(data.get("format", "")).startswith("transmamba-"):
            return True
    return False


def check_output_folder(output: Path, overwrite: bool, option: str = "--output") -> None:
    """Refuse, before any work, an output that cannot be written or must not be replaced."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"{option} {output} exists and is a file, not a folder; choose another {option}.")
    parent = output.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"The parent folder {parent} of {option} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"Cannot write {option} {output}: {parent} is not writable (read-only file system or no permission); "
            f"choose a writable {option}."
        )
    if not output.exists():
        return
    if not overwrite:
        raise ValueError(
            f"{option} {output} already exists; pass --overwrite to replace it, or choose another {option}."
        )
    if not any(output.iterdir()):
        return
    if not written_by_us(output):
        raise ValueError(
            f"{option} {output} holds files that transmamba did not write (no {' or '.join(OUR_MARKERS)}); "
            f"--overwrite only replaces an empty folder or one of ours. Choose another {option}."
        )


def _lock_is_free(lock: Path) -> bool:
    """True when no process holds the writer's flock on ``lock`` (its writer is gone)."""
    try:
        handle = open(lock, "a")  # noqa: SIM115 - closed below, the lock with it
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def remove_dead_partials(output: Path) -> list[Path]:
    """Delete the hidden siblings that killed writers left behind; a sibling whose writer still runs stays."""
    removed = []
    for lock in output.parent.glob(f".{output.name}{PARTIAL}*{LOCK_SUFFIX}"):
        partial = lock.with_name(lock.name[: -len(LOCK_SUFFIX)])
        if _lock_is_free(lock):
            shutil.rmtree(partial, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def _fsync_tree(folder: Path) -> None:
    """Every file and folder durable before the rename makes the output visible."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_folder(output: Path, overwrite: bool = False, option: str = "--output") -> Iterator[Path]:
    """Yield an empty hidden sibling of ``output``; when the block ends normally it becomes ``output``.

    An exception (or Ctrl-C) removes the sibling; a SIGKILL leaves it for the next writer to remove. An existing
    ``output`` is replaced only under the rules of `check_output_folder`, checked again at the swap.
    """
    output = output.absolute()
    check_output_folder(output, overwrite, option)
    remove_dead_partials(output)
    try:
        partial = Path(tempfile.mkdtemp(prefix=f".{output.name}{PARTIAL}{os.getpid()}-", dir=output.parent))
    except OSError as error:
        raise ValueError(f"Cannot write {option} {output}: {error.strerror}; choose a writable {option}.") from None
    lock = partial.with_name(partial.name + LOCK_SUFFIX)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield partial
            _fsync_tree(partial)
            check_output_folder(output, overwrite, option)
            if output.exists():
                old = partial.with_name(partial.name + ".old")
                output.rename(old)
                partial.rename(output)
                shutil.rmtree(old)
            else:
                partial.rename(output)
            _fsync_dir(output.parent)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            lock.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write-then-rename for one file: a reader sees the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
