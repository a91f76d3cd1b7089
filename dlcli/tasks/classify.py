"""Supervised image classification with softmax + cross-entropy (LeNet-5 on MNIST, the CIFAR-10 nets, ...).

Images stay uint8 tensors on the training device and batches come from ``dlcli.batches.ImageBatches``: a
permutation that is a pure function of (seed, epoch), augmentations drawn per step, sharded by rank under
torchrun. The loss of a step is summed over this rank's samples and divided by the global batch, so DDP's
averaging over N processes gives exactly the gradient one process computes. The model is wrapped with its
input normalisation (``dlcli.classifier.Normalized``), so every consumer (eval, attacks) feeds pixels in [0, 1].
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.batches import ImageBatches, images_to_float, translate
from dlcli.classifier import accuracy_and_loss, build_classifier, check_fits, data_meta, predict
from dlcli.data import Split
from dlcli.errors import DlcliError
from dlcli.registry import register_task
from dlcli.runtime import optimizer_step
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.optim import build_optimizer, build_scheduler, load_scheduler

__all__ = ["ClassifyTask", "predict", "accuracy_and_loss", "shift_batch"]


def shift_batch(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (B, C, H, W) by up to ``max_shift`` pixels, zero fill (``dlcli.batches.translate``)."""
    return translate(x, max_shift, generator)


def worker_message(e: Exception) -> str:
    """The message of an error raised in a DataLoader worker, without the "Caught ... in DataLoader worker
    process N. Original Traceback ..." that torch wraps around it (an error raised in this process is as is)."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), text)
    return last.split(f"{type(e).__name__}: ", 1)[-1].strip()


class ClassifyTask(Task):
    monitor = "val_accuracy"
    monitor_mode = "max"
    progress_metric = "val_accuracy"

    def __init__(self, ctx: TaskContext, *, shift: int = 0, crop: int = 0, flip: bool = False,
                 label_smoothing: float = 0.0, workers: int = 2, eval_test_every_epoch: bool = False) -> None:
        super().__init__(ctx)
        if shift < 0 or crop < 0 or not 0 <= label_smoothing < 1 or workers < 0:
            raise ValueError("task_args: shift >= 0, crop >= 0, 0 <= label_smoothing < 1 and workers >= 0 are "
                             "required")
        if shift and crop:
            raise ValueError("task_args: shift and crop are the same augmentation (pad, then a random window); "
                             "set one of them")
        self.data = self.load_data()
        if self.data.kind != "images" or not self.data.num_classes:
            raise ValueError(f"the classify task needs labelled images, got data source {self.recipe.data.source}")
        self.label_smoothing, self.workers = label_smoothing, workers
        # Test accuracy after every epoch is for time-to-accuracy benchmarks only: the test split never
        # chooses anything (best.pt is picked on validation).
        self.eval_test_every_epoch = eval_test_every_epoch
        rt = self.runtime
        self.meta = data_meta(self.data.num_classes, self.data.class_names, self.data.input_shape, self.data.mean,
                              self.data.std)
        model = build_classifier(self.recipe, self.meta)
        check_fits(model, self.meta, self.recipe.model.name)
        self.model, self.raw = rt.prepare(model)
        dev = rt.device
        rt.notes.extend(self.data.extra.get("notes", []))  # e.g. skipped corrupt images, a decoded-data cache
        # in-memory images (uint8 on the device), or None when the source streams its training images from a
        # DataLoader (``train_dataset``: image folders decoded by workers)
        self.batches = None if self.data.train is None else ImageBatches(
            self.data.train.x.to(dev), self.data.train.y.to(dev), self.recipe.batch_size, self.recipe.seed,
            shift=shift, crop=crop, flip=flip, rank=rt.rank, world_size=rt.world_size)
        self.val_split = Split(self.data.val.x.to(dev), self.data.val.y.to(dev)) if self.data.val else None
        self.test_split = Split(self.data.test.x.to(dev), self.data.test.y.to(dev)) if self.data.test else None
        self.batch_size = self.recipe.batch_size
        if self.data.train_dataset is None and self.batches is None:
            raise ValueError(f"data source {self.recipe.data.source} gave no training images")
        n = len(self.data.train_dataset) if self.data.train_dataset is not None else len(self.batches)
        self._steps = -(-n // self.batch_size)
        self.optimizer = build_optimizer(self.recipe, self.raw.parameters())
        self.scheduler = build_scheduler(self.recipe, self.optimizer, total_steps=self.schedule_steps(),
                                         steps_per_epoch=self._steps)
        self.scaler = rt.grad_scaler()
        self.loss_sum = torch.zeros((), device=dev)  # summed on the device: no sync per step
        self.correct = torch.zeros((), device=dev, dtype=torch.long)
        self.seen = torch.zeros((), device=dev, dtype=torch.long)

    def header(self) -> dict[str, Any]:
        return {
            "data": self.recipe.data.source,
            "train_samples": len(self.data.train_dataset if self.data.train_dataset is not None else self.batches),
            "val_samples": len(self.val_split) if self.val_split else 0,
            "test_samples": len(self.data.test) if self.data.test else 0,
            "input_shape": list(self.data.input_shape),
            "classes": self.data.num_classes,
        }

    def steps_per_epoch(self, epoch: int) -> int:
        return self._steps

    def samples_per_step(self) -> int:
        return self.batch_size

    def _loader_batches(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """The DataLoader path, for data that does not fit in memory: a DistributedSampler under torchrun."""
        rt = self.runtime
        per_rank = self.batch_size // rt.world_size
        if rt.distributed:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(self.data.train_dataset, num_replicas=rt.world_size, rank=rt.rank,
                                         shuffle=True, seed=self.recipe.seed)
            sampler.set_epoch(epoch)
            kwargs: dict[str, Any] = {"sampler": sampler}
        else:
            kwargs = {"shuffle": True, "generator": torch.Generator().manual_seed(self.recipe.seed * 1000 + epoch)}
        loader = torch.utils.data.DataLoader(self.data.train_dataset, batch_size=per_rank, num_workers=self.workers,
                                             pin_memory=rt.device.type == "cuda", **kwargs)
        try:
            for x, y in itertools.islice(loader, start_step, None):
                x = images_to_float(x.to(rt.device, non_blocking=True))
                yield x, y.to(rt.device, non_blocking=True), len(y) * rt.world_size
        except DlcliError as e:  # raised in a worker: torch re-raises it with the worker's traceback as message
            raise DlcliError(worker_message(e)) from None

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        if start_step == 0:
            self.loss_sum.zero_()
            self.correct.zero_()
            self.seen.zero_()
        self.model.train()
        rt = self.runtime
        batches = (self._loader_batches(epoch, start_step) if self.data.train_dataset is not None
                   else self.batches.epoch(epoch, start_step))
        for xb, yb, n_global in batches:
            x = rt.to_input(xb)  # (the trainer marks each step as a new CUDA-graph iteration before it runs)
            with rt.autocast():
                logits = self.model(x)
                # summed here, divided by the global batch: N processes (DDP averages over them) step exactly
                # as one process does on the whole batch, the last partial batch included
                loss_sum = F.cross_entropy(logits.float(), yb, label_smoothing=self.label_smoothing,
                                           reduction="sum")
                loss = loss_sum * (rt.world_size / n_global)
            optimizer_step(loss, self.optimizer, self.scaler)
            if self.scheduler is not None and self.scheduler.per_step:
                self.scheduler.step()
            self.loss_sum += loss_sum.detach()
            self.correct += (logits.argmax(1) == yb).sum()
            self.seen += len(yb)
            yield {"loss": loss.detach() / rt.world_size}  # a tensor: the progress bar reads it only when it redraws
        if self.scheduler is not None and not self.scheduler.per_step:
            self.scheduler.step()

    def _split_metrics(self, split: Split) -> tuple[float, float]:
        """(accuracy, mean loss) over a whole split; under torchrun each rank scores its own part, once."""
        rt = self.runtime
        part = rt.shard(len(split))
        logits = predict(self.model, split.x[part], rt, self.recipe.eval_batch_size)
        y = split.y[part]
        sums = torch.stack([(logits.argmax(1) == y).sum().double(),
                            F.cross_entropy(logits, y, reduction="sum").double()]) if len(y) else \
            torch.zeros(2, dtype=torch.float64, device=rt.device)
        rt.all_reduce_sum(sums)
        return int(sums[0]) / max(1, len(split)), float(sums[1]) / max(1, len(split))

    def end_epoch(self, epoch: int) -> dict[str, float]:
        totals = torch.stack([self.loss_sum.double(), self.correct.double(), self.seen.double()])
        self.runtime.all_reduce_sum(totals)
        loss_sum, correct, seen = (float(v) for v in totals)
        metrics = {"train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen),
                   "lr": self.optimizer.param_groups[0]["lr"]}
        if self.val_split is not None:
            metrics["val_accuracy"], metrics["val_loss"] = self._split_metrics(self.val_split)
        if self.eval_test_every_epoch and self.test_split is not None:
            metrics["test_accuracy"], metrics["test_loss"] = self._split_metrics(self.test_split)
        return metrics

    def finish(self, run_dir: Path) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for name, split in (("val", self.val_split), ("test", self.test_split)):
            if split is not None:
                final[f"{name}_accuracy"], final[f"{name}_loss"] = self._split_metrics(split)
        return final

    def raw_model(self) -> nn.Module:
        return self.raw

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"data_meta": self.meta}

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank (a collective): the saved running sums are those of all ranks together.
        sums = torch.stack([self.loss_sum.double(), self.correct.double(), self.seen.double()])
        self.runtime.all_reduce_sum(sums)
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "loss_sum": float(sums[0]),  # running sums of the epoch in progress, all ranks together
            "correct": int(sums[1]),
            "seen": int(sums[2]),
        }

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler(self.scheduler, state.get("scheduler"), restore_schedule)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        mine = self.runtime.is_primary  # rank 0 carries the totals on; the others start from zero
        self.loss_sum.fill_(float(state["loss_sum"]) if mine else 0.0)
        self.correct.fill_(int(state["correct"]) if mine else 0)
        self.seen.fill_(int(state["seen"]) if mine else 0)

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        from dlcli.tasks.classify_eval import evaluate_classifier

        return evaluate_classifier(checkpoint, ctx, split, out_dir)


register_task("classify", summary="softmax + cross-entropy on labelled images")(ClassifyTask)
