"""The Neocognitron's learning (Fukushima 1980; 2003): S-layers learned without labels and without gradients.

Stages, one epoch each, in order: S-layer 1, S-layer 2, ..., then the readout for the remaining epochs.

S-layer stage l (competitive learning, Fukushima 2003): batches of training images (labels unused)
go through the fixed layers below l. At every position where the input is not blank, the S-cells of all planes
of layer l form a column; with the learning threshold θ_L:

- winner-take-all: the plane whose template is most similar (largest s, the cosine of template and patch) wins,
  and if s ≥ θ_L and that position is the strongest within ``compete`` positions of it (Fukushima's
  competition among neighbouring columns), the winner's template is reinforced by the patch:
  X_k ← X_k + q·x̃ (the template is the sum of the patches it won; only its direction matters);
- add-if-silent: where every plane is silent (s < θ_L for all), a new plane is created whose template is that
  patch, while there is room (``planes``). Several silent patches of one batch seed planes greedily, each only
  if no plane seeded before it in this batch answers to it.

Learning uses θ_L; recognition uses the lower θ (Fukushima's dual threshold, 2003), so a cell learned from
sharply selective competition still tolerates deformed inputs.

Readout stage: the final C-layer of every image of a split is computed once, when first needed (in memory, not
in checkpoints: it is a pure function of the templates), standardised with the training set's statistics, and
a linear layer is trained on it with softmax + cross-entropy and the recipe's optimiser: the only part that
sees labels. The network is
``dlcli.classifier.Normalized`` around ``dlcli.models.neocognitron.Neocognitron`` (identity normalisation), so
``dlcli eval`` and ``dlcli attack`` rebuild it from the checkpoint like any classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.batches import images_to_float
from dlcli.classifier import build_classifier, data_meta, load_classifier
from dlcli.models.neocognitron import Neocognitron, s_cell_response, v_cell
from dlcli.plots import pyplot
from dlcli.registry import register_task
from dlcli.runtime import optimizer_step
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.optim import build_optimizer, build_scheduler, load_scheduler

#: a position is blank (it neither learns nor seeds) when its V-cell is below this fraction of the batch's largest
BLANK_FRACTION = 0.1
FIGURE_PLANES = 64  # planes shown per layer in the templates figure, most reinforced first
FIGURE_TOP = 16  # images whose patches are averaged per plane of the higher layers


def competitive_step(templates: torch.Tensor, count: torch.Tensor, wins: torch.Tensor, x: torch.Tensor,
                     window: torch.Tensor, theta_learn: float, *, q: float = 1.0, compete: int = 1,
                     seed_candidates: int = 256, generator: torch.Generator | None = None) -> dict[str, int]:
    """One batch of unsupervised learning of one S-layer, in place on ``templates`` (K, C, k, k), ``count`` (the
    planes in use, a 0-d long tensor) and ``wins`` (K,). ``x`` (B, C, H, W) is the layer's input, ``window``
    sqrt(c) (k, k). Returns counts: positions (not blank), reinforced, silent, seeded."""
    n_planes, channels, k, _ = templates.shape
    b, _, h, w = x.shape
    active = int(count)
    v = v_cell(x, window)[:, 0]  # (B, H, W)
    valid = v > BLANK_FRACTION * v.amax()
    if active:
        # s = X̂·x̃ / v: the S-cell at θ = 0 divided by the V-cell; the column's winner is the largest
        s = s_cell_response(x, templates[:active], window, 0.0) / v[:, None]
        s_max, winner = s.max(1)  # (B, H, W)
    else:
        s_max = torch.zeros_like(v)
        winner = torch.zeros_like(v, dtype=torch.long)
    s_max = torch.where(valid, s_max, torch.zeros_like(s_max))
    learn = valid & (s_max >= theta_learn)
    if compete > 0:  # only the strongest column among its neighbours learns (ties all learn)
        learn &= s_max >= F.max_pool2d(s_max[:, None], 2 * compete + 1, 1, compete)[:, 0]
    w_flat = window.expand(channels, k, k).reshape(-1)  # sqrt(c) over (C, k, k), the order of a template
    flat = templates.view(n_planes, -1)
    ib, ih, iw = learn.nonzero(as_tuple=True)
    if len(ib):
        won = winner[ib, ih, iw]
        # X_k += q Σ x̃ over the positions plane k won: the weight gradient of a convolution whose output is
        # the one-hot winner map, so every position is summed in one call
        wins_map = torch.zeros(b, n_planes, h, w, dtype=x.dtype, device=x.device)
        wins_map[ib, won, ih, iw] = 1.0
        delta = torch.nn.grad.conv2d_weight(x, templates.shape, wins_map, padding=k // 2)  # (K, C, k, k)
        templates.add_(q * delta * window)
        wins.index_add_(0, won, torch.ones(len(won), dtype=wins.dtype, device=wins.device))
    silent = valid & (s_max < theta_learn)
    seeded = 0
    sb, sh, sw = silent.nonzero(as_tuple=True)
    if active < n_planes and len(sb):
        order = torch.randperm(len(sb), generator=generator)[:seed_candidates].to(sb.device)
        cand = patches_at(x, k, sb[order], sh[order], sw[order]).flatten(1) * w_flat  # (M, D) x̃, silent positions
        unit = cand / cand.norm(dim=1, keepdim=True)
        answers = unit @ unit.T >= theta_learn  # (M, M): would a plane seeded from i answer to j?
        covered = torch.zeros(len(cand), dtype=torch.bool, device=cand.device)
        chosen: list[int] = []
        for i in range(len(cand)):  # greedy over at most seed_candidates vectors, not over cells
            if covered[i]:
                continue
            chosen.append(i)
            covered |= answers[i]
            if active + len(chosen) == n_planes:
                break
        seeded = len(chosen)
        flat[active:active + seeded] = cand[chosen]
        wins[active:active + seeded] = 1
        count += seeded
    return {"positions": int(valid.sum()), "reinforced": len(ib), "silent": len(sb), "seeded": seeded}


def patches_at(x: torch.Tensor, k: int, ib: torch.Tensor, ih: torch.Tensor, iw: torch.Tensor) -> torch.Tensor:
    """The k x k patches of x (B, C, H, W) centred at positions (ib, ih, iw), zero padded: (N, C, k, k)."""
    padded = F.pad(x, (k // 2,) * 4)
    r = torch.arange(k, device=x.device)
    rows, cols = ih[:, None] + r, iw[:, None] + r  # (N, k)
    c = torch.arange(x.shape[1], device=x.device)
    return padded[ib[:, None, None, None], c[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


class NeocognitronTask(Task):
    one_process = "its learning is not split over ranks"
    monitor = "val_accuracy"
    monitor_mode = "max"
    progress_metric = "val_accuracy"

    def __init__(self, ctx: TaskContext, *, learn_images: list[int] | None = None, learn_batch: int = 64,
                 q: float = 1.0, compete: int = 1, seed_candidates: int = 256) -> None:
        super().__init__(ctx)
        self.data = self.load_data()
        if self.data.kind != "images" or not self.data.num_classes or self.data.train is None:
            raise ValueError(f"the neocognitron task needs labelled in-memory images, got data source "
                             f"{self.recipe.data.source}")
        if learn_batch < 1 or q <= 0 or compete < 0 or seed_candidates < 1:
            raise ValueError("task_args: learn_batch >= 1, q > 0, compete >= 0 and seed_candidates >= 1 are required")
        c = self.data.input_shape[0]
        # the network reads pixels in [0, 1] itself (its UG layer takes the contrast): identity normalisation
        self.meta = data_meta(self.data.num_classes, self.data.class_names, self.data.input_shape, [0.0] * c,
                              [1.0] * c)
        dev = self.runtime.device
        self.raw = build_classifier(self.recipe, self.meta).to(dev)
        self.net: Neocognitron = self.raw.net
        if not isinstance(self.net, Neocognitron):
            raise ValueError(f"the neocognitron task needs model: neocognitron, got {self.recipe.model.name}")
        self.layers = self.net.num_layers
        if self.recipe.epochs <= self.layers:
            raise ValueError(f"epochs must be more than the {self.layers} S-layer stages (one epoch each), so that "
                             f"the readout trains; got {self.recipe.epochs}")
        self.train_x, self.train_y = self.data.train.x.to(dev), self.data.train.y.to(dev)  # uint8, int64
        # the S-layers learn without labels, so a label budget (data.args.labels) leaves them every image
        unlabelled = self.data.extra.get("unlabelled")
        self.learn_x = self.train_x if unlabelled is None else torch.cat([self.train_x, unlabelled.x.to(dev)])
        n_train, n_learn = len(self.train_x), len(self.learn_x)
        learn_images = learn_images or [n_learn] * self.layers
        if len(learn_images) != self.layers or any(not 1 <= n <= n_learn for n in learn_images):
            raise ValueError(f"task_args.learn_images: one count per S-layer ({self.layers}), each in [1, {n_learn}]; "
                             f"got {learn_images}")
        self.learn_images, self.learn_batch = list(learn_images), learn_batch
        self.q, self.compete, self.seed_candidates = q, compete, seed_candidates
        self._readout_steps = -(-n_train // self.recipe.batch_size)
        self.optimizer = build_optimizer(self.recipe, self.net.readout.parameters())
        self.scheduler = build_scheduler(self.recipe, self.optimizer, total_steps=self.schedule_steps(),
                                         steps_per_epoch=self._readout_steps)
        self.sums: dict[str, float] = {}  # running totals of the epoch in progress
        self._epoch = 0  # the epoch in progress (its stage decides what a step is)
        self._features: dict[str, torch.Tensor] = {}  # final C-layer of each split, once the templates are final

    def header(self) -> dict[str, Any]:
        return {"data": self.recipe.data.source, "train_samples": len(self.train_x),
                "unlabelled_samples": len(self.learn_x) - len(self.train_x),
                "val_samples": len(self.data.val) if self.data.val else 0,
                "test_samples": len(self.data.test) if self.data.test else 0,
                "s_layers": self.layers, "planes": self.net.planes, "features": self.net.feature_size}

    # --- stages -------------------------------------------------------------------------------------------
    def steps_per_epoch(self, epoch: int) -> int:
        if epoch < self.layers:
            return -(-self.learn_images[epoch] // self.learn_batch)
        return self._readout_steps

    def is_final_stage(self, epoch: int) -> bool:
        return epoch >= self.layers

    def schedule_steps(self) -> int:
        first, end = self.ctx.schedule_epochs()  # the learning-rate schedule spans the readout epochs only
        return sum(self.steps_per_epoch(e) for e in range(max(first, self.layers), end))

    def samples_per_step(self) -> int:
        return self.learn_batch if self._epoch < self.layers else self.recipe.batch_size

    def _generator(self, epoch: int, step: int = 0) -> torch.Generator:
        """A pure function of (seed, epoch, step): an epoch resumed at a step draws what it drew there."""
        return torch.Generator().manual_seed(self.recipe.seed * 1_000_003 + epoch * 10_007 + step)

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        if start_step == 0:
            self.sums = {}
        self._epoch = epoch
        if epoch < self.layers:
            yield from self._learn_layer(epoch, start_step)
        else:
            yield from self._train_readout(epoch, start_step)

    def _learn_layer(self, layer: int, start_step: int) -> Iterator[dict[str, float]]:
        net, n, bs = self.net, self.learn_images[layer], self.learn_batch
        order = torch.randperm(len(self.learn_x), generator=self._generator(layer))[:n].to(self.learn_x.device)
        for step in range(start_step, self.steps_per_epoch(layer)):
            x = images_to_float(self.learn_x[order[step * bs:(step + 1) * bs]])
            with torch.no_grad():
                stats = competitive_step(
                    net.templates(layer), getattr(net, f"count{layer}"), getattr(net, f"wins{layer}"),
                    net.layer_input(x, layer), net.window(layer), net.theta_learn[layer], q=self.q,
                    compete=self.compete, seed_candidates=self.seed_candidates,
                    generator=self._generator(layer, step + 1))
            for key, value in stats.items():
                self.sums[key] = self.sums.get(key, 0) + value
            yield {"planes": float(net.count(layer)), "silent": stats["silent"] / max(1, stats["positions"])}

    def features(self, split: str) -> torch.Tensor:
        """The final C-layer (N, F) of the ``split`` images (train | val | test), computed once the templates are
        final (in the readout stage), then kept."""
        if split not in self._features:
            x = self.train_x if split == "train" else getattr(self.data, split).x.to(self.runtime.device)
            self._features[split] = extract_features(self.net, x, self.recipe.eval_batch_size)
        return self._features[split]

    def _train_readout(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        net, feats, bs = self.net, self.features("train"), self.recipe.batch_size
        if epoch == self.layers and start_step == 0:  # standardisation from the training set, once
            net.feature_mean.copy_(feats.mean(0))
            net.feature_std.copy_(feats.std(0).clamp_min(1e-3))
        order = torch.randperm(len(self.train_y), generator=self._generator(epoch)).to(self.train_y.device)
        for step in range(start_step, self._readout_steps):
            idx = order[step * bs:(step + 1) * bs]
            logits = net.classify(feats[idx])
            loss = F.cross_entropy(logits, self.train_y[idx])
            optimizer_step(loss, self.optimizer)
            if self.scheduler is not None and self.scheduler.per_step:
                self.scheduler.step()
            self.sums["loss"] = self.sums.get("loss", 0.0) + float(loss.detach()) * len(idx)
            self.sums["correct"] = self.sums.get("correct", 0) + int((logits.argmax(1) == self.train_y[idx]).sum())
            self.sums["seen"] = self.sums.get("seen", 0) + len(idx)
            yield {"loss": float(loss.detach())}
        if self.scheduler is not None and not self.scheduler.per_step:
            self.scheduler.step()

    def _split_metrics(self, name: str) -> tuple[float, float]:
        y = getattr(self.data, name).y
        with torch.no_grad():
            logits = self.net.classify(self.features(name)).cpu()
        return int((logits.argmax(1) == y).sum()) / len(y), float(F.cross_entropy(logits, y))

    def end_epoch(self, epoch: int) -> dict[str, float]:
        s = self.sums
        if epoch < self.layers:
            positions = max(1, s.get("positions", 0))
            return {"layer": epoch + 1, "planes": self.net.count(epoch), "seeded": s.get("seeded", 0),
                    "reinforced_fraction": s.get("reinforced", 0) / positions,
                    "silent_fraction": s.get("silent", 0) / positions}
        seen = max(1, s.get("seen", 0))
        metrics = {"train_loss": s.get("loss", 0.0) / seen, "train_accuracy": s.get("correct", 0) / seen,
                   "lr": self.optimizer.param_groups[0]["lr"]}
        if self.data.val is not None:
            metrics["val_accuracy"], metrics["val_loss"] = self._split_metrics("val")
        return metrics

    def finish(self, run_dir: Path) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for name in ("val", "test"):
            if getattr(self.data, name) is not None:
                final[f"{name}_accuracy"], final[f"{name}_loss"] = self._split_metrics(name)
        final["planes"] = [self.net.count(i) for i in range(self.layers)]
        final["features"] = self.net.feature_size
        if self.runtime.is_primary:
            images = self.data.val.x if self.data.val is not None else self.train_x
            templates_figure(self.net, images_to_float(images[:2000]), run_dir / "templates.png",
                             f"{self.recipe.name}: S-cell templates learned without labels")
        return final

    # --- checkpoints --------------------------------------------------------------------------------------
    def raw_model(self) -> nn.Module:
        return self.raw

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"data_meta": self.meta, "classifier": True}  # dlcli eval / attack rebuild it as a classifier

    def state_dict(self) -> dict[str, Any]:
        # the templates, counts and wins are buffers of the model: the checkpoint's weights hold them
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "sums": dict(self.sums)}

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler(self.scheduler, state.get("scheduler"), restore_schedule)
        self.sums = dict(state["sums"])
        self._features = {}

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        from dlcli.runs import load_split
        from dlcli.tasks.classify_eval import evaluate_classifier

        result = evaluate_classifier(checkpoint, ctx, split, out_dir)
        net = load_classifier(checkpoint).model.net
        result.metrics["planes"] = [net.count(i) for i in range(net.num_layers)]
        x, _ = load_split(ctx.recipe, split, ctx.data_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.figures.append(str(templates_figure(net, x[:2000], out_dir / "templates.png",
                                                   f"{ctx.recipe.name}: S-cell templates learned without labels")))
        return result


@torch.no_grad()
def extract_features(net: Neocognitron, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The final C-layer (N, F) of images x (N, C, H, W) (uint8 or float in [0, 1]), in fixed batches."""
    net.eval()
    return torch.cat([net.features(images_to_float(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


# ------------------------------------------------------------------------------------------------ figure


def receptive_fields(net: Neocognitron) -> list[tuple[int, int]]:
    """(size in pixels, stride in pixels) of an S-cell of each layer: S-layers keep the grid, C-layers halve it."""
    size, jump, out = net.dog.shape[-1] if net.contrast else 1, 1, []
    for k in net.kernels:
        size += (k - 1) * jump
        out.append((size, jump))
        size += (net.blur.shape[-1] - 1) * jump
        jump *= 2
    return out


@torch.no_grad()
def preferred_patches(net: Neocognitron, layer: int, x: torch.Tensor, top: int = FIGURE_TOP) -> torch.Tensor:
    """For each plane of ``layer``, the mean image patch (C, r, r) around the strongest cell of the ``top`` images
    that excite the plane most: what it has learned to detect, seen through the layers below. (K_used, C, r, r)"""
    size, jump = receptive_fields(net)[layer]
    size = min(size, 2 * max(x.shape[-2:]) - 1)
    x = x.to(net.feature_mean.device)
    u = net.s_layer(layer, net.layer_input(x, layer))[:, :net.count(layer)]  # (B, K, h, w)
    b, _, _, w = u.shape
    strongest, at = u.flatten(2).max(2)  # (B, K): each image's strongest cell of each plane, and where
    values, ib = strongest.T.topk(min(top, b), dim=1)  # (K, top): the images that excite each plane most
    where = at.T.gather(1, ib)
    ih, iw = where // w, where % w
    pad = size // 2
    padded = F.pad(x, (pad,) * 4)
    r = torch.arange(size, device=x.device)
    rows = (ih * jump)[..., None] + r  # (K, top, size): pixel rows around each cell's centre
    cols = (iw * jump)[..., None] + r
    crops = padded.permute(0, 2, 3, 1)[ib[..., None, None], rows[..., :, None], cols[..., None, :]]  # (K,top,r,r,C)
    weight = (values > 0).float()[..., None, None, None]  # a cell that never fires shows blank
    return ((crops * weight).sum(1) / weight.sum(1).clamp_min(1)).permute(0, 3, 1, 2).cpu()


def templates_figure(net: Neocognitron, x: torch.Tensor, path: Path, title: str) -> Path:
    """One block per S-layer, up to FIGURE_PLANES planes each, the most reinforced first. S1: the templates
    themselves (on-centre minus off-centre input); higher layers: the mean patch of the images that excite
    each plane most (``preferred_patches``), since their templates live on the planes below."""
    plt = pyplot()
    cols = 16
    blocks = []
    for i in range(net.num_layers):
        used = net.count(i)
        order = getattr(net, f"wins{i}")[:used].argsort(descending=True)[:FIGURE_PLANES].cpu()
        if i == 0:
            t = net.templates(0)[:used].cpu()
            img = t[:, 0] - t[:, 1] if net.contrast else t[:, 0]
            label, signed = "S1 templates (on − off centre)", True
        else:
            img = preferred_patches(net, i, x)[:, 0]
            label, signed = f"S{i + 1}: mean patch of the {FIGURE_TOP} images exciting each plane most", False
        blocks.append((label, img[order], used, signed))
    rows = [max(1, -(-len(b[1]) // cols)) for b in blocks]
    fig = plt.figure(figsize=(cols * 0.55, sum(rows) * 0.6 + 0.45 * len(blocks) + 0.5))
    grid = fig.add_gridspec(len(blocks), 1, height_ratios=[r + 0.6 for r in rows], left=0.02, right=0.98,
                            bottom=0.02, top=1 - 0.5 / fig.get_figheight())
    for g, (label, img, used, signed) in zip(grid, blocks):
        sub = g.subgridspec(-(-len(img) // cols) or 1, cols, wspace=0.08, hspace=0.08)
        for j in range(len(img)):
            ax = fig.add_subplot(sub[j // cols, j % cols])
            m = float(img[j].abs().max()) or 1.0
            ax.imshow(img[j].numpy(), cmap="bwr" if signed else "gray", vmin=-m if signed else 0, vmax=m)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(f"{label}; {used} planes" + (f", {len(img)} shown" if len(img) < used else ""),
                             fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


register_task("neocognitron", summary="Fukushima: S-layers by winner-take-all without labels, linear readout")(
    NeocognitronTask)
