"""Figures of layer-wise pretraining: first-layer filters, and samples of a deep belief net's top RBM.

Both are drawn from the weights the pretraining ended with (saved in every checkpoint once pretraining is
over, as ``pretrained``); a run without pretraining shows its fine-tuned first layer. Samples: Gibbs chains in
the top RBM, started at the top-level codes of real images, shown after 0, 1, 10, 100, ... steps, each
state carried down to pixels by the mean-field top-down pass p(v | h) = σ(Wᵀh + c) through the layers below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlcli.config import Recipe
from dlcli.plots import pyplot
from dlcli.tasks.layerwise import bernoulli, gibbs, rbm_hidden, rbm_visible

FILTERS = 100  # rows of W1 shown (10 x 10)
CHAINS = 10


def stack_weights(source: dict[str, Any]) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], bool]:
    """[(W, b, c) per layer] of the pretrained stack when there is one, else of the saved classifier, and
    whether they are the pretrained ones. ``source``: a checkpoint (or a dict with ``model``, ``pretrained``)."""
    pre = source.get("pretrained")
    sd, prefix = (pre, "") if pre is not None else (source["model"], "net.")
    layers = []
    while f"{prefix}hidden.{len(layers)}.weight" in sd:
        i = len(layers)
        layers.append((sd[f"{prefix}hidden.{i}.weight"].float().cpu(), sd[f"{prefix}hidden.{i}.bias"].float().cpu(),
                       sd[f"{prefix}visible_bias.{i}"].float().cpu()))
    return layers, pre is not None


def tile(images: torch.Tensor, cols: int, scale_each: bool = False) -> torch.Tensor:
    """Images (N, h, w) as one (rows·(h+1) − 1, cols·(w+1) − 1) mosaic with 1-pixel white gaps; each image
    scaled to its own [min, max] when ``scale_each`` (filters), else clipped to [0, 1] (pixels)."""
    n, h, w = images.shape
    x = images.float()
    if scale_each:
        lo = x.flatten(1).min(1).values[:, None, None]
        hi = x.flatten(1).max(1).values[:, None, None]
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    rows = -(-n // cols)
    out = torch.ones(rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i, img in enumerate(x.clamp(0, 1)):
        r, c = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = img
    return out


def mosaic_figure(mosaic: torch.Tensor, path: Path, title: str, xlabels: list[str] | None = None) -> Path:
    """One grey image with a title (and optional labels under its columns); one axes, so it draws fast."""
    plt = pyplot()
    h, w = mosaic.shape
    fig, ax = plt.subplots(figsize=(max(3.0, w / 28 * 0.8), h / 28 * 0.8 + 0.5))
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([])
    if xlabels:
        step = (w + 1) / len(xlabels)
        ax.set_xticks([step * (i + 0.5) - 1 for i in range(len(xlabels))], xlabels, fontsize=7)
    else:
        ax.set_xticks([])
    ax.set_title(title, fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def filters_figure(W: torch.Tensor, shape: tuple[int, ...], path: Path, title: str) -> Path:
    """The first ``FILTERS`` rows of W (H, D) as images, each scaled to its own range."""
    n = min(FILTERS, len(W))
    imgs = W[:n].float().cpu().reshape(n, *shape)[:, 0]  # (n, h, w): the first channel
    return mosaic_figure(tile(imgs, min(10, n), scale_each=True), path, title)


@torch.no_grad()
def dbn_samples(layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], images: torch.Tensor,
                checkpoints: list[int], seed: int) -> torch.Tensor:
    """(chains, len(checkpoints), D) pixel probabilities: chains of the top RBM started at the top-level
    codes of ``images`` (N, D) floats, after each number of Gibbs steps in ``checkpoints`` (ascending)."""
    g = torch.Generator().manual_seed(seed)
    v = images
    for W, b, _ in layers[:-1]:
        v = rbm_hidden(v, W, b)  # mean-field codes up to the top RBM's visible layer
    W, b, c = layers[-1]
    state, done, shots = bernoulli(v, g), 0, []
    for steps in checkpoints:
        top = gibbs(state, W, b, c, steps - done, g) if steps > done else v
        state, done = bernoulli(top, g), steps
        down = top
        for Wl, _, cl in reversed(layers[:-1]):
            down = rbm_visible(down, Wl, cl)
        shots.append(down)
    return torch.stack(shots, 1)


def write_pretrain_figures(source: dict[str, Any], method: str, recipe: Recipe, input_shape: tuple[int, ...],
                           out_dir: Path, gibbs_steps: int, images: torch.Tensor) -> list[str]:
    """filters.png, and for a deep belief net samples.png; returns their paths. ``images``: uint8 (N, C, H, W)
    real images whose codes start the chains."""
    layers, pretrained = stack_weights(source)
    if not layers:
        return []
    shape = tuple(int(s) for s in input_shape)
    what = {"dae": "denoising autoencoder", "rbm": "RBM"}.get(method, method)
    title = (f"{recipe.name}: the first layer's filters (rows of W1) after {what} pretraining" if pretrained else
             f"{recipe.name}: the first layer's filters (rows of W1), no pretraining: after fine-tuning")
    paths = [str(filters_figure(layers[0][0], shape, out_dir / "filters.png", title))]
    if method == "rbm" and pretrained:
        steps = sorted({s for s in (0, 1, 10, 100) if s < gibbs_steps} | {gibbs_steps})
        x = images[:CHAINS].float().div(255).flatten(1)
        shots = dbn_samples(layers, x, steps, recipe.seed)  # (chains, len(steps), D)
        mosaic = tile(shots.reshape(-1, *shape[-2:]), len(steps))
        labels = [f"{s} step{'' if s == 1 else 's'}" if s else "start" for s in steps]
        paths.append(str(mosaic_figure(mosaic, out_dir / "samples.png", f"{recipe.name}: Gibbs chains in the top "
                                       "RBM, started at real images' codes (one per row)", labels)))
    return paths
