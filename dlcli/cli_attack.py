"""``dlcli attack deepfool | fgsm | universal``: parse and check the options, load the run, call the runner, report.

Mounted by ``dlcli.cli`` as ``app.add_typer(attack_app, name="attack")``. Bad input raises ``UsageError``
before anything is loaded; ``dlcli.cli.main`` turns it into one line and exit code 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from dlcli import report
from dlcli.errors import DlcliError, UsageError
from dlcli.options import DataDirOpt, DeviceOpt, JsonOpt, seed_callback
from dlcli.paths import refuse_file_in_the_way

attack_app = typer.Typer(
    help="Adversarial attacks on a trained classifier: DeepFool, the fast gradient sign baseline, universal "
         "perturbations.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

DEFAULT_RECIPE = "lenet"
CLIP_MODES = ("box", "none", "step")  # dlcli.attacks.deepfool.CLIP_MODES, repeated: this module does not import torch
CLIP_ALIASES = {"final": "none"}
GRAD_MODES = ("auto", "loop", "batched")

RunArg = Annotated[Optional[str], typer.Argument(
    help="Run folder (uses best.pt) or checkpoint file; default: the newest runs/lenet-* folder.", metavar="RUN_DIR",
    show_default=False)]
NOpt = Annotated[int, typer.Option("--n", help="Number of images, the first N of the split.")]
NormOpt = Annotated[str, typer.Option("--norm", help="2 | inf: the norm of the perturbation and of ρ.")]
SplitOpt = Annotated[str, typer.Option("--split", help="val | test: the images to attack.")]
OutOpt = Annotated[Optional[str], typer.Option(
    "--out", help="Output folder (default RUN_DIR/attack-ATTACK-NORM, e.g. attack-deepfool-l2).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images attacked at once on the device.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads for torch (default: torch's choice). On a machine busy with other jobs, 1 can be "
                      "several times faster: the attacks run many small operations.")]
ClipOpt = Annotated[str, typer.Option(
    "--clip", help="box: solve every step inside the valid pixel range [0, 1], so every iterate and the written "
                   "image are valid (default); none: the paper's unconstrained iteration, the written images "
                   "clamped afterwards (may not fool); step: clamp every iterate (what torchattacks does).")]
FgsmClipOpt = Annotated[str, typer.Option(
    "--clip", help="box: search ε on valid images clamp(x + ε·sign, 0, 1), the images written (default); "
                   "none: the paper's protocol, x + ε·sign unclamped.")]
GradOpt = Annotated[str, typer.Option(
    "--grad", help="auto | loop | batched: one backward pass per candidate class (loop) or all candidates in one "
                   "batched vector-Jacobian product (batched); auto picks the faster one measured for the device.")]
RefineOpt = Annotated[Optional[int], typer.Option(
    "--refine", help="Rounds of boundary projection after DeepFool (after SuperDeepFool, 2023): each shrinks the "
                     "valid adversarial towards the closest point of the decision boundary, inside [0, 1]. "
                     "Default: 1 with --clip box, 0 otherwise (--clip none keeps the paper's iteration).",
    show_default=False)]
PaperOpt = Annotated[bool, typer.Option(
    "--paper-rho/--no-paper-rho", help="Also run the paper's unconstrained iteration on the same images and "
                                       "print its ρ beside the written images' (the paper's protocol).")]


def _norm(norm: str) -> str:
    from dlcli.attacks.deepfool import check_norm

    try:
        return check_norm(norm)
    except ValueError:
        raise UsageError(f"--norm {norm}: expected 2 or inf") from None


def _positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    _finite(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        what = "a non-negative" if allow_zero else "a positive"
        raise UsageError(f"{name} {value}: expected {what} number")


def _finite(name: str, value: float | int) -> None:
    if not math.isfinite(value):
        raise UsageError(f"{name} {value}: expected a finite number")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    v = CLIP_ALIASES.get(value, value) if name == "--clip" else value
    if v not in choices:
        raise UsageError(f"{name} {value}: expected {', '.join(choices[:-1])} or {choices[-1]}"
                         if len(choices) > 1 else f"{name} {value}: expected {choices[0]}")
    return v


def _threads(threads: int | None) -> None:
    if threads is None:
        return
    _positive("--threads", threads)
    import torch

    torch.set_num_threads(threads)


def _load(path: str | None, device: str | None) -> Any:
    """The classifier of a run folder or checkpoint (the newest lenet run when none is given)."""
    from dlcli.runs import latest_run, load_classifier, runtime_for

    if path is None:
        path = str(latest_run(DEFAULT_RECIPE))
        report.note(f"attacking the newest {DEFAULT_RECIPE} run: {path}")
    elif not Path(path).exists():
        raise DlcliError(f"{path}: no such run folder or checkpoint")
    runtime = runtime_for(device)
    return load_classifier(path, runtime.device)


def _images(clf: Any, split: str, n: int, data_dir: str | None, option: str = "--n") -> tuple[Any, Any, Any]:
    """The first ``n`` images of ``split`` as float [0, 1] (N, C, H, W), their labels and indices."""
    from dlcli.attacks.runner import select
    from dlcli.runs import load_split

    x, y = load_split(clf.recipe, split, data_dir)
    if n > x.shape[0]:
        report.note(f"{option} {n}: the {split} split has {x.shape[0]} images; using all of them")
    return select(x, y, n)


def _check_out(out: str | None) -> None:
    """``--out`` names a folder (new or existing): a file there, or above it, is a usage error."""
    if out:
        refuse_file_in_the_way("--out", out, "a folder for the attack's results", folder=True)


def _out_dir(out: str | None, clf: Any, name: str) -> Path:
    return Path(out) if out else Path(clf.run_dir) / f"attack-{name}"


def _norm_tag(norm: str) -> str:
    return "linf" if norm == "inf" else "l2"


def _per_image_setup(run: str | None, *, n: int, batch_size: int, split: str, threads: int | None,
                     device: str | None, data_dir: str | None, images_dir: str | None = None) -> tuple[Any, ...]:
    """The options DeepFool and FGSM share, checked; then the classifier and its first ``n`` images of ``split``."""
    _positive("--n", n)
    _positive("--batch-size", batch_size)
    _choice("--split", split, ("val", "test"))
    _threads(threads)
    clf = _load(run, device)
    if images_dir is not None:
        return (clf,)
    return (clf, *_images(clf, split, n, data_dir))


def _emit(result: Any, json: bool, printer: Callable[[Any], None]) -> None:
    if json:
        report.print_json(result)
    else:
        printer(result)


@attack_app.command("deepfool")
def deepfool_cmd(
    run: RunArg = None,
    n: NOpt = 1000,
    norm: NormOpt = "2",
    overshoot: Annotated[float, typer.Option("--overshoot", help="η: the result is (1 + η)·r_tot.")] = 0.02,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Iterations per image at most.")] = 50,
    candidates: Annotated[int, typer.Option("--candidates", help="Classes searched: the top k by clean logit.")] = 10,
    batch_size: BatchOpt = 256,
    clip: ClipOpt = "box",
    grad: GradOpt = "auto",
    refine: RefineOpt = None,
    paper_rho: PaperOpt = True,
    images: Annotated[Optional[str], typer.Option(
        "--images", help="Attack your own image files in this folder instead of the data set (resized to the "
                         "model's input; each attacked away from the model's own prediction).")] = None,
    compare_fgsm: Annotated[bool, typer.Option("--compare-fgsm", help="Also run the fast gradient sign baseline "
                                               "on the same images and print both rows, as in the paper.")] = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    split: SplitOpt = "test",
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Multi-class DeepFool (Moosavi-Dezfooli et al., CVPR 2016), batched: fooling rate, ρ_adv, speed, figure.

    The headline fooling rate and ρ_adv are those of the adversarial images written, which are valid images
    in [0, 1] (by default every DeepFool step is solved inside that box). The paper's protocol (the
    unconstrained iteration, ρ before clipping) is printed beside them, and the paper's own value when the
    model matches a row of its tables. Images the model already gets wrong are counted apart with zero
    perturbation. Writes deepfool.csv, perturbations.pt, deepfool.png and summary.json.

    Examples:

    * `dlcli attack deepfool` (the newest lenet run)
    * `dlcli attack deepfool runs/lenet-modern-20260101-120000 --n 10000 --threads 1`
    * `dlcli attack deepfool --norm inf --compare-fgsm`
    * `dlcli attack deepfool --clip none` (the paper's iteration; written images clamped afterwards)
    * `dlcli attack deepfool --images my_digits/` (your own image files)
    * `dlcli attack deepfool --json | jq .rho_adv`
    """
    from dlcli.attacks.deepfool import resolve_refine
    from dlcli.attacks.runner import DeepFoolSettings, run_deepfool, run_deepfool_images
    from dlcli.report.attack import print_deepfool, print_deepfool_images, progress_bar

    norm = _norm(norm)
    _check_out(out)
    _positive("--overshoot", overshoot, allow_zero=True)
    _positive("--max-iter", max_iter)
    if candidates < 2:
        raise UsageError(f"--candidates {candidates}: expected at least 2 (the predicted class and one other)")
    clip = _choice("--clip", clip, CLIP_MODES)
    grad = _choice("--grad", grad, GRAD_MODES)
    try:
        resolve_refine(refine, clip)
    except ValueError as e:  # "refine ...: ..." names the option
        raise UsageError(f"--{e}") from None
    settings = DeepFoolSettings(norm=norm, overshoot=overshoot, max_iter=max_iter, candidates=candidates,
                                batch_size=batch_size, clip=clip, grad=grad, refine=refine)
    if images is not None:
        if compare_fgsm:
            raise UsageError("--compare-fgsm needs labelled images; it cannot be combined with --images")
        (clf,) = _per_image_setup(run, n=n, batch_size=batch_size, split=split, threads=threads, device=device,
                                  data_dir=data_dir, images_dir=images)
        from dlcli.attacks.image_files import load_image_folder

        x, names, skipped = load_image_folder(images, clf.input_shape)
        for name in skipped:
            report.note(f"--images: skipped {name} (not an image Pillow can read)")
        with progress_bar("DeepFool", x.shape[0], enabled=report.err.is_terminal) as bar:
            result = run_deepfool_images(clf, x, names, settings, folder=images, skipped=skipped, progress=bar,
                                         out_dir=_out_dir(out, clf, f"deepfool-{_norm_tag(norm)}-images"))
        _emit(result, json, print_deepfool_images)
        return
    clf, x, y, idx = _per_image_setup(run, n=n, batch_size=batch_size, split=split, threads=threads,
                                      device=device, data_dir=data_dir)
    with progress_bar("DeepFool", x.shape[0], enabled=report.err.is_terminal) as bar:
        result = run_deepfool(clf, x, y, idx, settings, paper_protocol=paper_rho, split=split,
                              out_dir=_out_dir(out, clf, f"deepfool-{_norm_tag(norm)}"),
                              compare_fgsm=compare_fgsm, progress=bar)
    _emit(result, json, print_deepfool)


@attack_app.command("fgsm")
def fgsm_cmd(
    run: RunArg = None,
    n: NOpt = 1000,
    norm: NormOpt = "2",
    target_rate: Annotated[float, typer.Option("--target-rate",
                                               help="Fooling rate ε must reach (the paper: 0.9).")] = 0.9,
    clip: FgsmClipOpt = "box",
    paper_rho: PaperOpt = True,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    split: SplitOpt = "test",
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """The fast gradient sign baseline under the DeepFool paper's protocol: the smallest ε fooling ≥ 90%, and its ρ.

    x + ε·sign(∇ loss), one gradient per image; ε is searched (a grid, then bisection) over forward passes
    only, by default on the valid images clamp(x + ε·sign, 0, 1) that are written; the paper's unclamped
    search is printed beside. `--norm` picks the norm ρ is measured in. `dlcli attack deepfool --compare-fgsm`
    prints both methods.

    Examples:

    * `dlcli attack fgsm`
    * `dlcli attack fgsm runs/lenet-20260101-120000 --norm inf --json`
    """
    from dlcli.attacks.runner import run_fgsm
    from dlcli.report.attack import print_fgsm

    norm = _norm(norm)
    _check_out(out)
    if not 0 < target_rate <= 1:
        raise UsageError(f"--target-rate {target_rate}: expected a fraction in (0, 1]")
    clip = _choice("--clip", clip, ("box", "none"))
    clf, x, y, idx = _per_image_setup(run, n=n, batch_size=batch_size, split=split, threads=threads,
                                      device=device, data_dir=data_dir)
    result = run_fgsm(clf, x, y, idx, norm=norm, target_rate=target_rate, clip=clip, paper_protocol=paper_rho,
                      batch_size=batch_size, split=split, out_dir=_out_dir(out, clf, f"fgsm-{_norm_tag(norm)}"))
    _emit(result, json, print_fgsm)


@attack_app.command("universal")
def universal_cmd(
    run: RunArg = None,
    xi: Annotated[Optional[float], typer.Option("--xi", help="Radius ξ of the ℓp ball, pixels in [0, 1] "
                                                "(default: 0.3 for ℓ∞ and 5 for ℓ2 on MNIST-like data, the "
                                                "paper's ImageNet radii rescaled otherwise).")] = None,
    norm: NormOpt = "inf",
    delta: Annotated[float, typer.Option("--delta", help="Stop once the building-set fooling rate is ≥ 1 − δ.")] = 0.2,
    max_passes: Annotated[int, typer.Option("--max-passes", help="Passes over the building images at most.")] = 10,
    build_images: Annotated[int, typer.Option("--build-images", help="Images v is built from (val split).")] = 1000,
    eval_images: Annotated[int, typer.Option("--eval-images", help="Held-out images it is measured on "
                                             "(test split).")] = 10000,
    fold_batch: Annotated[int, typer.Option("--fold-batch", help="Building images per DeepFool batch; their "
                                            "steps are folded into v one by one (1 = the paper's loop).")] = 32,
    target_runs: Annotated[Optional[list[str]], typer.Option(
        "--target-runs", help="Other runs of the same input size (repeat the option or separate with commas): a "
                              "perturbation is built on every model and measured on every model, the paper's "
                              "cross-model table (table, transfer.csv, transfer.png).")] = None,
    clip: Annotated[bool, typer.Option("--clip/--no-clip", help="Clamp x + v to [0, 1] while building v "
                                       "(the reported fooling rates are always those of clamped, valid "
                                       "images).")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffling and of the random-noise control.",
                                      callback=seed_callback)] = 0,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    out: OutOpt = None,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Universal adversarial perturbation (Moosavi-Dezfooli et al., CVPR 2017, Algorithm 1), DeepFool steps batched.

    Reports the fooling rate (prediction changed) of the valid images clamp(x + v, 0, 1) on held-out images,
    for v and for random noise of the same norm. With `--target-runs` a perturbation is built on every model
    and each is measured on every model (rows: built on, columns: applied to), with a random-noise row.
    Writes universal.pt, universal.png, summary.json, and transfer.csv / transfer.png for the matrix.

    Examples:

    * `dlcli attack universal`
    * `dlcli attack universal runs/lenet-20260101-120000 --norm 2 --xi 5`
    * `dlcli attack universal --target-runs runs/lenet-a,runs/lenet-b --json`
    * `dlcli attack universal --threads 1` (much faster on a CPU shared with other jobs)
    """
    from dlcli.attacks.runner_universal import default_xi, run_universal
    from dlcli.report.attack import print_universal, progress_bar

    norm = _norm(norm)
    _check_out(out)
    _positive("--xi", xi)
    if not 0 <= delta < 1:
        raise UsageError(f"--delta {delta}: expected a fraction in [0, 1)")
    _positive("--max-passes", max_passes)
    _positive("--build-images", build_images)
    _positive("--eval-images", eval_images)
    _positive("--fold-batch", fold_batch)
    targets = [t for item in target_runs or [] for t in item.split(",") if t.strip()]
    _threads(threads)
    clf = _load(run, device)
    others = [_load(t.strip(), device) for t in targets]
    for t in others:
        if tuple(t.input_shape) != tuple(clf.input_shape):
            raise UsageError(f"--target-runs {t.run_dir}: input shape {tuple(t.input_shape)} differs from "
                             f"{tuple(clf.input_shape)}; a perturbation only transfers between models of one input size")
    if xi is None:
        xi = default_xi(norm, clf.recipe.data.source, clf.input_shape)
    try:
        xb, _, _ = _images(clf, "val", build_images, data_dir, "--build-images")
        build_split = "val"
    except DlcliError:  # a recipe without a validation split: build from training images
        xb, _, _ = _images(clf, "train", build_images, data_dir, "--build-images")
        build_split = "train"
    xe, _, _ = _images(clf, "test", eval_images, data_dir, "--eval-images")
    with progress_bar("universal", xb.shape[0], enabled=report.err.is_terminal) as bar:
        result = run_universal(clf, xb, xe, xi=xi, norm=norm, delta=delta, max_passes=max_passes,
                               fold_batch=fold_batch, clip=clip, seed=seed, targets=others,
                               build_split=build_split, eval_split="test",
                               out_dir=_out_dir(out, clf, f"universal-{_norm_tag(norm)}"), progress=bar)
    _emit(result, json, print_universal)
