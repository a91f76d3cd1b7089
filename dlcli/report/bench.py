"""Tables for ``dlcli bench``: an environment header, one row per model / mode / input, and notes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from dlcli import report

if TYPE_CHECKING:  # the report package never needs torch at import time
    from dlcli.bench import BenchResult, ChildFailure, Environment

FLOPS_NOTE = "FLOPs are real FLOPs (2 per multiply-add) counted by torch FlopCounterMode; train = forward + backward"
LOADER_BOUND = 0.9  # real input below this share of synthetic throughput: the input pipeline limits


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    """61100840 -> '61.10 M' (parameters)."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def header_rows(env: "Environment") -> dict[str, Any]:
    tf32 = f"matmul {'on' if env.tf32_matmul else 'off'}, cuDNN {'on' if env.tf32_cudnn else 'off'}"
    if not env.device.startswith("cuda"):
        tf32 += " (CUDA only)"
    return {
        "device": f"{env.device} ({env.device_name})",
        "torch": env.torch,
        "CUDA / cuDNN": f"{env.cuda or '-'} / {env.cudnn or '-'}",
        "TF32": tf32,
        "CPU": f"{env.cpu_threads} torch threads, {env.cpu_count} CPUs, load average "
        f"{'-' if env.load_average is None else env.load_average} at start",
        "dlcli": env.dlcli,
        "python": f"{env.python} on {env.platform}",
    }


def _num(x: float | None) -> str:
    """Compact numbers for the table: 3 significant figures, thousands separators above 1000."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def results_table(results: Sequence["BenchResult"], *, detail: bool = False) -> Any:
    real = any(r.data == "real" for r in results)
    columns = ["model", "mode"] + (["data"] if real else []) + ["batch", "samples/s", "p50 ms", "p90 ms", "p99 ms"]
    if detail:
        columns += (["data ms"] if real else []) + ["fwd ms", "bwd ms", "opt ms"]
    columns += ["peak mem", "params", "GFLOP/sample", "TFLOP/s", "MFU"]
    rows = []
    for r in results:
        batch = f"{r.batch_size} (auto)" if r.auto_batch else str(r.batch_size)
        row: list[Any] = [r.model, r.mode] + ([r.data] if real else []) + [batch]
        row += [_num(v) for v in (r.samples_per_s, r.step_ms_p50, r.step_ms_p90, r.step_ms_p99)]
        if detail:
            row += [_num(v) for v in ([r.data_ms] if real else []) + [r.forward_ms, r.backward_ms, r.optimizer_ms]]
        row += [
            human_bytes(r.peak_memory_bytes),
            human_count(r.params),
            _num(r.flops_per_sample / 1e9),
            _num(r.achieved_tflops),
            _pct(r.mfu),
        ]
        rows.append(row)
    first = results[0] if results else None
    title = "dlcli bench"
    if first is not None:
        opts = [first.precision] + (["channels_last"] if first.channels_last else [])
        opts += [f"compile {first.compile}" if isinstance(first.compile, str) else "compile"] if first.compile else []
        title += f" on {first.env.device} ({first.env.device_name}), {', '.join(opts)}"
    t = report.table(title, columns, rows, caption=FLOPS_NOTE)
    text_columns = {"model", "mode", "data"}
    for col in t.columns:
        col.no_wrap = True
        if col.header not in text_columns:
            col.justify = "right"
    return t


def notes(results: Sequence["BenchResult"]) -> list[str]:
    """Lines that explain the table: memory and MFU conventions, and input-pipeline bottlenecks."""
    lines: list[str] = []
    if not results:
        return lines
    kinds = {r.memory_kind for r in results}
    if "cuda_max_memory_allocated" in kinds:
        lines.append("peak mem: torch.cuda.max_memory_allocated during the benchmark (model, optimizer, activations)")
    if "cpu_peak_rss" in kinds:
        lines.append(
            "peak mem: peak resident memory of the process during the benchmark, including Python and torch "
            "themselves (baseline in the JSON as memory_baseline_bytes); DataLoader workers not included"
        )
    if "cpu_peak_rss_process" in kinds:
        lines.append(
            "peak mem: the process-wide peak since start (this system cannot reset the peak between "
            "benchmarks); run one model per process for an honest figure"
        )
    with_peak = [r for r in results if r.peak_tflops]
    for r in with_peak[:1]:
        lines.append(
            f"MFU = achieved TFLOP/s / {r.peak_tflops:g} TFLOP/s, the published dense {r.precision} peak of the "
            f"{r.peak_device} (dlcli.peaks)"
        )
    if len(with_peak) < len(results):
        where = results[0].env.device_name if results else "this device"
        lines.append(f"MFU '-': no published peak for {where} in dlcli.peaks, so none is shown (none is invented)")
    synthetic = {(r.model, r.mode): r for r in results if r.data == "synthetic"}
    for r in results:
        ref = synthetic.get((r.model, r.mode))
        if r.data == "real" and ref is not None and ref.samples_per_s > 0:
            share = r.samples_per_s / ref.samples_per_s
            verdict = (
                "the input pipeline is the bottleneck (try more --workers)"
                if share < LOADER_BOUND
                else "the input pipeline keeps up"
            )
            lines.append(
                f"{r.model} {r.mode}: real input reaches {share:.0%} of synthetic throughput "
                f"({r.samples_per_s:.1f} vs {ref.samples_per_s:.1f} samples/s): {verdict}"
            )
    env = results[0].env
    if env.load_average is not None and env.load_average > 0.5 * env.cpu_count:
        lines.append(
            f"the machine was busy when the benchmark started (load average {env.load_average} on "
            f"{env.cpu_count} CPUs): CPU timings include waiting for other processes"
        )
    if any(r.steps < 5 for r in results):
        lines.append("fewer than 5 timed steps: p90 and p99 are close to the maximum of a handful of samples")
    return lines


def print_results(results: Sequence["BenchResult"], *, detail: bool = False) -> None:
    """Header, table and notes on stdout (the report itself; progress went to stderr)."""
    if not results:
        report.note("no benchmark results")
        return
    report.out.print(report.key_value_table("environment", header_rows(results[0].env)))
    t = results_table(results, detail=detail)
    console = report.out
    if console.is_terminal:
        console.print(t)
    else:  # a file or a pipe: print at the table's natural width, never truncated
        from rich.measure import Measurement

        natural = Measurement.get(console, console.options.update_width(10_000), t).maximum
        saved = getattr(console, "_width", None)  # Console.print cannot exceed the console's width
        console.width = max(console.width, natural)
        try:
            console.print(t)
        finally:
            console._width = saved
    for line in notes(results):
        report.out.print(line, soft_wrap=True, markup=False)


def print_failures(failures: Sequence["ChildFailure"]) -> None:
    for f in failures:
        report.error_line(f"{f.model}: {f.message}")


def progress(message: str) -> None:
    """A progress line on stderr (never mixed into --json output)."""
    report.note(message)
