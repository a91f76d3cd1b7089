"""Supervised image classification with softmax + cross-entropy (LeNet-5 on MNIST and friends).

Images stay uint8 tensors on the training device and batches are taken by indexing with a permutation
that is a pure function of (seed, epoch): no per-sample Python work, and an interrupted epoch resumes at the
exact batch it stopped at. The model is wrapped with its input normalisation (``Normalized``), so every
consumer (eval, attacks) feeds pixels in [0, 1].
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.data import DataBundle, Split, images_to_float
from dlcli.registry import register_task
from dlcli.runtime import Runtime
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.optim import build_optimizer, build_scheduler


class Normalized(nn.Module):
    """(x - mean) / std in front of a network; x is in [0, 1] pixel space, (B, C, H, W)."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_classifier(task: Task, data: DataBundle) -> nn.Module:
    c, h, _ = data.input_shape
    net = task.build_model(num_classes=data.num_classes, in_channels=c, input_size=h)
    return Normalized(net, data.mean or (0.0,) * c, data.std or (1.0,) * c)


def shift_batch(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill): the classic MNIST distortion. (B,C,H,W)"""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(x.device)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, runtime: Runtime, batch_size: int) -> torch.Tensor:
    """Logits (N, K) in float32 for uint8 or float images x (N, C, H, W), batched on the device."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = runtime.to_input(images_to_float(x[i : i + batch_size].to(runtime.device)))
        with runtime.autocast():
            out.append(model(xb).float())
    return torch.cat(out) if out else torch.empty(0)


def accuracy_and_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(fraction correct, mean cross-entropy in nats) of logits (N, K) against labels (N,)."""
    correct = int((logits.argmax(1) == y).sum())  # an exact count: 0.99, not float32's 0.99000001
    return correct / max(1, len(y)), float(F.cross_entropy(logits, y))


class ClassifyTask(Task):
    monitor = "val_accuracy"
    monitor_mode = "max"
    progress_metric = "val_accuracy"

    def __init__(self, ctx: TaskContext, *, shift: int = 0, label_smoothing: float = 0.0,
                 workers: int = 2, eval_test_every_epoch: bool = False) -> None:
        super().__init__(ctx)
        if shift < 0 or not 0 <= label_smoothing < 1 or workers < 0:
            raise ValueError("task_args: shift >= 0, 0 <= label_smoothing < 1 and workers >= 0 are required")
        self.data = self.load_data()
        if self.data.kind != "images" or not self.data.num_classes:
            raise ValueError(f"the classify task needs labelled images, got data source {self.recipe.data.source}")
        self.shift, self.label_smoothing, self.workers = shift, label_smoothing, workers
        # Test accuracy after every epoch is for time-to-accuracy benchmarks only: the test split never
        # chooses anything (best.pt is picked on validation).
        self.eval_test_every_epoch = eval_test_every_epoch
        rt = self.runtime
        self.model, self.raw = rt.prepare(build_classifier(self, self.data))
        dev = rt.device
        assert self.data.train is not None
        self.train_split = Split(self.data.train.x.to(dev), self.data.train.y.to(dev))
        self.val_split = Split(self.data.val.x.to(dev), self.data.val.y.to(dev)) if self.data.val else None
        self.test_split = Split(self.data.test.x.to(dev), self.data.test.y.to(dev)) if self.data.test else None
        self.batch_size = self.recipe.batch_size
        n = len(self.data.train_dataset) if self.data.train_dataset is not None else len(self.train_split)
        self._steps = math.ceil(n / self.batch_size)
        self.optimizer = build_optimizer(self.recipe, self.raw.parameters())
        self.scheduler = build_scheduler(self.recipe, self.optimizer, self._steps)
        self.scaler = rt.grad_scaler()
        self.loss_sum = torch.zeros((), device=dev)  # summed on the device: no sync per step
        self.correct = torch.zeros((), device=dev, dtype=torch.long)
        self.seen = 0

    def header(self) -> dict[str, Any]:
        return {
            "data": self.recipe.data.source,
            "train_samples": len(self.data.train_dataset or self.train_split),
            "val_samples": len(self.val_split) if self.val_split else 0,
            "test_samples": len(self.data.test) if self.data.test else 0,
            "input_shape": list(self.data.input_shape),
            "classes": self.data.num_classes,
        }

    def steps_per_epoch(self) -> int:
        return self._steps

    def samples_per_step(self) -> int:
        return self.batch_size

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.recipe.seed * 1000 + epoch)

    def _batches(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Generator]]:
        g = self._generator(epoch)
        if self.data.train_dataset is not None:  # the DataLoader path, for data that does not fit in memory
            loader = torch.utils.data.DataLoader(
                self.data.train_dataset, batch_size=self.batch_size, shuffle=True, generator=g,
                num_workers=self.workers, pin_memory=self.runtime.device.type == "cuda",
                persistent_workers=False,
            )
            for x, y in itertools.islice(loader, start_step, None):
                yield x.to(self.runtime.device, non_blocking=True), y.to(self.runtime.device, non_blocking=True), g
            return
        perm = torch.randperm(len(self.train_split), generator=g).to(self.runtime.device)
        for step in range(start_step, self._steps):
            idx = perm[step * self.batch_size : (step + 1) * self.batch_size]
            # one augmentation generator per step, so a resumed epoch draws exactly the same shifts
            aug = torch.Generator().manual_seed(((self.recipe.seed * 1000 + epoch) << 20) + step)
            yield self.train_split.x[idx], self.train_split.y[idx], aug

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        if start_step == 0:
            self.loss_sum.zero_()
            self.correct.zero_()
            self.seen = 0
        self.model.train()
        rt = self.runtime
        for xb, yb, aug in self._batches(epoch, start_step):
            x = images_to_float(xb)
            if self.shift:
                x = shift_batch(x, self.shift, aug)
            x = rt.to_input(x)
            with rt.autocast():
                logits = self.model(x)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=self.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            if self.scheduler is not None and self.scheduler.per_step:
                self.scheduler.step()
            self.loss_sum += loss.detach() * len(yb)
            self.correct += (logits.argmax(1) == yb).sum()
            self.seen += len(yb)
            yield {"loss": loss.detach()}  # a tensor: the progress bar reads it only when it redraws
        if self.scheduler is not None and not self.scheduler.per_step:
            self.scheduler.step()

    def end_epoch(self, epoch: int) -> dict[str, float]:
        metrics = {"train_loss": float(self.loss_sum) / max(1, self.seen),
                   "train_accuracy": float(self.correct) / max(1, self.seen),
                   "lr": self.optimizer.param_groups[0]["lr"]}
        if self.val_split is not None:
            logits = predict(self.model, self.val_split.x, self.runtime, self.recipe.eval_batch_size)
            metrics["val_accuracy"], metrics["val_loss"] = accuracy_and_loss(logits, self.val_split.y)
        if self.eval_test_every_epoch and self.test_split is not None:
            logits = predict(self.model, self.test_split.x, self.runtime, self.recipe.eval_batch_size)
            metrics["test_accuracy"], metrics["test_loss"] = accuracy_and_loss(logits, self.test_split.y)
        return metrics

    def finish(self, run_dir: Path) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for name, split in (("val", self.val_split), ("test", self.test_split)):
            if split is None:
                continue
            logits = predict(self.model, split.x, self.runtime, self.recipe.eval_batch_size)
            final[f"{name}_accuracy"], final[f"{name}_loss"] = accuracy_and_loss(logits, split.y)
        return final

    def raw_model(self) -> nn.Module:
        return self.raw

    def checkpoint_meta(self) -> dict[str, Any]:
        d = self.data
        return {"data_meta": {"num_classes": d.num_classes, "class_names": list(d.class_names),
                              "input_shape": list(d.input_shape), "mean": list(d.mean), "std": list(d.std)}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "loss_sum": float(self.loss_sum),
            "correct": int(self.correct),
            "seen": self.seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.loss_sum.fill_(float(state["loss_sum"]))
        self.correct.fill_(int(state["correct"]))
        self.seen = int(state["seen"])

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        from dlcli.tasks.classify_eval import evaluate_classifier

        return evaluate_classifier(checkpoint, ctx, split, out_dir)


register_task("classify", summary="softmax + cross-entropy on labelled images")(ClassifyTask)
