"""The ``dlcli`` command line: parse, call the core, report. No torch math here.

``main()`` turns expected failures (``DlcliError``) into one line on stderr and an exit code (2 for bad
usage, 1 for other failures, 130 for Ctrl-C); ``DLCLI_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dlcli import __version__, report
from dlcli.errors import DlcliError, UsageError

# click's base exception class, found through a public typer name (typer >= 0.20 vendors click privately).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="dlcli",
    help="The milestone models of deep learning, runnable: train, eval, attack and benchmark them.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

from dlcli.options import complete_recipe, DataDirOpt, DeviceOpt, JsonOpt, PrecisionOpt, RecipeArg, SeedOpt  # noqa: E402


def _version(value: bool) -> None:
    if value:
        print(f"dlcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """dlcli: perceptron, XOR, universal approximation, LeNet-5, AlexNet, ResNet, DeepFool and universal perturbations."""


# ------------------------------------------------------------------------------------------------ list


@app.command("list")
def list_cmd(json: JsonOpt = False) -> None:
    """List the recipes: name, model, data, kind of training, expected result, description.

    Example: `dlcli list --json | jq '.recipes[].name'`
    """
    from dlcli.config import load_recipe, recipe_names

    rows = []
    for name in recipe_names():
        try:
            r = load_recipe(name)
            rows.append({"name": name, "model": r.model.name, "data": r.data.source, "task": r.task,
                         "expected": ", ".join(f"{k} {v}" for k, v in r.expect.items()) or "-",
                         "description": r.description})
        except DlcliError as e:
            rows.append({"name": name, "model": "?", "data": "?", "task": "?", "expected": "-",
                         "description": f"invalid recipe: {e}"})
    if json:
        report.print_json({"recipes": rows})
    else:
        from dlcli.report.train import print_recipes

        print_recipes(rows)


# ------------------------------------------------------------------------------------------------ show


@app.command("show")
def show_cmd(
    recipe: RecipeArg,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override KEY=VALUE (repeatable).")] = None,
    json: JsonOpt = False,
) -> None:
    """Print a recipe with every default filled in, as YAML: exactly what a run would use.

    Examples: `dlcli show lenet`, `dlcli show lenet --set optim.lr=0.05`
    """
    from dlcli.config import apply_overrides, load_recipe, parse_set, to_yaml

    r = apply_overrides(load_recipe(recipe), dict(parse_set(s) for s in set_ or []))
    params = _parameter_count(r)
    if json:
        report.print_json({"recipe": r.to_dict(), "parameters": params})
        return
    sys.stdout.write(f"# {r.name}: model {r.model.name} with {params:,} parameters\n" if params is not None else "")
    sys.stdout.write(to_yaml(r))


def _parameter_count(recipe: Any) -> int | None:
    """Parameters of the recipe's model built from its arguments (builder defaults for the data's shape)."""
    from dlcli.registry import build_model

    try:
        model = build_model(recipe.model.name, **recipe.model.args)
    except (TypeError, ValueError):
        return None
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- train


def _resolve_recipe(
    recipe: str | None, resume: str | None, epochs: int | None, batch_size: int | None, lr: float | None,
    device: str | None, seed: int | None, precision: str | None, compile: bool | None,
    channels_last: bool | None, set_: list[str] | None,
) -> tuple[Any, Path | None]:
    from dlcli.config import apply_overrides, load_recipe, parse_set
    from dlcli.train import resume_recipe

    cli: dict[str, Any] = {}
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("optim.lr", lr), ("device", device),
                       ("seed", seed), ("precision", precision), ("compile", compile),
                       ("channels_last", channels_last)):
        if value is not None:
            cli[key] = value
    sets = dict(parse_set(s) for s in set_ or [])
    if resume:
        run_dir = Path(resume)
        base, done = resume_recipe(run_dir)
        if recipe and Path(recipe).stem != base.name:
            raise UsageError(f"--resume {run_dir} is a {base.name!r} run, not {recipe!r}")
        changed = sorted(k for k in [*cli, *sets] if k not in ("epochs", "device", "precision", "compile",
                                                               "channels_last"))
        if changed:
            raise UsageError(f"--resume keeps the run's recipe; only --epochs, --device, --precision, --compile "
                             f"and --channels-last may change (got {', '.join(changed)})")
        r = apply_overrides(base, cli, source="command line")
        if done >= r.epochs:
            raise DlcliError(f"--resume {run_dir}: this run already finished all {r.epochs} epochs; "
                             "pass --epochs N with a larger N to train further")
        return r, run_dir
    if not recipe:
        raise UsageError("missing RECIPE (see `dlcli list`), or --resume RUN_DIR")
    r = apply_overrides(load_recipe(recipe), cli, source="command line")
    r = apply_overrides(r, sets)
    return r, None


def _run_training(r: Any, run_dir: Path, resume: bool, data_dir: str | None, json: bool) -> dict[str, Any]:
    from dlcli.registry import TASKS
    from dlcli.report.train import TrainProgress
    from dlcli.runtime import Runtime
    from dlcli.train import train

    runtime = Runtime.from_config(r)
    progress_metric = getattr(TASKS.get(r.task), "progress_metric", None)
    cb = TrainProgress(enabled=not json and report.err.is_terminal, progress_metric=progress_metric)
    if json:
        cb.on_start = lambda header, total, done: None  # type: ignore[method-assign]
    result = train(r, runtime, run_dir, data_dir=data_dir, resume=resume, callbacks=cb)
    return result.to_dict()


@app.command("train")
def train_cmd(
    recipe: Annotated[Optional[str], typer.Argument(help="Recipe name (see `dlcli list`) or a YAML file.",
                                                    autocompletion=complete_recipe, show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Number of epochs (>= 1).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Training batch size.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (optim.lr).")] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    precision: PrecisionOpt = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last",
                                                          help="channels_last memory format.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Run folder (default runs/<recipe>-<time>).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override KEY=VALUE, e.g. optim.momentum=0.9.")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue the run in RUN_DIR from last.pt.")] = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Train a recipe; writes a run folder with config.yaml, metrics.jsonl, summary.json, last.pt, best.pt, curves.png.

    Examples:

    * `dlcli train lenet`
    * `dlcli train perceptron --json`
    * `dlcli train lenet --epochs 3 --device cuda --precision bf16 --compile`
    * `dlcli train lenet --set optim.lr=0.05 --set data.args.val_size=10000`
    * `dlcli train --resume runs/lenet-20260101-120000`
    """
    from dlcli.config import run_dir_for

    r, resume_dir = _resolve_recipe(recipe, resume, epochs, batch_size, lr, device, seed, precision, compile,
                                    channels_last, set_)
    run_dir = resume_dir or run_dir_for(r, out)
    result = _run_training(r, run_dir, resume_dir is not None, data_dir, json)
    if json:
        report.print_json(result)
    else:
        from dlcli.report.train import print_train_summary

        print_train_summary(result)


# ------------------------------------------------------------------------------------------------ eval


@app.command("eval")
def eval_cmd(
    path: Annotated[str, typer.Argument(help="A run folder (uses best.pt) or a checkpoint file.", show_default=False)],
    split: Annotated[str, typer.Option("--split", help="val | test")] = "test",
    device: DeviceOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Folder for figures (default RUN_DIR/eval-SPLIT).")] = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Rebuild the model from its checkpoint alone and report the recipe's metrics on its evaluation data.

    Examples: `dlcli eval runs/lenet-20260101-120000`, `dlcli eval runs/mlp-xor-.../best.pt --json`
    """
    from dlcli.checkpoint import load_checkpoint
    from dlcli.registry import TASKS
    from dlcli.runs import recipe_of
    from dlcli.runtime import Runtime
    from dlcli.tasks.base import TaskContext

    if split not in ("val", "test"):
        raise UsageError(f"--split {split!r}: expected val or test")
    ckpt = load_checkpoint(path)
    r = recipe_of(ckpt)
    runtime = Runtime.create(device or "auto", seed=r.seed)
    out_dir = Path(out) if out else Path(ckpt["path"]).parent / f"eval-{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    res = TASKS.get(r.task).evaluate(ckpt, TaskContext(r, runtime, data_dir), split, out_dir)
    payload = {"checkpoint": ckpt["path"], "recipe": r.name, "split": split, "metrics": res.metrics,
               "tables": [{"title": t, "columns": c, "rows": rows} for t, c, rows in res.tables],
               "figures": res.figures, **res.details}
    if json:
        report.print_json(payload)
    else:
        from dlcli.report.train import print_eval

        print_eval(f"{r.name} ({ckpt['path']}), {split}", {"metrics": res.metrics, "tables": res.tables,
                                                          "figures": res.figures})


# ---------------------------------------------------------------------------------------------- verify


@app.command("verify")
def verify_cmd(
    recipe: RecipeArg,
    device: DeviceOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Run folder (default runs/<recipe>-<time>).")] = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Train a recipe with its defaults and check its declared `expect`; exit 0 when met, 1 when not.

    Examples: `dlcli verify approx`, `dlcli verify lenet --device cuda`
    """
    from dlcli.config import run_dir_for

    r, _ = _resolve_recipe(recipe, None, None, None, None, device, None, None, None, None, None)
    if not r.expect:
        raise UsageError(f"recipe {r.name} declares no expected result (no 'expect' key) to verify")
    result = _run_training(r, run_dir_for(r, out), False, data_dir, json)
    met = all(e["met"] for e in result["expect"])
    if json:
        report.print_json({"recipe": r.name, "met": met, "expect": result["expect"], "run_dir": result["run_dir"],
                           "final": result["final"]})
    else:
        from dlcli.report.train import print_expectations

        print_expectations(result["expect"])
        report.out.print(f"{r.name}: {'expectation met' if met else 'EXPECTATION NOT MET'} "
                         f"(run folder {result['run_dir']})", markup=False, highlight=False)
    if not met:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------ sibling sub-commands


def _mount_extensions() -> None:
    from dlcli import cli_attack, cli_bench

    app.add_typer(cli_attack.attack_app, name="attack")
    cli_bench.register(app)


_mount_extensions()


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: one clear line for expected errors, never a traceback."""
    debug = os.environ.get("DLCLI_DEBUG", "") not in ("", "0")
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="dlcli")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except DlcliError as e:
        if debug:
            raise
        report.error_line(str(e))
        sys.exit(e.exit_code)
    except _ClickException as e:  # bad options: click's own message, one line
        if debug:
            raise
        report.error_line(e.format_message())
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        report.error_line("interrupted")
        sys.exit(130)
    except Exception as e:  # an unexpected bug: still one line, with how to see the traceback
        if type(e).__name__ == "Abort":  # click's Abort (end of input at a prompt)
            report.error_line("aborted")
            sys.exit(130)
        if debug:
            raise
        report.error_line(f"{type(e).__name__}: {e} (set DLCLI_DEBUG=1 for the traceback)")
        sys.exit(1)
