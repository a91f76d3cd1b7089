"""Greedy layer-wise pretraining, then supervised fine-tuning (2006-2010): stacked denoising autoencoders
(Vincent et al. 2010) and deep belief networks (Hinton, Osindero, Teh 2006; Bengio et al. 2007).

The network is a ``deep-mlp`` (sigmoid layers, then a softmax). Its epochs form stages:

    epochs [0, P)        stage 1: layer 1 is pretrained on the pixels
    epochs [P, 2P)       stage 2: layer 2 on the codes of layer 1 (the layers below stay fixed)
    ...                  stage L: layer L
    epochs [L·P, epochs) stage L + 1: the whole stack and a softmax layer fine-tuned on the labels

with P = ``pretrain_epochs``. Only the fine-tuning stage chooses ``best.pt`` (``is_final_stage``; validation
accuracy); the learning-rate schedule spans the fine-tuning steps alone. ``method: dae`` pretrains each layer
as a denoising autoencoder with tied weights and masking noise, ``method: rbm`` as a restricted Boltzmann
machine trained by CD-k (the math: ``dlcli.tasks.layerwise``). ``pretrain: false`` keeps every epoch but
gives the pretraining ones no steps: the same seed, the same initial weights, the same fine-tuning.

Pretraining sees every training image: with a label budget (``data.args.labels``) the unlabelled rest too.
``pretrained_from: RUN`` starts from the stack another run pretrained (its pretraining epochs then have no
steps): pretraining reads no label, so one pretrained stack serves every label budget.
Fine-tuning sees the labelled ones; ``finetune_steps`` fixes the steps of a fine-tuning epoch (for small label
budgets, where a pass is a step or two), otherwise a fine-tuning epoch is one pass over the labelled images.

Batches are a seeded permutation per (seed, epoch) and every random draw of a step (masking noise, Gibbs
samples) comes from a generator seeded by (seed, epoch, step), so a run resumed in the middle of a stage
continues exactly. The fine-tuned network is saved as a plain classifier (``Normalized(deep-mlp)`` with mean
0 and std 1, so it reads pixels in [0, 1]): ``dlcli eval`` and ``dlcli attack`` load it like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.batches import ImageBatches
from dlcli.classifier import build_classifier, data_meta, predict
from dlcli.data import Split
from dlcli.registry import register_task
from dlcli.runtime import optimizer_step
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.layerwise import cd_k, dae_loss, rbm_hidden, rbm_visible
from dlcli.tasks.optim import build_optimizer, build_scheduler, load_scheduler
from dlcli.tasks.pretrain_figures import write_pretrain_figures

METHODS = ("dae", "rbm")
PRETRAIN_OPTIMIZERS = ("sgd", "adam")
CODE_CHUNK = 4096  # images per forward pass when the codes of a layer are computed for the whole set


class PretrainTask(Task):
    one_process = "its greedy layer-wise stages are not split over ranks"
    monitor = "val_accuracy"
    monitor_mode = "max"
    progress_metric = "val_accuracy"

    def __init__(self, ctx: TaskContext, *, method: str = "dae", pretrain: bool = True, pretrain_epochs: int = 5,
                 noise: float | list[float] = 0.25, cd_k: int = 1, pretrain_optim: str = "sgd",
                 pretrain_lr: float = 0.1, pretrain_momentum: float = 0.9, pretrain_weight_decay: float = 0.0,
                 finetune_steps: int | None = None, gibbs_steps: int = 1000,
                 pretrained_from: str | None = None) -> None:
        super().__init__(ctx)
        if method not in METHODS:
            raise ValueError(f"task_args.method must be one of {', '.join(METHODS)}, got {method!r}")
        if pretrain_optim not in PRETRAIN_OPTIMIZERS:
            raise ValueError(f"task_args.pretrain_optim must be one of {', '.join(PRETRAIN_OPTIMIZERS)}, "
                             f"got {pretrain_optim!r}")
        if pretrain_epochs < 1 or cd_k < 1 or pretrain_lr <= 0 or not 0 <= pretrain_momentum < 1 or \
                pretrain_weight_decay < 0 or (finetune_steps is not None and finetune_steps < 1) or gibbs_steps < 1:
            raise ValueError("task_args: pretrain_epochs >= 1, cd_k >= 1, pretrain_lr > 0, 0 <= pretrain_momentum "
                             "< 1, pretrain_weight_decay >= 0, finetune_steps >= 1 (or null) and gibbs_steps >= 1 "
                             "are required")
        rt = self.runtime
        self.method, self.pretrain, self.pretrain_epochs, self.k = method, pretrain, pretrain_epochs, cd_k
        self.finetune_steps, self.gibbs_steps = finetune_steps, gibbs_steps
        self.data = self.load_data()
        if self.data.kind != "images" or self.data.train is None or not self.data.num_classes:
            raise ValueError(f"the pretrain task needs labelled images, got data source {self.recipe.data.source}")
        # pixels in [0, 1] go straight in (RBM units are probabilities): normalisation mean 0, std 1
        c = int(self.data.input_shape[0])
        self.meta = data_meta(self.data.num_classes, self.data.class_names, self.data.input_shape, [0.0] * c,
                              [1.0] * c)
        self.model, self.raw = rt.prepare(build_classifier(self.recipe, self.meta))
        self.net = self.raw.net
        if not hasattr(self.net, "visible_bias"):
            raise ValueError(f"the pretrain task needs the deep-mlp model, got {self.recipe.model.name}")
        self.layers = len(self.net.hidden)
        self.noise = list(noise) if isinstance(noise, list) else [float(noise)] * self.layers
        if len(self.noise) != self.layers or not all(0 <= v < 1 for v in self.noise):
            raise ValueError(f"task_args.noise: one masking fraction in [0, 1) or one per layer ({self.layers}), "
                             f"got {noise}")
        self.pretrain_stages = self.layers * pretrain_epochs  # epochs before fine-tuning
        if self.recipe.epochs <= self.pretrain_stages:
            raise ValueError(f"epochs {self.recipe.epochs} leave no fine-tuning: {self.layers} layers x "
                             f"pretrain_epochs {pretrain_epochs} = {self.pretrain_stages} pretraining epochs come "
                             f"first; set epochs above {self.pretrain_stages}")
        dev = rt.device
        unlabelled = self.data.extra.get("unlabelled")
        pre_x = self.data.train.x if unlabelled is None else torch.cat([self.data.train.x, unlabelled.x])
        self.pre_x = pre_x.to(dev)  # every training image, uint8 (N, C, H, W)
        self.labelled = ImageBatches(self.data.train.x.to(dev), self.data.train.y.to(dev), self.recipe.batch_size,
                                     self.recipe.seed)
        self.val = Split(self.data.val.x.to(dev), self.data.val.y.to(dev)) if self.data.val else None
        self.test = Split(self.data.test.x.to(dev), self.data.test.y.to(dev)) if self.data.test else None
        self._pre_steps = -(-len(self.pre_x) // self.recipe.batch_size)
        self._ft_steps = finetune_steps or self.labelled.steps()
        self._codes: tuple[int, torch.Tensor] | None = None  # (stage, inputs of that stage's layer)
        self.pre_optimizers = [self._pretrain_optimizer(i, pretrain_optim, pretrain_lr, pretrain_momentum,
                                                        pretrain_weight_decay) for i in range(self.layers)]
        self.optimizer = build_optimizer(self.recipe, self.net.supervised_parameters())
        self.scheduler = build_scheduler(self.recipe, self.optimizer, total_steps=self.schedule_steps(),
                                         steps_per_epoch=self._ft_steps)
        self.sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss sum, correct, seen (this epoch)
        self.pretrained: dict[str, torch.Tensor] | None = None  # the stack at the end of pretraining
        self.pretrained_from = pretrained_from
        if pretrained_from is not None and pretrain:
            self._load_pretrained(pretrained_from)

    def _load_pretrained(self, path: str) -> None:
        """Start from the stack another run pretrained (pretraining never reads a label, so one pretrained
        stack serves every label budget); this run's pretraining epochs then have no steps."""
        from dlcli.checkpoint import find_checkpoint, load_checkpoint

        ckpt = load_checkpoint(find_checkpoint(path, prefer="last"))
        if ckpt.get("pretrained") is None:
            raise ValueError(f"task_args.pretrained_from: {path} holds no pretrained stack (a run that finished "
                             "its pretraining stages is needed)")
        try:
            self.net.load_state_dict(ckpt["pretrained"])
        except RuntimeError as e:
            raise ValueError(f"task_args.pretrained_from: {path} does not fit model.args "
                             f"({str(e).splitlines()[0][:120]})") from None
        self.pretrained = {k: v.clone() for k, v in ckpt["pretrained"].items()}

    def _pretrain_optimizer(self, i: int, name: str, lr: float, momentum: float,
                            weight_decay: float) -> torch.optim.Optimizer:
        layer = self.net.hidden[i]
        params = [layer.weight, layer.bias, self.net.visible_bias[i]]
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    # --- stages ---------------------------------------------------------------------------------------------
    def stage(self, epoch: int) -> int:
        """0 .. layers - 1: pretraining that layer; ``layers``: fine-tuning."""
        return epoch // self.pretrain_epochs if epoch < self.pretrain_stages else self.layers

    def is_final_stage(self, epoch: int) -> bool:
        return epoch >= self.pretrain_stages

    def steps_per_epoch(self, epoch: int) -> int:
        if epoch >= self.pretrain_stages:
            return self._ft_steps
        return self._pre_steps if self.pretrain and self.pretrained_from is None else 0

    def schedule_steps(self) -> int:
        """The schedule spans the fine-tuning steps of the span only."""
        first, end = self.ctx.schedule_epochs()
        return sum(self._ft_steps for e in range(max(first, self.pretrain_stages), end))

    def samples_per_step(self) -> int:
        return self.recipe.batch_size

    def header(self) -> dict[str, Any]:
        return {"data": self.recipe.data.source, "train_samples": len(self.pre_x),
                "labelled_samples": len(self.labelled), "val_samples": len(self.val) if self.val else 0,
                "test_samples": len(self.test) if self.test else 0, "method": self.method,
                "stages": f"{self.layers} x {self.pretrain_epochs} pretraining epochs"
                          f"{'' if self.pretrain else ' (skipped: pretrain false)'}"
                          f"{f' (loaded from {self.pretrained_from})' if self.pretrain and self.pretrained_from else ''}"
                          ", then fine-tuning"}

    # --- pretraining ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _layer_input(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """The inputs of layer ``stage`` for images x (N, C, H, W) uint8: (N, width) floats in [0, 1]."""
        out = []
        for i in range(0, len(x), CODE_CHUNK):
            out.append(self.net.codes(x[i:i + CODE_CHUNK].float().div_(255), stage))
        return torch.cat(out)

    def _inputs(self, stage: int) -> torch.Tensor:
        """Every training image's input to layer ``stage`` (cached per stage; a pure function of the layers
        below, which no longer change, so a resumed run computes the same)."""
        if self._codes is None or self._codes[0] != stage:
            self._codes = None  # free the previous stage's codes first
            self._codes = (stage, self._layer_input(stage, self.pre_x))
        return self._codes[1]

    def _generator(self, epoch: int, step: int) -> torch.Generator:
        return torch.Generator(device=self.runtime.device).manual_seed(
            ((self.recipe.seed * 1000 + epoch) << 20) + step + (1 << 40))

    def _layer_params(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.hidden[i].weight, self.net.hidden[i].bias, self.net.visible_bias[i]

    def _pretrain_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, Any]]:
        i = self.stage(epoch)
        inputs = self._inputs(i)
        batches = ImageBatches(inputs, torch.zeros(len(inputs), dtype=torch.long, device=inputs.device),
                               self.recipe.batch_size, self.recipe.seed)
        opt = self.pre_optimizers[i]
        W, b, c = self._layer_params(i)
        for step, (v, _, _) in enumerate(batches.epoch(epoch, start_step), start=start_step):
            g = self._generator(epoch, step)
            if self.method == "dae":
                loss = dae_loss(v, W, b, c, self.noise[i], g)
                optimizer_step(loss, opt)
            else:
                dW, db, dc, loss = cd_k(v, W, b, c, self.k, g)
                opt.zero_grad(set_to_none=True)
                W.grad, b.grad, c.grad = -dW, -db, -dc  # the optimiser descends: minus the ascent direction
                opt.step()
            self.sums[0] += loss.detach().double() * len(v)
            self.sums[2] += len(v)
            yield {"loss": loss.detach()}

    @torch.no_grad()
    def _val_reconstruction(self, i: int) -> float:
        """Squared reconstruction error of layer i on the clean validation inputs (summed over units, mean over
        images): through σ(Wᵀσ(Wv + b) + c), the autoencoder's reconstruction and an RBM's mean-field one."""
        if self.val is None:
            return float("nan")
        v = self._layer_input(i, self.val.x)
        W, b, c = self._layer_params(i)
        return float((rbm_visible(rbm_hidden(v, W, b), W, c) - v).pow(2).sum(1).mean())

    # --- fine-tuning ----------------------------------------------------------------------------------------
    def _finetune_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, Any]]:
        first = (epoch - self.pretrain_stages) * self._ft_steps + start_step  # fine-tuning steps before this one
        passes, step = divmod(first, self.labelled.steps())
        self.model.train()
        done = start_step
        while done < self._ft_steps:
            for x, y, _ in self.labelled.epoch(passes, step):
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
                optimizer_step(loss, self.optimizer)
                if self.scheduler is not None and self.scheduler.per_step:
                    self.scheduler.step()
                self.sums[0] += loss.detach().double() * len(y)
                self.sums[1] += (logits.argmax(1) == y).sum()
                self.sums[2] += len(y)
                done += 1
                yield {"loss": loss.detach()}
                if done == self._ft_steps:
                    break
            passes, step = passes + 1, 0
        if self.scheduler is not None and not self.scheduler.per_step:
            self.scheduler.step()

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, Any]]:
        if start_step == 0:
            self.sums.zero_()
        if epoch >= self.pretrain_stages:
            yield from self._finetune_steps(epoch, start_step)
        elif self.pretrain:
            yield from self._pretrain_steps(epoch, start_step)

    def _split_metrics(self, split: Split) -> tuple[float, float]:
        logits = predict(self.model, split.x, self.runtime, self.recipe.eval_batch_size)
        return int((logits.argmax(1) == split.y).sum()) / len(split), float(F.cross_entropy(logits, split.y))

    def end_epoch(self, epoch: int) -> dict[str, float]:
        stage = self.stage(epoch)
        loss_sum, correct, seen = (float(v) for v in self.sums)
        metrics: dict[str, float] = {"stage": stage + 1}
        if stage < self.layers:
            if self.pretrain and self.pretrained_from is None:
                metrics["pretrain_loss"] = loss_sum / max(1, seen)
                metrics["val_recon_error"] = self._val_reconstruction(stage)
            if epoch == self.pretrain_stages - 1 and self.pretrain and self.pretrained_from is None:
                self.pretrained = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
                self._codes = None
            return metrics
        metrics.update({"train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen),
                        "lr": self.optimizer.param_groups[0]["lr"]})
        if self.val is not None:
            metrics["val_accuracy"], metrics["val_loss"] = self._split_metrics(self.val)
        return metrics

    def finish(self, run_dir: Path) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for name, split in (("val", self.val), ("test", self.test)):
            if split is not None:
                acc, loss = self._split_metrics(split)
                final[f"{name}_accuracy"], final[f"{name}_error"], final[f"{name}_loss"] = acc, 1 - acc, loss
        final["pretrained"] = self.pretrain
        final["labelled_samples"] = len(self.labelled)
        if self.runtime.is_primary:
            final["figures"] = write_pretrain_figures(self._figure_source(), self.method, self.recipe,
                                                      self.data.input_shape, run_dir, self.gibbs_steps,
                                                      self.data.test.x if self.data.test else self.data.train.x)
        return final

    def _figure_source(self) -> dict[str, Any]:
        return {"model": self.raw.state_dict(), "pretrained": self.pretrained}

    # --- checkpoints ----------------------------------------------------------------------------------------
    def raw_model(self) -> nn.Module:
        return self.raw

    def checkpoint_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"data_meta": self.meta, "classifier": True}
        if self.pretrained is not None:
            meta["pretrained"] = self.pretrained
        return meta

    def state_dict(self) -> dict[str, Any]:
        return {"pre_optimizers": [o.state_dict() for o in self.pre_optimizers],
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "sums": self.sums.cpu(), "pretrained": self.pretrained}

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        for opt, s in zip(self.pre_optimizers, state["pre_optimizers"]):
            opt.load_state_dict(s)
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler(self.scheduler, state.get("scheduler"), restore_schedule)
        self.sums = state["sums"].to(self.runtime.device)
        self.pretrained = state.get("pretrained")

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        from dlcli.runs import load_split
        from dlcli.tasks.classify_eval import evaluate_classifier

        res = evaluate_classifier(checkpoint, ctx, split, out_dir)
        res.metrics["error"] = 1 - res.metrics["accuracy"]
        recipe = ctx.recipe
        x, _ = load_split(recipe, split, ctx.data_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        method = recipe.task_args.get("method", "dae")
        res.figures += write_pretrain_figures(checkpoint, method, recipe, tuple(checkpoint["data_meta"]["input_shape"]),
                                              out_dir, int(recipe.task_args.get("gibbs_steps", 1000)),
                                              (x * 255).round().to(torch.uint8))
        return res


register_task("pretrain", summary="greedy layer-wise pretraining (DAE or RBM), then fine-tuning")(PretrainTask)
