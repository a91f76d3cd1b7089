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

from dlcli import __version__, download, report
from dlcli.errors import DlcliError, UsageError
from dlcli.paths import first_missing, prune_empty, refuse_file_in_the_way

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
            r = load_recipe(name, check_builders=False)  # no registries: `dlcli list` never imports torch
            source = r.data.source if r.data is not None else (f"env {r.env.id}" if r.env is not None else "-")
            rows.append({"name": name, "model": r.model.name, "data": source, "task": r.task,
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
        base, done, step = resume_recipe(run_dir)
        if recipe and Path(recipe).stem != base.name:
            raise UsageError(f"--resume {run_dir} is a {base.name!r} run, not {recipe!r}")
        changed = sorted(k for k in [*cli, *sets] if k not in ("epochs", "device", "precision", "compile",
                                                               "channels_last"))
        if changed:
            raise UsageError(f"--resume keeps the run's recipe; only --epochs, --device, --precision, --compile "
                             f"and --channels-last may change (got {', '.join(changed)})")
        r = apply_overrides(base, cli, source="command line")
        finished = step == 0 and done >= base.epochs
        if not finished and r.epochs != base.epochs:
            raise UsageError(f"--resume {run_dir}: the run stopped in epoch {done + 1} of {base.epochs}; resume it "
                             "without --epochs first (--epochs extends finished runs only)")
        if finished and r.epochs <= done:
            raise DlcliError(f"--resume {run_dir}: this run already finished all {base.epochs} epochs; pass --epochs "
                             "N with a larger N to train further (a new learning-rate schedule over the added "
                             "epochs)")
        return r, run_dir
    if not recipe:
        raise UsageError("missing RECIPE (see `dlcli list`), or --resume RUN_DIR")
    r = apply_overrides(load_recipe(recipe), cli, source="command line")
    r = apply_overrides(r, sets)
    return r, None


_RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt")  # what marks a run folder


def _check_new_run_folder(out: str | None) -> None:
    """``train``/``verify --out DIR``: a new or empty folder. Another run's files there would mix two runs
    (its config.yaml overwritten, its checkpoints kept), a folder that contradicts itself."""
    if not out:
        return
    refuse_file_in_the_way("--out", out, "a folder for the run (a new or empty one)", folder=True)
    p = Path(out)
    found = [name for name in _RUN_FILES if (p / name).exists()] if p.is_dir() else []
    if found:
        other = f"or `dlcli train --resume {out}` to continue it" if "last.pt" in found else "or remove this one"
        raise UsageError(f"--out {out} already holds a run ({', '.join(found)}); pick another folder, {other}")


def _run_training(r: Any, out: str | None, resume_dir: Path | None, data_dir: str | None,
                  json: bool) -> dict[str, Any]:
    from dlcli.config import run_dir_for
    from dlcli.report.train import TrainProgress
    from dlcli.runtime import Runtime
    from dlcli.train import train

    runtime = Runtime.from_config(r)
    try:
        # rank 0 alone chooses the run folder (a timestamp), and every rank uses that one
        run_dir = runtime.broadcast_object(resume_dir or run_dir_for(r, out) if runtime.is_primary else None)
        cb = TrainProgress(enabled=not json and report.err.is_terminal)
        if json:
            cb.on_start = lambda header, total, done: None  # type: ignore[method-assign]
        result = train(r, runtime, Path(run_dir), data_dir=data_dir, resume=resume_dir is not None, callbacks=cb)
    finally:
        runtime.close()
    return result.to_dict() | {"primary": runtime.is_primary}


def _torchrun(nproc: int, argv: list[str]) -> None:
    """``dlcli train ... --nproc-per-node N`` -> ``python -m torch.distributed.run --nproc-per-node N -m dlcli
    train ...``: torchrun's own launcher (rendezvous, restarts, multi-node flags), replacing this process."""
    if nproc < 1:
        raise UsageError(f"--nproc-per-node {nproc}: expected an integer >= 1")
    if os.environ.get("WORLD_SIZE"):
        raise UsageError("--nproc-per-node inside a torchrun process: give it to torchrun or to dlcli, not both")
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if a.startswith("--nproc-per-node="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "dlcli", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


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
    out: Annotated[Optional[str], typer.Option(
        "--out", help="Run folder, new or empty (default runs/RECIPE-YYYYmmdd-HHMMSS).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override KEY=VALUE, e.g. optim.momentum=0.9.")] = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Continue the run in RUN_DIR from last.pt. With --epochs N on a finished run: train "
                         "the added epochs under a new learning-rate schedule spanning just those.")] = None,
    nproc_per_node: Annotated[Optional[int], typer.Option(
        "--nproc-per-node", help="Run N processes on this machine with torchrun (DDP: NCCL on GPUs, gloo on "
                                 "the CPU); the recipe's batch_size stays the global batch.")] = None,
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="Start from torchvision's ImageNet weights (model.args.pretrained=true; the "
                             "imagefolder recipes), read from the torch hub cache, never downloaded.")] = False,
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
    * `dlcli train --resume runs/lenet-20260101-120000 --epochs 8`   (3 more epochs, new schedule)
    * `dlcli train lenet --nproc-per-node 2`   (same as `torchrun --nproc-per-node 2 -m dlcli train lenet`)
    * `dlcli train resnet50-imagefolder --pretrained --set data.args.path=~/data/pets`   (fine-tuning)
    """
    if resume and out:
        raise UsageError(f"--out cannot be combined with --resume: a resumed run continues in its own folder "
                         f"({resume})")
    _check_new_run_folder(out)  # before anything is written (every rank under torchrun: nothing is, yet)
    if pretrained:
        set_ = [*(set_ or []), "model.args.pretrained=true"]
    try:
        r, resume_dir = _resolve_recipe(recipe, resume, epochs, batch_size, lr, device, seed, precision, compile,
                                        channels_last, set_)
    except DlcliError as e:
        if pretrained and "'pretrained'" in str(e):
            raise UsageError(f"--pretrained: {recipe}'s model has no pretrained weights in dlcli (torchvision's "
                             "AlexNet and ResNet-50 do: alexnet-imagefolder, resnet50-imagefolder)") from e
        raise
    if nproc_per_node is not None and nproc_per_node != 1:
        from dlcli.registry import TASKS
        from dlcli.tasks.base import one_process_message

        reason = TASKS.get(r.task).one_process
        if nproc_per_node > 1 and reason:  # before torchrun's start-up and its banners
            raise UsageError(f"--nproc-per-node {nproc_per_node}: {one_process_message(r.task, reason)}")
        if nproc_per_node > 1 and r.batch_size % nproc_per_node:
            raise UsageError(f"batch_size {r.batch_size} is not divisible by the {nproc_per_node} processes; it is "
                             f"the global batch: choose a multiple of {nproc_per_node}")
        _torchrun(nproc_per_node, list(_ARGV))
    result = _run_training(r, out, resume_dir, data_dir, json)
    if not result.pop("primary"):
        return  # under torchrun, rank 0 alone reports
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
    episodes: Annotated[Optional[int], typer.Option(
        "--episodes", help="Reinforcement learning runs: greedy evaluation episodes (seeded).")] = None,
    render: Annotated[bool, typer.Option(
        "--render", help="Reinforcement learning runs: write a filmstrip PNG of one episode.")] = False,
    features: Annotated[Optional[str], typer.Option(
        "--features", help="Generative runs: the classify run whose features give the Fréchet LeNet distance "
                           "(default: the newest lenet / lenet-fashion run).")] = None,
    tta: Annotated[str, typer.Option(
        "--tta", help="Image classifier runs: test-time augmentation. none | flip: average the logits of each "
                      "image and its mirror image (runs trained with flips: the CIFAR and image-folder "
                      "recipes); the plain accuracy is reported beside it.")] = "none",
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Rebuild the model from its checkpoint alone and report the recipe's metrics on its evaluation data.

    Examples: `dlcli eval runs/lenet-20260101-120000`, `dlcli eval runs/mlp-xor-.../best.pt --json`,
    `dlcli eval runs/dqn-cartpole-... --episodes 100 --render`, `dlcli eval runs/dcgan-mnist-... --features
    runs/lenet-...`, `dlcli eval runs/resnet20-cifar10-... --tta flip`
    """
    from dlcli.checkpoint import load_checkpoint
    from dlcli.registry import TASKS
    from dlcli.runs import recipe_of
    from dlcli.runtime import Runtime
    from dlcli.tasks.base import TaskContext

    if split not in ("val", "test"):
        raise UsageError(f"--split {split!r}: expected val or test")
    if episodes is not None and episodes < 1:
        raise UsageError(f"--episodes {episodes}: expected an integer >= 1")
    if tta not in ("none", "flip"):
        raise UsageError(f"--tta {tta!r}: expected none or flip")
    options = {k: v for k, v in (("episodes", episodes), ("render", render or None), ("features", features),
                                 ("tta", None if tta == "none" else tta)) if v is not None}
    if out:
        refuse_file_in_the_way("--out", out, "a folder for the figures", folder=True)
    ckpt = load_checkpoint(path)
    r = recipe_of(ckpt)
    _check_eval_options(options, r, ckpt["path"])
    runtime = Runtime.create(device or "auto", seed=r.seed)
    out_dir = Path(out) if out else Path(ckpt["path"]).parent / f"eval-{split}"
    made = first_missing(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # the tasks write their figures into it
    try:
        res = TASKS.get(r.task).evaluate(ckpt, TaskContext(r, runtime, data_dir, eval_options=options), split,
                                         out_dir)
    finally:  # a failed evaluation (or one without figures) leaves no empty folder behind
        if made is not None:
            prune_empty(out_dir, made)
    payload = {"checkpoint": ckpt["path"], "recipe": r.name, "split": split, "metrics": res.metrics,
               "tables": [{"title": t, "columns": c, "rows": rows} for t, c, rows in res.tables],
               "figures": res.figures, **res.details}
    if json:
        report.print_json(payload)
    else:
        from dlcli.report.train import print_eval

        print_eval(f"{r.name} ({ckpt['path']}), {split}", {"metrics": res.metrics, "tables": res.tables,
                                                          "figures": res.figures,
                                                          "notes": res.details.get("data_notes", [])})


# the eval options that only some kinds of run read: option -> (its flag, the tasks reading it, those in words)
_EVAL_OPTION_TASKS = {
    "episodes": ("--episodes", ("dqn",), "reinforcement learning runs (dqn)"),
    "render": ("--render", ("dqn",), "reinforcement learning runs (dqn)"),
    "features": ("--features", ("gan",), "generative runs (gan)"),
    "tta": ("--tta", ("classify",), "image classifier runs (classify)"),
}


def _check_eval_options(options: dict[str, Any], r: Any, checkpoint: str) -> None:
    """An option the run's task would silently ignore is a usage error naming the runs it applies to."""
    for key in options:
        flag, tasks, kinds = _EVAL_OPTION_TASKS[key]
        if r.task not in tasks:
            raise UsageError(f"{flag} applies to {kinds} only; {checkpoint} is a {r.task!r} run ({r.name})")


# ---------------------------------------------------------------------------------------------- verify


@app.command("verify")
def verify_cmd(
    recipe: RecipeArg,
    device: DeviceOpt = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", help="Run folder, new or empty (default runs/RECIPE-YYYYmmdd-HHMMSS).")] = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Train a recipe with its defaults and check its declared `expect`; exit 0 when met, 1 when not.

    Examples: `dlcli verify approx`, `dlcli verify lenet --device cuda`
    """
    _check_new_run_folder(out)
    r, _ = _resolve_recipe(recipe, None, None, None, None, device, None, None, None, None, None)
    if not r.expect:
        raise UsageError(f"recipe {r.name} declares no expected result (no 'expect' key) to verify")
    result = _run_training(r, out, None, data_dir, json)
    if not result.pop("primary"):
        return
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
    from dlcli import cli_attack, cli_bench, cli_data, cli_gen

    app.add_typer(cli_attack.attack_app, name="attack")
    cli_bench.register(app)
    cli_gen.register(app)
    cli_data.register(app)


_mount_extensions()


# ------------------------------------------------------------------------------------------------ main


_ARGV: list[str] = []  # the arguments of this invocation (handed on by --nproc-per-node)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: one clear line for expected errors, never a traceback."""
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("DLCLI_DEBUG", "") not in ("", "0")
    download.progress_display = report.download_bar  # downloads show a bar (or a line per file) on stderr
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone speaks; the others exit with its code
        report.error_line = lambda message: None  # type: ignore[assignment]
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="dlcli")
        if rc == 130:  # typer turns a Ctrl-C outside training (a download, an evaluation) into this return code
            report.error_line("interrupted")
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
