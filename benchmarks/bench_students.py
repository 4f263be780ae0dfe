"""Side-by-side CPU benchmark: Mamba students vs a DeiT-Tiny and `transformers`' MambaModel of the same size.

Every configuration (model, scan backend, resolution, batch, forward or forward+backward) runs in a fresh
subprocess, so its peak memory is its own (peak RSS above the RSS after the model and inputs exist) and a
configuration that runs out of time or memory is reported as "timeout"/"OOM" instead of stalling the sweep.
Times are medians over a few repeats after one warm-up; ratios are to DeiT-Tiny at the same resolution and batch,
measured in the same run, because absolute times on a shared machine are noisy.

    python benchmarks/bench_students.py --quick                  # smoke test, ~1 minute
    python benchmarks/bench_students.py                          # batch 8 forward, 224/448/896 px
    python benchmarks/bench_students.py --backends numba --batch-sizes 1 8 --backward --include-1792 \
        --json benchmarks/results.json
    python benchmarks/bench_students.py --remote-code --models pmamba-t vim-t --backends numba \
        --resolutions 224 896 --batch-sizes 1 8      # installed class vs an exported folder's code, A/B interleaved

With ``--remote-code`` every student case also runs from a saved model folder's own copy of the code (what
``trust_remote_code=True`` loads from the Hub), right after the installed class's run of the same case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import transformers
from transformers import DeiTConfig, DeiTModel, MambaConfig, MambaModel
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transmamba.model_cards.results import describe_machine
from transmamba.modeling_transmamba import (
    TransMambaConfig,
    TransMambaForImageClassification,
    TransVMambaConfig,
    TransVMambaForImageClassification,
)
from transmamba.modeling_transmamba.selective_scan import resolve_backend

BASELINE = "deit-t"
STUDENTS = ("pmamba-t", "vim-t", "vmamba-t")
MODELS = (BASELINE, "deit-s", "mamba-hf", *STUDENTS)
DEIT_WIDTHS = {"deit-t": (192, 3), "deit-s": (384, 6)}  # hidden size, heads
RESULT_PREFIX = "BENCH_RESULT "
PATCH = 16


@dataclass(frozen=True)
class Case:
    """One measured configuration; ``backend`` is the students' scan backend ("-" for the other models)."""

    model: str
    backend: str
    resolution: int
    batch: int
    backward: bool
    folder: str = ""  # a saved model folder: the student runs that folder's remote code, not the installed class

    @property
    def label(self) -> str:
        name = self.model if self.backend == "-" else f"{self.model} [{self.backend}]"
        return f"{name} (remote code)" if self.folder else name

    @property
    def mode(self) -> str:
        return "fwd+bwd" if self.backward else "fwd"


@dataclass
class Result:
    case: Case
    status: str  # "ok", "timeout", "OOM" or "error"
    median_ms: float | None = None
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: float | None = None  # median process CPU time of the timed runs; with 1 thread, robust to other load
    peak_mb: float | None = None
    params_m: float | None = None
    detail: str = ""
    busy_cores_before: float | None = None  # other processes' CPU use just before the case started
    load_1m: float | None = None  # the 1-minute load average (as `uptime` shows it) when the case started


# ----------------------------------------------------------------------------------------------- worker side


def _build(case: Case):
    """The model and its keyword inputs for one case; all models see the same token count (+ class tokens)."""
    grid = case.resolution // PATCH
    if case.model in DEIT_WIDTHS:
        width, heads = DEIT_WIDTHS[case.model]
        config = DeiTConfig(
            hidden_size=width,
            num_hidden_layers=12,
            num_attention_heads=heads,
            intermediate_size=4 * width,
            image_size=case.resolution,
            patch_size=PATCH,
            attn_implementation="sdpa",
        )
        model = DeiTModel(config, add_pooling_layer=False)
        inputs = {"pixel_values": torch.randn(case.batch, 3, case.resolution, case.resolution)}
    elif case.model == "mamba-hf":
        config = MambaConfig(
            vocab_size=16, hidden_size=192, num_hidden_layers=24, state_size=16, expand=2, use_cache=False
        )
        model = MambaModel(config)
        inputs = {"inputs_embeds": torch.randn(case.batch, grid * grid + 1, 192), "use_cache": False}
    elif case.folder:  # built like the installed class below (fresh weights), so only the code differs
        remote = remote_class(case.folder)
        model = remote(remote.config_class.from_pretrained(case.folder))
        inputs = {"pixel_values": torch.randn(case.batch, 3, case.resolution, case.resolution)}
    elif case.model == "vmamba-t":  # hierarchical: 4x4 stem, four stages
        config = TransVMambaConfig.from_preset(case.model, image_size=case.resolution, scan_backend=case.backend)
        model = TransVMambaForImageClassification(config)
        inputs = {"pixel_values": torch.randn(case.batch, 3, case.resolution, case.resolution)}
    else:
        config = TransMambaConfig.from_preset(case.model, image_size=case.resolution, scan_backend=case.backend)
        model = TransMambaForImageClassification(config)
        inputs = {"pixel_values": torch.randn(case.batch, 3, case.resolution, case.resolution)}
    return model.eval(), inputs


def remote_class(folder: str):
    """The folder's own copy of the classifier class, as trust_remote_code loads it (our installed package has
    registered its classes with the Auto classes, so AutoModel would resolve to those instead)."""
    return get_class_from_dynamic_module("modeling_transmamba.TransMambaForImageClassification", folder)


def save_remote_folder(case: Case, root: str) -> str:
    """A saved student folder (config, weights, code) for ``case``; the worker runs its code (and config)."""
    folder = os.path.join(root, f"{case.model}-{case.resolution}-{case.backend}")
    if not os.path.isdir(folder):
        config = TransMambaConfig.from_preset(case.model, image_size=case.resolution, scan_backend=case.backend)
        TransMambaForImageClassification(config).save_pretrained(folder)
    return folder


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _reset_peak_rss() -> None:
    """Restart the peak-RSS count (Linux >= 4.0), so one-off costs before it are not charged to the model."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _prime_kernels(case: Case) -> None:
    """Compile (or load from cache) a student's scan kernels on a one-layer copy, outside time and memory."""
    if case.model not in STUDENTS:
        return
    if case.model == "vmamba-t":
        config = TransVMambaConfig.from_preset(case.model, image_size=32, depths=[1] * 4, scan_backend=case.backend)
        model = TransVMambaForImageClassification(config)
    else:
        config = TransMambaConfig.from_preset(case.model, image_size=32, num_hidden_layers=1, scan_backend=case.backend)
        model = (remote_class(case.folder) if case.folder else TransMambaForImageClassification)._from_config(config)
    out = model(torch.randn(1, 3, 32, 32))
    if case.backward:
        out.logits.sum().backward()


def run_case(case: Case, threads: int, repeats: int, budget_s: float) -> Result:
    """Build, warm up once, then time up to ``repeats`` runs while the estimated time stays within ``budget_s``."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, inputs = _build(case)
    params = sum(p.numel() for p in model.parameters()) / 1e6

    cpu_times: list[float] = []

    def step(batch: dict) -> float:
        """Wall ms of one run; its process CPU ms (all threads) goes to ``cpu_times``."""
        cpu_start, start = time.process_time(), time.perf_counter()
        if case.backward:
            out = model(**batch)
            out[0].float().mean().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                model(**batch)
        wall = (time.perf_counter() - start) * 1000
        cpu_times.append((time.process_time() - cpu_start) * 1000)
        return wall

    _prime_kernels(case)
    _reset_peak_rss()
    baseline = _current_rss_mb()
    # First-call costs (thread pools, scan-order tables) on one sample: the slowest cases then cost ~1 run less.
    warm_ms = step({k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
    times: list[float] = []
    spent = warm_ms / 1000
    while len(times) < repeats and (not times or spent + statistics.median(times) / 1000 <= budget_s):
        times.append(round(step(inputs), 1))
        spent += times[-1] / 1000
    return Result(
        case=case,
        status="ok",
        median_ms=statistics.median(times),
        times_ms=times,
        cpu_ms=round(statistics.median(cpu_times[1:]), 1),
        peak_mb=max(0.0, _peak_rss_mb() - baseline),
        params_m=round(params, 2),
        detail=f"warm-up (batch 1) {warm_ms:.0f} ms{_scan_used(model)}",
    )


def _scan_used(model) -> str:
    """For a student: the scan backends its own dispatcher module used (proves the remote copy ran numba)."""
    package = type(model).__module__.rsplit(".", 1)[0]
    dispatcher = sys.modules.get(package + ".selective_scan")
    return f"; {type(model).__module__}: {sorted(dispatcher._announced)}" if dispatcher is not None else ""


def _worker(payload: str) -> int:
    spec = json.loads(payload)
    case = Case(**spec["case"])
    try:
        result = run_case(case, spec["threads"], spec["repeats"], spec["budget_s"])
    except Exception as error:  # torch reports allocation failures as RuntimeError
        oom = isinstance(error, MemoryError) or "memory" in str(error).lower()
        result = Result(case=case, status="OOM" if oom else "error", detail=str(error).splitlines()[0][:200])
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------- driver side


def numba_available() -> str | None:
    """None if the numba scan backend resolves, else the reason it does not."""
    try:
        resolve_backend("numba", torch.device("cpu"))
    except (ImportError, ValueError) as error:
        return str(error)
    return None


def _limit_memory(limit_gb: float):
    """Cap the worker's address space so a runaway configuration fails alone instead of waking the OOM killer."""

    def apply() -> None:
        os.setsid()
        if limit_gb > 0:
            size = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(max_wait_s: float, busy_cores: float = 0.3) -> float:
    """Wait (up to ``max_wait_s``) until other processes use < ``busy_cores`` cores; return the last reading.

    The machine is shared: a configuration started while others' jobs run measures them too, and OpenMP threads
    that wait at barriers for a preempted sibling can inflate a run many times over.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, total0 = _cpu_ticks()
        time.sleep(1.0)
        busy1, total1 = _cpu_ticks()
        load = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
        if load < busy_cores or time.monotonic() >= deadline:
            return load


def measure(case: Case, args: argparse.Namespace) -> Result:
    """Run one case in a fresh subprocess with a wall-clock timeout and an address-space cap."""
    payload = json.dumps(
        {"case": asdict(case), "threads": args.threads, "repeats": args.repeats, "budget_s": args.timeout / 2}
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    env.setdefault("HF_HUB_OFFLINE", "1")  # transformers may look for hub kernels; never wait on the network
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", payload],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_limit_memory(args.memory_limit_gb),
    )
    try:
        stdout, stderr = process.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return Result(case=case, status="timeout", detail=f"> {args.timeout:.0f} s")
    cap = f"allocation failed under the {args.memory_limit_gb:g} GB address-space cap"
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            data["case"] = case
            if data["status"] == "OOM" and args.memory_limit_gb > 0:
                data["detail"] = cap
            return Result(**data)
    tail = stderr.strip().splitlines()[-1][:200] if stderr.strip() else ""
    killed = process.returncode in (-signal.SIGKILL, 137)
    oom = killed or "memory" in stderr.lower() or "bad_alloc" in stderr
    return Result(case=case, status="OOM" if oom else "error", detail=tail or f"exit code {process.returncode}")


def plan(args: argparse.Namespace) -> list[Case]:
    cases = []
    for backward in [False, True] if args.backward else [False]:
        for batch in args.batch_sizes:
            for resolution in args.resolutions:
                for model in args.models:
                    backends = args.backends if model in STUDENTS else ["-"]
                    for backend in backends:
                        case = Case(model, backend, resolution, batch, backward)
                        cases.append(case)
                        if args.remote_code and model in STUDENTS:  # A/B: the folder's code right after
                            cases.append(replace(case, folder=save_remote_folder(case, args.remote_root)))
    return cases


def _cells(result: Result, baseline: Result | None) -> list[str]:
    """Wall ms (median, best) and CPU ms with their ratios to DeiT-Tiny, peak MB, runs (or why there are none)."""
    if result.status != "ok":
        return [result.status, "", "", "", "", "", "", result.detail]
    best = min(result.times_ms)
    ratios = ["", "", ""]
    if baseline is not None and baseline.status == "ok":
        ratios = [
            f"{result.median_ms / baseline.median_ms:.2f}x",
            f"{best / min(baseline.times_ms):.2f}x",
            f"{result.cpu_ms / baseline.cpu_ms:.2f}x",
        ]
    return [
        f"{result.median_ms:,.0f}",
        ratios[0],
        f"{best:,.0f}",
        ratios[1],
        f"{result.cpu_ms:,.0f}",
        ratios[2],
        f"{result.peak_mb:,.0f}",
        str(len(result.times_ms)),
    ]


def comparable(case: Case) -> tuple[int, int, bool]:
    """What a ratio must hold fixed: resolution, batch and mode."""
    return case.resolution, case.batch, case.backward


def markdown_table(results: list[Result]) -> str:
    """One row per configuration; ratios are to DeiT-Tiny's median (best) at the same resolution, batch, mode."""
    baselines = {comparable(r.case): r for r in results if r.case.model == BASELINE}
    lines = [
        "| mode | batch | px | tokens | model | ms (median) | vs DeiT | ms (best) | vs DeiT | CPU ms | vs DeiT "
        "| peak MB | runs |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.case
        tokens = (c.resolution // PATCH) ** 2
        cells = [c.mode, c.batch, c.resolution, tokens, c.label, *_cells(r, baselines.get(comparable(c)))]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def remote_ratios(results: list[Result]) -> str:
    """Remote-code folder / installed class, per case run both ways (median and best wall time, CPU time)."""
    installed = {replace(r.case, folder=""): r for r in results if not r.case.folder and r.status == "ok"}
    lines = [
        "| mode | batch | px | model | remote / installed (median) | (best) | (CPU) |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        base = installed.get(replace(r.case, folder=""))
        if r.case.folder and r.status == "ok" and base is not None:
            c = r.case
            cells = [c.mode, c.batch, c.resolution, f"{c.model} [{c.backend}]", f"{r.median_ms / base.median_ms:.3f}",
                     f"{min(r.times_ms) / min(base.times_ms):.3f}", f"{r.cpu_ms / base.cpu_ms:.3f}"]  # fmt: skip
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def reprint(path: str) -> str:
    """The machine line and table of a results file written with --json."""
    with open(path) as handle:
        data = json.load(handle)
    results = [Result(**dict(r, case=Case(**r["case"]))) for r in data["results"]]
    remote = "\n" + remote_ratios(results) + "\n" if any(r.case.folder for r in results) else ""
    return f"{data['machine']}\n\n{markdown_table(results)}\n{remote}"


def machine_line(threads: int) -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {describe_machine()}, {threads} threads, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}, fp32"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--backends", nargs="+", default=["sequential", "numba"], help="students' scan backends")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[224, 448, 896])
    parser.add_argument("--include-1792", action="store_true", help="add 1792 px (slow; meant for fast kernels)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8])
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (default 3)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per configuration (default 240)")
    parser.add_argument(
        "--memory-limit-gb", type=float, default=12.0, help="address-space cap per configuration, 0 = none"
    )
    parser.add_argument(
        "--settle", type=float, default=20.0, help="max seconds to wait for an idle machine before each case"
    )
    parser.add_argument(
        "--remote-code", action="store_true", help="also run each student from a saved folder's remote code (A/B)"
    )
    parser.add_argument("--remote-root", default="/tmp/transmamba-bench-folders", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke test: 64/128 px, batch 2, one run each")
    parser.add_argument("--json", help="also write the results to this JSON file (input of plot_resolution.py)")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="only print the table of earlier --json files")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.table:
        for path in args.table:
            print(reprint(path))
        return 0
    if args.threads < 1 or args.repeats < 1 or args.timeout <= 0:
        raise ValueError("--threads and --repeats must be >= 1 and --timeout > 0.")
    if any(r % PATCH for r in args.resolutions):
        raise ValueError(f"Resolutions must be multiples of the patch size {PATCH}; got {args.resolutions}.")
    if args.quick:
        args.resolutions, args.batch_sizes, args.repeats = [64, 128], [2], 1
    elif args.include_1792 and 1792 not in args.resolutions:
        args.resolutions.append(1792)
    if "numba" in args.backends and (reason := numba_available()) is not None:
        print(f"skipping the numba backend: {reason}", file=sys.stderr)
        args.backends = [b for b in args.backends if b != "numba"]
    if not args.backends and any(m in STUDENTS for m in args.models):
        raise ValueError("No usable scan backend left; pass --backends sequential.")

    header = machine_line(args.threads)
    print(header, flush=True)
    results = []
    for case in plan(args):
        others = wait_for_quiet(args.settle)
        load = os.getloadavg()[0]
        result = measure(case, args)
        result.busy_cores_before = round(others, 2)
        result.load_1m = round(load, 2)
        results.append(result)
        shown = f"{result.median_ms:,.0f} ms, peak {result.peak_mb:,.0f} MB" if result.status == "ok" else result.detail
        print(
            f"  {case.mode} b{case.batch} {case.resolution}px {case.label}: {result.status} {shown} "
            f"(other load {others:.1f} cores before, load average {load:.2f})",
            flush=True,
        )
    print()
    print(markdown_table(results))
    if args.remote_code:
        print("\n" + remote_ratios(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": header, "results": [asdict(r) for r in results]}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
