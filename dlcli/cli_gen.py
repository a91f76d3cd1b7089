"""``dlcli sample`` and the generative-model options of ``dlcli eval``: parse, call the core, report.

``dlcli.cli`` calls :func:`register` on its Typer app. ``FeaturesOpt`` is the ``--features RUN`` option that
``dlcli eval`` passes on as ``TaskContext.eval_options["features"]`` (see :func:`eval_options`). Errors are
raised as ``UsageError`` / ``DlcliError`` and turned into one line by ``dlcli.cli.main``. Importing this
module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dlcli.options import DeviceOpt, JsonOpt, seed_callback

FeaturesOpt = Annotated[Optional[str], typer.Option(
    "--features", help="GAN runs: the classify run (or checkpoint) whose penultimate features give the Fréchet "
                       "LeNet distance and whose predictions give class coverage [default: the newest lenet / "
                       "lenet-fashion run under runs/].")]


def eval_options(features: str | None) -> dict[str, Any]:
    """What ``dlcli eval`` hands a task's ``evaluate`` in ``TaskContext.eval_options``."""
    return {"features": features} if features else {}


EPILOG = """Examples:

* `dlcli sample runs/dcgan-mnist-20260101-120000` (64 samples, seed 0, into RUN/samples/)
* `dlcli sample runs/gan-mnist-20260101-120000 --n 100 --seed 3 --out digits.png`
* `dlcli sample runs/dcgan-fashion-20260101-120000/best.pt --json | jq -r .path`
"""


def sample(
    path: Annotated[str, typer.Argument(help="A GAN run folder (uses best.pt) or a checkpoint file.",
                                        show_default=False)],
    n: Annotated[int, typer.Option("--n", help="Number of samples in the grid.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the noise: the same seed gives the same images.",
                                      callback=seed_callback)] = 0,
    out: Annotated[Optional[str], typer.Option("--out", help="PNG file to write, or an existing folder to write "
                                                            "sample-nN-seedS.png into [default: "
                                                            "RUN/samples/sample-nN-seedS.png].")] = None,
    device: DeviceOpt = None,
    json: JsonOpt = False,
) -> None:
    """Draw samples from a trained generator (rebuilt from its checkpoint alone) and write them as one grid."""
    from dlcli import report
    from dlcli.checkpoint import load_checkpoint
    from dlcli.errors import UsageError
    from dlcli.runtime import resolve_device
    from dlcli.tasks.gan_eval import check_sample_out, sample_grid

    if n < 1:  # before reading any file: the cheapest clear line
        raise UsageError(f"--n {n}: expected the number of samples, an integer >= 1")
    check_sample_out(Path(out) if out else None)
    ckpt = load_checkpoint(path)
    res = sample_grid(ckpt, n, seed, resolve_device(device), Path(out) if out else None)
    if json:
        report.print_json(res)
    else:
        report.out.print(f"{res['n']} samples (seed {res['seed']}) from {res['recipe']}: {res['path']}",
                         markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``sample`` to the dlcli Typer app."""
    app.command("sample", epilog=EPILOG)(sample)
