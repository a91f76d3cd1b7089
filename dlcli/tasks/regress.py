"""Least-squares fitting by full-batch gradient descent: the XOR network and universal approximation.

Each epoch is ``steps_per_epoch`` gradient steps on the whole training set (4 XOR points, or a few hundred
samples of a 1-D function). For 2-class ±1 targets (XOR) the metric is the sign accuracy; for functions it
is the max and mean absolute error on the dense evaluation grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from dlcli.plots import pyplot as _plt
from dlcli.registry import register_task
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.runtime import optimizer_step
from dlcli.tasks.optim import build_optimizer, build_scheduler, load_scheduler


class RegressTask(Task):
    monitor = "train_loss"
    monitor_mode = "min"

    def __init__(self, ctx: TaskContext, *, steps_per_epoch: int = 100) -> None:
        super().__init__(ctx)
        if steps_per_epoch < 0:
            raise ValueError(f"task_args.steps_per_epoch must be >= 0, got {steps_per_epoch}")
        self.data = self.load_data()
        if self.data.kind != "points":
            raise ValueError(f"the regress task needs point data (xor, function1d), got {self.recipe.data.source}")
        self.classify = self.data.num_classes == 2  # XOR: targets ±1, report sign accuracy
        self.progress_metric = "train_accuracy" if self.classify else "max_abs_error"
        in_features = self.data.input_shape[0]
        model = self.build_model(in_features=in_features, out_features=1)
        self.model, self.raw = self.runtime.prepare(model)
        dev = self.runtime.device
        self.x = self.data.train.x.to(dev)
        self.y = self.data.train.y.to(dev).float().reshape(len(self.x), -1)  # (N, 1)
        self.grid_x = self.data.test.x.to(dev)
        self.grid_y = self.data.test.y.to(dev).float().reshape(len(self.grid_x), -1)
        self._steps = steps_per_epoch
        self.optimizer = build_optimizer(self.recipe, self.raw.parameters())
        self.scheduler = build_scheduler(self.recipe, self.optimizer, total_steps=self.schedule_steps(),
                                         steps_per_epoch=max(1, steps_per_epoch))
        self.scaler = self.runtime.grad_scaler()
        self.loss_sum, self.loss_count = 0.0, 0

    def header(self) -> dict[str, Any]:
        return {"train_samples": len(self.x), "eval_points": len(self.grid_x)}

    def steps_per_epoch(self, epoch: int) -> int:
        return self._steps

    def samples_per_step(self) -> int:
        return len(self.x)

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        if start_step == 0:
            self.loss_sum, self.loss_count = 0.0, 0
        self.model.train()
        for _ in range(start_step, self._steps):
            with self.runtime.autocast():
                loss = nn.functional.mse_loss(self.model(self.x).float(), self.y)  # least squares
            optimizer_step(loss, self.optimizer, self.scaler)
            if self.scheduler is not None and self.scheduler.per_step:
                self.scheduler.step()
            value = float(loss.detach())
            self.loss_sum += value
            self.loss_count += 1
            yield {"loss": value}
        if self.scheduler is not None and not self.scheduler.per_step:
            self.scheduler.step()

    @torch.no_grad()
    def metrics(self) -> dict[str, Any]:
        self.model.eval()
        out: dict[str, Any] = {}
        pred = self.model(self.x).float()
        out["train_mse"] = float(nn.functional.mse_loss(pred, self.y))
        if self.classify:
            sign = torch.where(pred > 0, 1.0, -1.0)
            out["train_correct"] = int((sign == self.y).sum())
            out["train_accuracy"] = out["train_correct"] / len(self.y)
            out["outputs"] = [round(v, 6) for v in pred.squeeze(1).tolist()]
        else:
            err = (self.model(self.grid_x).float() - self.grid_y).abs()
            out["max_abs_error"] = float(err.max())
            out["mean_abs_error"] = float(err.mean())
        return out

    def end_epoch(self, epoch: int) -> dict[str, float]:
        m = {k: v for k, v in self.metrics().items() if k != "outputs"}
        train_loss = self.loss_sum / self.loss_count if self.loss_count else m["train_mse"]
        return {"train_loss": train_loss, **m}

    def finish(self, run_dir: Path) -> dict[str, Any]:
        final = self.metrics()
        if self.classify:
            plot_xor_regions(self.model, self.x, self.y, run_dir / "regions.png", self.recipe.name)
        else:
            plot_fit(self.model, self.x, self.y, self.grid_x, self.grid_y, run_dir / "fit.png", self.recipe.name,
                     final["max_abs_error"])
        return final

    def raw_model(self) -> nn.Module:
        return self.raw

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
        }

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler(self.scheduler, state.get("scheduler"), restore_schedule)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.loss_sum, self.loss_count = float(state["loss_sum"]), int(state["loss_count"])

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        task = cls(ctx, **ctx.recipe.task_args)
        task.raw.load_state_dict(checkpoint["model"])
        metrics = task.metrics()
        tables = []
        figures = []
        if task.classify:
            outputs = metrics.pop("outputs")
            rows = [[f"({int(a)}, {int(b)})", int(t), o, "+1" if o > 0 else "-1"]
                    for (a, b), t, o in zip(task.x.tolist(), task.y.squeeze(1).tolist(), outputs)]
            tables.append(("outputs", ["x", "target", "output y", "sign"], rows))
            metrics["outputs"] = outputs
            figures.append(str(plot_xor_regions(task.model, task.x, task.y, out_dir / "regions.png", ctx.recipe.name)))
        else:
            figures.append(str(plot_fit(task.model, task.x, task.y, task.grid_x, task.grid_y, out_dir / "fit.png",
                                        ctx.recipe.name, metrics["max_abs_error"])))
        return EvalResult(metrics, tables, figures)


@torch.no_grad()
def plot_xor_regions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, path: Path, title: str) -> Path:
    plt = _plt()
    model.eval()
    g = torch.linspace(-0.5, 1.5, 301, device=x.device)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    z = model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).float().reshape(gx.shape).cpu()
    fig, ax = plt.subplots(figsize=(5, 4.4))
    cs = ax.contourf(gx.cpu(), gy.cpu(), z, levels=[-1e9, 0, 1e9], colors=["#f4b6b6", "#b6cdf4"])
    ax.contour(gx.cpu(), gy.cpu(), z, levels=[0], colors="k", linewidths=1)
    xs, ys = x.cpu(), y.cpu().squeeze(1)
    ax.scatter(xs[ys > 0, 0], xs[ys > 0, 1], c="tab:blue", s=80, marker="o", label="+1", edgecolors="k")
    ax.scatter(xs[ys <= 0, 0], xs[ys <= 0, 1], c="tab:red", s=80, marker="s", label="-1", edgecolors="k")
    ax.set_title(f"{title}: decision regions (y > 0 blue)")
    ax.legend(loc="upper right", fontsize=8)
    del cs
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor, path: Path,
             title: str, max_err: float) -> Path:
    plt = _plt()
    model.eval()
    pred = model(gx).float().cpu().squeeze(1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(gx.cpu().squeeze(1), gy.cpu().squeeze(1), "k-", lw=2, label="target")
    ax.plot(gx.cpu().squeeze(1), pred, "tab:orange", lw=1.5, ls="--", label="network")
    ax.scatter(x.cpu().squeeze(1), y.cpu().squeeze(1), s=4, c="tab:blue", alpha=0.4, label="training samples")
    ax.set_title(f"{title}: max |error| = {max_err:.4f}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


register_task("regress", summary="least squares by full-batch gradient descent")(RegressTask)
