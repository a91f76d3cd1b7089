"""Measures of a generative model's samples; each one names the space it works in.

``parzen``: the Gaussian Parzen-window log-likelihood of held-out images under a set of generated samples, in
pixel space (Goodfellow et al. 2014, Table 1, with the authors' protocol: 10,000 samples, sigma chosen on 1,000
validation images over logspace(-1, 0, 10), mean log-likelihood of the test images in nats +- its standard
error). Its known weakness: in 784 dimensions the estimate is dominated by the nearest sample, so it rewards
samples that sit close to real images (a model that memorises training digits scores well) and tracks visual
quality poorly; Theis, van den Oord and Bethge 2016 ("A note on the evaluation of generative models") show
it can rank models in the wrong order. It is reported because the paper's number is one.

``FrechetFeatures``: the Fréchet distance between Gaussian fits of two sets of features,
||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), computed by torchmetrics' ``FrechetInceptionDistance`` with
a custom feature network (no hand-written matrix square root). With a trained dlcli LeNet-5's penultimate
activations (F6, 84 values) it is a "Fréchet LeNet distance" (FLD): comparable only between runs measured
with the same feature network, never with Inception-based FID numbers.

``class_coverage``: a classifier's predicted-class histogram of the samples (mode collapse shows as missing
classes) and its mean confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from dlcli.batches import images_to_float
from dlcli.errors import DlcliError

#: the authors' sigma grid (parzen_ll.py: numpy.logspace(-1, 0, 10)), pixels in [0, 1]
DEFAULT_SIGMAS: tuple[float, ...] = tuple(10 ** (-1 + i / 9) for i in range(10))
#: validation images the authors' script chose sigma on (``--limit_size 1000``)
SIGMA_VAL_IMAGES = 1000
#: the classifier run that gives the features for each data source when ``--features`` is not given
FEATURE_RECIPES = {"mnist": "lenet", "fashion-mnist": "lenet-fashion"}
#: a class counts as covered when it receives at least this fraction of the samples (a tenth of uniform)
COVERED_FRACTION = 0.01


# ------------------------------------------------------------------------------------------------ Parzen


def parzen_log_likelihood(x: torch.Tensor, centres: torch.Tensor, sigmas: Sequence[float],
                          chunk: int = 500) -> torch.Tensor:
    """log p(x) under the mixture (1/M) sum_m N(x; centre_m, sigma^2 I), for every sigma: (len(sigmas), N) nats.

    x (N, D) and centres (M, D) are flattened images in [0, 1]. Squared distances are computed once per chunk
    of x, in float64 (||x||^2 + ||c||^2 - 2 x.c, clamped at 0), and shared by all sigmas."""
    x = x.flatten(1).double()
    c = centres.flatten(1).to(x.device).double()
    n_c, dim = c.shape
    c_sq = (c * c).sum(1)  # (M,)
    out = torch.empty(len(sigmas), len(x), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        d2 = ((xb * xb).sum(1, keepdim=True) + c_sq[None, :] - 2 * xb @ c.T).clamp_min_(0)  # (n, M)
        for j, s in enumerate(sigmas):
            log_kernel = torch.logsumexp(d2 * (-0.5 / (s * s)), dim=1) - math.log(n_c)
            out[j, i:i + chunk] = log_kernel - dim * math.log(s * math.sqrt(2 * math.pi))
    return out


@dataclass
class ParzenResult:
    mean: float  # mean log-likelihood of the evaluated images, nats
    se: float  # its standard error: std / sqrt(N) (numpy's std, as the authors' script)
    sigma: float  # the window chosen on validation images
    val_by_sigma: dict[float, float]  # mean validation log-likelihood for each candidate sigma
    samples: int  # generated samples (mixture centres)
    images: int  # evaluated images


def parzen(samples: torch.Tensor, val: torch.Tensor, test: torch.Tensor,
           sigmas: Sequence[float] = DEFAULT_SIGMAS) -> ParzenResult:
    """The Parzen protocol: sigma = argmax over ``sigmas`` of the mean log-likelihood of ``val``; then the mean
    log-likelihood of ``test`` and its standard error. All inputs are float images in [0, 1]."""
    if len(samples) < 1 or len(val) < 1 or len(test) < 1:
        raise DlcliError("the Parzen estimate needs at least one sample, one validation and one test image")
    val_ll = parzen_log_likelihood(val, samples, sigmas).mean(1)  # (S,)
    best = int(val_ll.argmax())
    ll = parzen_log_likelihood(test, samples, [sigmas[best]])[0]  # (N,)
    return ParzenResult(float(ll.mean()), float(ll.std(unbiased=False)) / math.sqrt(len(ll)), float(sigmas[best]),
                        {float(s): float(v) for s, v in zip(sigmas, val_ll)}, len(samples), len(ll))


# ----------------------------------------------------------------------------------- feature networks


class PenultimateFeatures(nn.Module):
    """The input of a classifier's last linear layer (LeNet-5: F6's 84 tanh activations), taken with a
    forward pre-hook so the classifier's code is untouched. Input: pixels in [0, 1] (uint8 is converted)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise DlcliError("the feature network has no linear layer whose input could serve as features")
        self.classifier = classifier.eval()
        self.num_features = linears[-1].in_features  # torchmetrics reads this instead of probing
        self._captured: torch.Tensor | None = None
        linears[-1].register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._captured = args[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_features)
        self.logits = self.classifier(images_to_float(x)).detach().float()  # (B, K): kept for class coverage
        assert self._captured is not None
        feats, self._captured = self._captured.float().flatten(1), None
        return feats


def _fid_metric(features: nn.Module) -> Any:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise DlcliError("the Fréchet distance needs torchmetrics: pip install 'dlcli[gen]' "
                         "(or pip install 'torchmetrics>=1.4')") from None
    # reset_real_features=False: the reference statistics are computed once and kept across reset()
    return FrechetInceptionDistance(feature=features, reset_real_features=False)


class FrechetFeatures:
    """Fréchet distance of image sets to one reference set, in the feature space of ``features``.

    The reference features are accumulated once; ``distance(images)`` resets only the other side. When the
    feature network also leaves its logits (``PenultimateFeatures.logits``), they are kept from the same pass:
    ``reference_logits`` and ``last_logits`` (class coverage without a second pass over the images)."""

    def __init__(self, features: nn.Module, reference: Iterable[torch.Tensor], device: torch.device | str = "cpu",
                 batch_size: int = 1000) -> None:
        self.device, self.batch_size, self.features = torch.device(device), batch_size, features
        self.metric = _fid_metric(features).to(self.device)
        self.reference_logits = self._accumulate(reference, real=True)
        self.last_logits: torch.Tensor | None = None

    def _accumulate(self, images: Iterable[torch.Tensor] | torch.Tensor, real: bool) -> torch.Tensor | None:
        logits = []
        with torch.no_grad():
            for xb in _batches(images, self.batch_size):
                self.metric.update(xb.to(self.device), real=real)
                out = getattr(self.features, "logits", None)
                if out is not None:
                    logits.append(out.cpu())
        return torch.cat(logits) if logits else None

    def distance(self, images: Iterable[torch.Tensor] | torch.Tensor) -> float:
        self.metric.reset()
        self.last_logits = self._accumulate(images, real=False)
        with torch.no_grad():
            return float(self.metric.compute())


def _batches(images: Iterable[torch.Tensor] | torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        return (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    return images


# ------------------------------------------------------------------------------------------- coverage


def class_coverage(logits: torch.Tensor, class_names: Sequence[str],
                   reference_logits: torch.Tensor | None = None) -> dict[str, Any]:
    """Predicted-class histogram of samples (logits (N, K)) and what it says about mode collapse.

    ``classes_covered``: classes with at least ``COVERED_FRACTION`` of the samples; ``class_tv``: total
    variation distance between the samples' histogram and the real images' predicted histogram
    (``reference_logits``; uniform when absent), 0 = same class mix, 1 = disjoint."""
    k = logits.shape[1]
    prob = logits.float().softmax(1)
    counts = torch.bincount(prob.argmax(1), minlength=k)
    frac = counts.double() / max(1, len(logits))
    ref = (torch.bincount(reference_logits.argmax(1), minlength=k).double() / max(1, len(reference_logits))
           if reference_logits is not None else torch.full((k,), 1.0 / k, dtype=torch.float64))
    out: dict[str, Any] = {
        "classes_covered": int((frac >= COVERED_FRACTION).sum()),
        "class_min_fraction": float(frac.min()),
        "class_max_fraction": float(frac.max()),
        "class_tv": float(0.5 * (frac - ref).abs().sum()),
        "mean_confidence": float(prob.max(1).values.mean()),
        "histogram": {str(class_names[i]) if i < len(class_names) else str(i): int(counts[i]) for i in range(k)},
        "reference_fractions": [float(v) for v in ref],
    }
    if reference_logits is not None:
        out["reference_confidence"] = float(reference_logits.float().softmax(1).max(1).values.mean())
    return out


# -------------------------------------------------------------------------------- the feature network


def default_feature_run(data_source: str, runs_root: str | Path = "runs") -> Path:
    """The newest run of the classifier recipe that matches ``data_source`` (lenet for MNIST, lenet-fashion
    for Fashion-MNIST), or one clear error saying how to make or name one."""
    from dlcli.runs import latest_run

    recipe = FEATURE_RECIPES.get(data_source)
    if recipe is None:
        raise DlcliError(f"no default feature network for data source {data_source!r}; name a classifier run "
                         "trained on the same images with --features RUN")
    try:
        return latest_run(recipe, runs_root)
    except DlcliError:
        raise DlcliError(f"the Fréchet LeNet distance and class coverage need a trained {recipe} classifier: "
                         f"no {recipe} run under {Path(runs_root)}/; train one (dlcli train {recipe}) or name "
                         "one with --features RUN") from None


@dataclass
class FeatureNetwork:
    """A trained classifier used as a measuring instrument: its logits (coverage) and penultimate features."""

    model: nn.Module  # pixels in [0, 1] (B, C, H, W) -> logits
    features: PenultimateFeatures
    class_names: list[str]
    input_shape: tuple[int, ...]
    path: str  # the checkpoint it came from
    recipe: str
    data_source: str

    def describe(self) -> str:
        return f"{self.recipe} ({self.data_source}, {self.features.num_features} features): {self.path}"


def load_feature_network(path: str | Path, device: torch.device | str, image_shape: Sequence[int]) -> FeatureNetwork:
    """Rebuild the classifier of a classify run (or checkpoint) as a feature network for images of
    ``image_shape``; a run of another kind, or a classifier of other images, is one clear error."""
    from dlcli.checkpoint import load_checkpoint
    from dlcli.classifier import load_classifier, recipe_of

    ckpt = load_checkpoint(path)
    recipe = recipe_of(ckpt)
    if recipe.task != "classify":
        raise DlcliError(f"--features {path}: a {recipe.task!r} run ({recipe.name}), not an image classifier; "
                         "the Fréchet LeNet distance and class coverage need a classify run such as lenet "
                         "(dlcli train lenet)")
    clf = load_classifier(ckpt, device)
    if tuple(clf.input_shape) != tuple(image_shape):
        raise DlcliError(f"--features {path}: {recipe.name} classifies {'x'.join(map(str, clf.input_shape))} "
                         f"images, the generator makes {'x'.join(map(str, image_shape))}; name a classifier "
                         "trained on the generator's data")
    source = recipe.data.source if recipe.data is not None else "?"
    return FeatureNetwork(clf.model, PenultimateFeatures(clf.model), clf.class_names, tuple(clf.input_shape),
                          ckpt["path"], recipe.name, source)
