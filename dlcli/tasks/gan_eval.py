"""Sampling from a trained GAN and measuring it: ``dlcli eval`` and ``dlcli sample`` for gan runs, and the
final metrics of ``dlcli train``.

Everything is rebuilt from the checkpoint alone: the recipe (architecture), the ``gan`` entry (data shape, how
images were fitted to the generator's size, the noise distribution) and the weights. Samples are drawn with
the generator in eval mode (batch norm uses its running statistics, so a sample does not depend on the
others in its batch) from a seeded ``torch.Generator``: the same seed gives the same images.

The measures (``dlcli.genmetrics``) are computed on 28x28 images in [0, 1]: samples of a 32-pixel generator
are cropped back to 28x28 (the data was padded by 2 to reach 32), those of other sizes are resized.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from dlcli.batches import images_to_float
from dlcli.classifier import recipe_of
from dlcli.config import Recipe, check_seed
from dlcli.errors import DlcliError, UsageError
from dlcli.genmetrics import (
    SIGMA_VAL_IMAGES,
    FeatureNetwork,
    FrechetFeatures,
    class_coverage,
    default_feature_run,
    load_feature_network,
    parzen,
)
from dlcli.models.gan import GANPair
from dlcli.paths import refuse_file_in_the_way
from dlcli.registry import build_model_with_defaults
from dlcli.tasks.base import EvalResult, TaskContext

NOISES = ("normal", "uniform")
FITS = ("pad", "resize")
GAN_RECIPES = "gan-mnist, dcgan-mnist or dcgan-fashion"


def draw_noise(n: int, nz: int, kind: str, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """z (n, nz): N(0, 1), or U(-sqrt 3, sqrt 3) (unit variance, pylearn2's "uniform")."""
    if kind == "uniform":
        return (torch.rand(n, nz, generator=generator, device=device) * 2 - 1) * math.sqrt(3)
    return torch.randn(n, nz, generator=generator, device=device)


def fit_real(x: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """Data images (B, C, H, W) -> the generator's side ``size``: zero-pad equally (28 -> 32, as LeNet-5's
    input) or bilinear resize (pytorch/examples' ``transforms.Resize``)."""
    h = x.shape[-1]
    if h == size:
        return x
    if fit == "pad":
        p = size - h
        if p < 0 or p % 2:
            raise ValueError(f"fit: pad needs an even size increase, {h} -> {size}; use fit: resize")
        return F.pad(x, (p // 2,) * 4)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def to_data_space(x: torch.Tensor, data_shape: Sequence[int], fit: str) -> torch.Tensor:
    """Generated pixels (B, C, S, S) -> the data's (B, C, H, W): the inverse of ``fit_real``."""
    h = int(data_shape[-1])
    s = x.shape[-1]
    if s == h:
        return x
    if fit == "pad" and s > h and (s - h) % 2 == 0:
        p = (s - h) // 2
        return x[..., p:p + h, p:p + h]
    return F.interpolate(x, size=(h, h), mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def generate(pair: GANPair, n: int, seed: int, noise: str, device: torch.device | str, data_shape: Sequence[int],
             fit: str, batch_size: int = 1000) -> torch.Tensor:
    """``n`` samples in the data's space, float pixels in [0, 1] on the CPU, (n, C, H, W); G in eval mode."""
    g = pair.G
    was_training = g.training
    g.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    try:
        for i in range(0, n, batch_size):
            z = draw_noise(min(batch_size, n - i), pair.nz, noise, gen, device)
            out.append(to_data_space(pair.to_pixels(g(z).float()), data_shape, fit).clamp_(0, 1).cpu())
    finally:
        g.train(was_training)
    return torch.cat(out) if out else torch.empty(0, *data_shape)


def write_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """A PNG grid of images (N, C, H, W) in [0, 1], ``nrow`` per row, separated by 2 grey pixels."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.detach().float().cpu(), path, nrow=nrow, padding=2, pad_value=0.5)
    return path


# ----------------------------------------------------------------------------------- from a checkpoint


def gan_meta(checkpoint: dict[str, Any]) -> dict[str, Any]:
    meta = checkpoint.get("gan")
    if not isinstance(meta, dict):
        raise DlcliError(f"{checkpoint.get('path')}: a gan checkpoint without its 'gan' entry (written by an older "
                         "dlcli?)")
    return meta


def build_pair(recipe: Recipe, data_shape: Sequence[int]) -> GANPair:
    """The recipe's generator/discriminator pair for images of ``data_shape`` (training and loading alike)."""
    pair = build_model_with_defaults(recipe.model.name, recipe.model.args, in_channels=int(data_shape[0]))
    if not isinstance(pair, GANPair):
        raise DlcliError(f"model {recipe.model.name!r} is not a generator/discriminator pair; the gan task "
                         "needs gan-mlp or dcgan")
    return pair


def load_gan(checkpoint: dict[str, Any], device: torch.device | str) -> tuple[GANPair, dict[str, Any], Recipe]:
    """The pair (eval mode, on ``device``), its ``gan`` entry and recipe, from a checkpoint already read; a run
    of another kind is one clear error."""
    recipe = recipe_of(checkpoint)
    if recipe.task != "gan":
        raise DlcliError(f"{checkpoint['path']}: a {recipe.task!r} run ({recipe.name}), not a GAN; "
                         f"dlcli sample needs a run of {GAN_RECIPES}")
    meta = gan_meta(checkpoint)
    pair = build_pair(recipe, meta["data_shape"])
    try:
        pair.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        raise DlcliError(f"{checkpoint['path']}: weights do not match model {recipe.model.name!r}: "
                         f"{str(e).splitlines()[0][:160]}") from None
    return pair.to(device).eval(), meta, recipe


def check_sample_out(out: Path | None) -> None:
    """``dlcli sample --out``: a .png file name (its folder made if missing), or an existing folder that gets
    the default file name; anything else is a usage error before any sample is drawn."""
    if out is None or out.is_dir():
        return
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: expected a .png file name (or an existing folder to write "
                         "sample-nN-seedS.png into)")
    refuse_file_in_the_way("--out", out, "a .png file name", folder=False)


def sample_grid(checkpoint: dict[str, Any], n: int, seed: int, device: torch.device | str,
                out: Path | None = None) -> dict[str, Any]:
    """``dlcli sample``: ``n`` samples from seed ``seed`` as one grid PNG: ``out`` (a .png file, or a folder
    for the default name sample-nN-seedS.png), by default in RUN/samples/."""
    if n < 1:
        raise UsageError(f"--n {n}: expected the number of samples, an integer >= 1")
    check_seed(seed)
    check_sample_out(out)
    pair, meta, recipe = load_gan(checkpoint, device)
    images = generate(pair, n, seed, meta["noise"], device, meta["data_shape"], meta["fit"])
    name = f"sample-n{n}-seed{seed}.png"
    if out is None:
        path = Path(checkpoint["path"]).parent / "samples" / name
    else:
        path = out / name if out.is_dir() else out
    write_grid(images, path, nrow=max(1, math.ceil(math.sqrt(n))))
    return {"path": str(path), "n": n, "seed": seed, "recipe": recipe.name, "checkpoint": checkpoint["path"],
            "image_shape": list(images.shape[1:])}


# --------------------------------------------------------------------------------------------- measures


def resolve_features(data_source: str, features: str | None, device: torch.device | str,
                     data_shape: Sequence[int]) -> FeatureNetwork:
    """``--features RUN`` (a classify run or checkpoint), else the newest lenet / lenet-fashion run."""
    path = features or default_feature_run(data_source)
    return load_feature_network(path, device, data_shape)


def optional_features(data_source: str, features: str | None, device: torch.device | str,
                      data_shape: Sequence[int]) -> FeatureNetwork | None:
    """As ``resolve_features``, but without ``--features`` and without a default run: None and one note
    saying how to get the feature-based measures (a named run that is not a classifier stays an error)."""
    try:
        return resolve_features(data_source, features, device, data_shape)
    except DlcliError as e:
        if features:
            raise
        note(f"{e}; reporting the Parzen estimate only")
        return None


def measure(samples: torch.Tensor, *, val: torch.Tensor, images: torch.Tensor, train: torch.Tensor | None,
            features: FeatureNetwork | None, device: torch.device | str,
            sigma_val_images: int = SIGMA_VAL_IMAGES) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every measure of ``samples`` (float [0, 1], (N, C, H, W)) against real ``images`` (the split measured):
    the Parzen log-likelihood (sigma chosen on the first ``sigma_val_images`` of ``val``) and, as its
    reference, the same estimate with as many real ``train`` images in place of the samples; with a feature
    network the Fréchet LeNet distance, its floor (``train`` images vs ``images``, as many as samples) and
    class coverage. Returns (metrics, details); metrics are what ``expect`` and the tables show."""
    t0 = time.perf_counter()
    p = parzen(samples, images_to_float(val[:sigma_val_images]), images_to_float(images))
    metrics: dict[str, Any] = {"parzen_ll": p.mean, "parzen_se": p.se, "parzen_sigma": p.sigma,
                               "samples": len(samples), "images": len(images)}
    details: dict[str, Any] = {"parzen_val_by_sigma": p.val_by_sigma}
    if train is not None:  # the same protocol with real training images as the "samples": what data scores
        real = parzen(images_to_float(train[:len(samples)]), images_to_float(val[:sigma_val_images]),
                      images_to_float(images))
        metrics["parzen_ll_real"], metrics["parzen_sigma_real"] = real.mean, real.sigma
    metrics["parzen_time_s"] = round(time.perf_counter() - t0, 2)
    if features is None:
        return metrics, details
    t0 = time.perf_counter()
    fd = FrechetFeatures(features.features, images_to_float(images), device)
    metrics["fld"] = fd.distance(samples)
    sample_logits = fd.last_logits  # the classifier's logits from the same pass
    if train is not None:
        floor = images_to_float(train[:len(samples)])  # as many real images as samples: the same estimation bias
        metrics["fld_floor"] = fd.distance(floor)
        metrics["fld_floor_images"] = len(floor)
    cov = class_coverage(sample_logits, features.class_names, fd.reference_logits)
    metrics.update({k: cov[k] for k in ("classes_covered", "class_min_fraction", "class_max_fraction", "class_tv",
                                        "mean_confidence", "reference_confidence")})
    metrics["features"] = features.describe()
    metrics["fld_time_s"] = round(time.perf_counter() - t0, 2)
    details["class_histogram"] = cov["histogram"]
    details["reference_fractions"] = cov["reference_fractions"]
    return metrics, details


def coverage_table(details: dict[str, Any]) -> tuple[str, list[str], list[list[Any]]] | None:
    hist = details.get("class_histogram")
    if not hist:
        return None
    total = max(1, sum(hist.values()))
    ref = details.get("reference_fractions") or []
    rows = [[name, count, f"{count / total:.1%}", f"{ref[i]:.1%}" if i < len(ref) else "-"]
            for i, (name, count) in enumerate(hist.items())]
    return "class coverage (the feature classifier's predicted class)", ["class", "samples", "fraction",
                                                                         "real images"], rows


def note(message: str) -> None:
    """One line on stderr (the progress bar, when running, prints it above itself)."""
    print(f"dlcli: {message}", file=sys.stderr, flush=True)


def evaluate_gan(checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
    """``dlcli eval RUN`` of a gan run: samples (``n_samples``, default the recipe's ``eval_samples``) from the
    recipe's seed, measured against the ``split`` images; ``eval_options['features']`` names the classifier."""
    from dlcli.runs import load_bundle

    device = ctx.runtime.device
    pair, meta, recipe = load_gan(checkpoint, device)
    opts = ctx.eval_options or {}
    n = int(opts.get("n_samples") or recipe.task_args.get("eval_samples", 10_000))
    seed = int(opts.get("seed", recipe.seed))
    bundle = load_bundle(recipe, ctx.data_dir)
    split_data = {"val": bundle.val, "test": bundle.test}.get(split)
    if split_data is None or bundle.val is None:
        raise DlcliError(f"recipe {recipe.name} has no {split if split_data is None else 'val'} split; the Parzen "
                         "window is chosen on validation images (data.args.val_size > 0)")
    features = optional_features(meta["data_source"], opts.get("features"), device, meta["data_shape"])
    samples = generate(pair, n, seed, meta["noise"], device, meta["data_shape"], meta["fit"])
    metrics, details = measure(samples, val=bundle.val.x, images=split_data.x,
                               train=bundle.train.x if bundle.train is not None else None, features=features,
                               device=device)
    metrics["seed"] = seed
    grid = write_grid(samples[:64], out_dir / f"samples-seed{seed}.png")
    tables = [t for t in [coverage_table(details)] if t is not None]
    return EvalResult(metrics, tables, [str(grid)], details)
