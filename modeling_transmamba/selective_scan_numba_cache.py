"""Compile the numba scan kernels once per machine: numba's on-disk cache, keyed by the kernels' source.

numba's default cache sits next to the source file, so every exported model folder (each a copy of this code under
``~/.cache/huggingface/modules``) compiled the kernels again. Here every kernel's cache lives in one user folder,
``$TRANSMAMBA_NUMBA_CACHE_DIR`` or ``$XDG_CACHE_HOME/transmamba/numba`` (default ``~/.cache/transmamba/numba``),
in a sub-folder named by a hash of the kernel files' contents: identical code in any folder shares one compile, and
changed code never loads a stale one. A folder that cannot be written is read if it holds the kernels, else they
are compiled for this process only: the cache never makes a model fail.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import cache
from pathlib import Path

from transformers.utils import logging

try:
    import numba
    from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator
except ImportError as error:  # the dispatcher catches this and uses the PyTorch scan
    raise ImportError("The numba selective-scan backend needs `pip install numba`.") from error

logger = logging.get_logger(__name__)

ENV_CACHE_DIR = "TRANSMAMBA_NUMBA_CACHE_DIR"
# Every file whose code ends up in a compiled kernel: a change in any of them must miss the cache.
KERNEL_FILES = ("selective_scan_numba_math.py", "selective_scan_numba_kernels.py")
# Measured on a 2-core CPU (numba 0.68): forward ~15 s, backward ~35 s, per float type. Said before compiling.
COMPILE_SECONDS = {"forward": 15, "backward": 35}


def cache_root() -> Path:
    """The user folder holding every compiled kernel version (env override first)."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transmamba" / "numba"


@cache
def source_digest() -> str:
    """sha256 of the kernel files next to this one: the cache key of this version of the code."""
    folder = Path(__file__).parent
    hasher = hashlib.sha256(numba.__version__.encode())
    for name in KERNEL_FILES:
        hasher.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return hasher.hexdigest()[:20]


def cache_dir() -> Path:
    return cache_root() / source_digest()


def shared_name(module_name: str) -> str:
    """A name for a kernel module that depends only on the kernel source, registered in ``sys.modules``.

    numba's cache records the module of each compiled function and imports it by name on load; a folder's copy of
    this code is ``transformers_modules.<folder>...``, a name no other folder has. The kernel modules take this
    name as their ``__name__`` instead, so one compile serves the installed package and every exported folder.
    """
    shared = f"_transmamba_numba_{source_digest()}.{module_name.rsplit('.', 1)[-1]}"
    sys.modules.setdefault(shared, sys.modules[module_name])
    return shared


class _SourceKeyedLocator(_CacheLocator):
    """Puts a function's cache in ``cache_dir()`` whatever folder its file sits in; the stamp is the source hash."""

    def __init__(self, py_func, py_file):
        self._path = str(cache_dir())
        self._lineno = py_func.__code__.co_firstlineno

    def get_cache_path(self) -> str:
        return self._path

    def get_source_stamp(self) -> str:
        return source_digest()

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        return cls(py_func, py_file)


class _SourceKeyedImpl(CompileResultCacheImpl):
    _locator_classes = [_SourceKeyedLocator]


class SourceKeyedCache(FunctionCache):
    """numba's function cache in ``cache_dir()``; saving into a folder that cannot be written is skipped."""

    _impl_class = _SourceKeyedImpl
    _warned = False

    def has(self, signature: str, dispatcher) -> bool:
        """Whether a compiled ``signature`` for this CPU is stored (then numba loads it instead of compiling)."""
        key = self._index_key(signature, dispatcher.targetctx.codegen())
        try:
            return key in self._cache_file._load_index()
        except (OSError, EOFError, ValueError):  # no readable cache: it will compile
            return False

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except (OSError, ImportError, AttributeError, EOFError, ValueError) as error:  # unreadable: compile again
            logger.info("transmamba: ignoring the cached kernel %s (%s)", self.cache_path, error)
            return None

    def save_overload(self, sig, data) -> None:
        try:
            super().save_overload(sig, data)
        except OSError as error:
            if not SourceKeyedCache._warned:
                SourceKeyedCache._warned = True
                logger.warning(
                    "transmamba: cannot write the kernel cache %s (%s); set %s to a writable folder to compile "
                    "only once.", self.cache_path, error, ENV_CACHE_DIR
                )  # fmt: skip


def jit(**options):
    """``numba.njit`` with the source-keyed cache (compiled lazily, on first call).

    ``error_model="numpy"``: Python's ZeroDivisionError check on every float division blocks vectorisation
    (a sigmoid loop ran 17x slower).
    """

    def decorate(func):
        dispatcher = numba.njit(error_model="numpy", **options)(func)
        dispatcher._cache = SourceKeyedCache(dispatcher.py_func)  # numba's `cache=True` sets this attribute too
        return dispatcher

    return decorate


def compile_kernel(func, signature: str, name: str, **options):
    """Compile ``func`` for ``signature`` now (one line first unless the cache holds it), then freeze it so a call
    with other types raises instead of silently compiling again."""
    dispatcher = jit(**options)(func)
    if not dispatcher._cache.has(signature, dispatcher):
        logger.warning(
            "transmamba: compiling the CPU scan kernel (%s) once, about %d s; later runs load it from %s",
            name, COMPILE_SECONDS[name.split()[0]], cache_dir(),
        )  # fmt: skip
    dispatcher.compile(signature)
    dispatcher.disable_compile()
    return dispatcher
