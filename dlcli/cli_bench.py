"""The ``dlcli bench`` command: parse options, call :mod:`dlcli.bench`, hand results to the report.

``dlcli.cli`` calls :func:`register` on its Typer app. Errors are raised as ``UsageError`` / ``DlcliError``
and turned into one line by ``dlcli.cli.main``. Importing this module does not import torch.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcli.config import PRECISIONS
from dlcli.errors import DlcliError, UsageError
from dlcli.options import seed_callback

# torch is imported inside the command only: `dlcli --help` and `dlcli list` must stay cheap.


class Mode(str, Enum):
    train = "train"
    infer = "infer"
    both = "both"


# the precisions that dlcli.config names (auto, fp32, tf32, bf16, fp16), as choices of --precision
Precision = Enum("Precision", {p: p for p in PRECISIONS}, type=str)  # type: ignore[misc]


class Data(str, Enum):
    synthetic = "synthetic"
    real = "real"


HELP = """Measure throughput, step-time percentiles, peak memory, FLOPs and MFU of a model (or all of them).

Warm-up steps are not timed; GPU steps are timed with CUDA events and synchronised. FLOPs are real FLOPs
(2 per multiply-add) counted by torch's FlopCounterMode; MFU is shown only for GPUs in the published-peak
table (dlcli.peaks). Progress goes to stderr; the table (or --json) to stdout.
"""

EPILOG = """Examples:

* `dlcli bench alexnet` (CPU or GPU; train and infer)
* `dlcli bench resnet18 --device cpu --batch-size 16 --steps 20 --detail`
* `dlcli bench alexnet --device cuda`
* `dlcli bench resnet50 --device cuda --mode train --precision bf16 --channels-last --compile --batch-size 256`
* `dlcli bench resnet50 --device cuda --auto-batch` (the largest batch that fits, stated)
* `dlcli bench lenet5 --data real --data-dir ../shared/data` (the real MNIST loader beside synthetic input)
* `dlcli bench all --steps 5 --json > bench.json` (one process per model)
* `dlcli bench lenet5,mlp --steps 5` (these models, one process each, as `all` does)
* `dlcli bench all --steps 5 --csv runs/bench.csv` (appends rows; the header is written once)

`--json` prints one JSON document on stdout: a list with one flat object per model, mode and input kind;
each object also carries the environment (device, torch, CUDA, cuDNN, TF32, threads, dlcli version).
"""


def _complete_model(incomplete: str) -> list[str]:
    from dlcli.registry import list_models

    return [m for m in [*list_models(), "all"] if m.startswith(incomplete)]


def bench(
    model: Annotated[
        str,
        typer.Argument(
            help="A registered model, 'all', or several separated by commas (one process per model).",
            autocompletion=_complete_model,
        ),
    ],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", "-b", help="Samples per step [default: 8 on CPU, 128 on CUDA].")
    ] = None,
    mode: Annotated[Mode, typer.Option(help="What to time: a training step, a forward pass, or both.")] = Mode.both,
    precision: Annotated[Precision, typer.Option(help="fp32, tf32 (CUDA), bf16 or fp16 (CUDA) autocast; auto: bf16 "
                                                  "where the hardware runs it natively, else fp32.")] = (
        Precision.fp32  # type: ignore[attr-defined]
    ),
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory format for model and input.")] = (
        False
    ),
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (compiled in warm-up).")] = False,
    compile_mode: Annotated[Optional[str], typer.Option(
        "--compile-mode", help="torch.compile with this mode (implies --compile): default, reduce-overhead (CUDA "
        "graphs: for nets whose steps wait on kernel launches), max-autotune, max-autotune-no-cudagraphs.")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Untimed steps first [default: 2 on CPU, 10 on CUDA].")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Timed steps [default: 10 on CPU, 50 on CUDA].")] = None,
    input_size: Annotated[
        Optional[str], typer.Option("--input-size", help="One sample's shape C,H,W [default: the model's own].")
    ] = None,
    data: Annotated[
        Data, typer.Option(help="synthetic: one random batch on the device; real: also the MNIST/CIFAR-10 loader.")
    ] = Data.synthetic,
    data_dir: Annotated[
        Optional[str],
        typer.Option("--data-dir", help="Folder with MNIST/ and CIFAR-10 (cifar-10-batches-py/ or cifar10-jpg/) "
                     "[env DLCLI_DATA, ~/.cache/dlcli]."),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="DataLoader workers for --data real [default: min(4, CPUs)].")
    ] = None,
    detail: Annotated[bool, typer.Option("--detail", help="Also time data / forward / backward / optimizer.")] = False,
    auto_batch: Annotated[
        bool, typer.Option("--auto-batch", help="CUDA: search the largest batch that fits, and say which.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for weights and synthetic input.", callback=seed_callback)] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON list on stdout instead of tables.")] = False,
    csv_file: Annotated[
        Optional[Path], typer.Option("--csv", help="Append one row per result to this CSV file.")
    ] = None,
) -> None:
    from dlcli.bench import BenchSpec, append_csv, parse_input_size, run_all, run_benchmark, validate_spec
    from dlcli.bench.results import check_csv
    from dlcli.registry import list_models, model_meta
    from dlcli.report import bench as bench_report  # the report package is the only one importing rich
    from dlcli.report import print_json
    from dlcli.runtime import resolve_device, validate_precision

    if csv_file is not None:
        check_csv(csv_file)  # a folder there would fail only after every benchmark had run
    spec = BenchSpec(
        model=model,
        modes=("infer", "train") if mode is Mode.both else (mode.value,),
        device=device,
        batch_size=batch_size,
        precision=precision.value,
        channels_last=channels_last,
        compile=compile_mode if compile_mode is not None else compile,
        warmup=warmup,
        steps=steps,
        input_shape=parse_input_size(input_size) if input_size is not None else None,
        data=data.value,
        data_dir=data_dir,
        workers=workers,
        detail=detail,
        auto_batch=auto_batch,
        seed=seed,
    )
    failures = []
    if model == "all" or "," in model:
        if spec.input_shape is not None:
            raise UsageError(f"--input-size applies to one model; drop it when benchmarking {model}")
        names = list_models() if model == "all" else [m.strip() for m in model.split(",") if m.strip()]
        if not names:
            raise UsageError(f"no model named in {model!r}; valid names: {', '.join(list_models())}, or all")
        for name in names:
            model_meta(name)  # an unknown name: one UsageError listing the valid ones, before any child starts
        validate_spec(spec)
        validate_precision(spec.precision, resolve_device(spec.device))  # fail once here, not once per model
        results, failures = run_all(names, spec, on_line=bench_report.progress)
    else:
        results = run_benchmark(spec, progress=bench_report.progress)

    if json_out:
        print_json([r.to_dict() for r in results])
    else:
        bench_report.print_results(results, detail=detail)
    if csv_file is not None and results:
        append_csv(csv_file, results)
        bench_report.progress(f"appended {len(results)} row(s) to {csv_file}")
    if failures:
        bench_report.print_failures(failures)
        raise DlcliError(f"{len(failures)} of {len(names)} model(s) failed: {', '.join(f.model for f in failures)}")


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the dlcli Typer app."""
    app.command("bench", help=HELP, epilog=EPILOG)(bench)
