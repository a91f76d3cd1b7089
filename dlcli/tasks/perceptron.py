"""Rosenblatt's perceptron rule (1958) with Novikoff's mistake bound (1962).

One epoch is one pass over the training points in a fixed, seeded order. For each misclassified example
(x, d), d ∈ {-1, +1}: a += d·x, b += d. Training stops after a pass without a mistake. Novikoff: if a unit
vector w* separates the augmented points x̃ = (x, 1) with margin γ, the rule makes at most (R/γ)² updates,
R = max ‖x̃‖. We find w* as the max-margin direction (the minimum-norm point of the convex hull of the
d·x̃, by Frank-Wolfe), and report the margin w* actually achieves, so the bound quoted is always valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from dlcli.plots import pyplot
from dlcli.registry import register_task
from dlcli.tasks.base import EvalResult, Task, TaskContext


def max_margin(x: torch.Tensor, d: torch.Tensor, iters: int = 20000) -> tuple[torch.Tensor, float]:
    """Max-margin separator through the origin of the augmented points: (unit w*, its margin γ).

    γ = min_i d_i w*·x̃_i; γ <= 0 means the points are not linearly separable (XOR: the hull holds 0).
    Frank-Wolfe with exact line search on min ‖Z α‖², α in the simplex, Z rows d_i·x̃_i. (float64)
    """
    z = (d.double().unsqueeze(1) * torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1))
    alpha = torch.full((len(z),), 1.0 / len(z), dtype=torch.float64)
    p = alpha @ z  # current point of the hull, (D+1,)
    for _ in range(iters):
        i = int(torch.argmin(z @ p))  # vertex minimising <z_i, p>
        direction = z[i] - p
        denom = float(direction @ direction)
        if denom <= 1e-30:
            break
        step = min(1.0, max(0.0, float(-(p @ direction)) / denom))
        if step <= 1e-15:
            break
        alpha.mul_(1 - step)
        alpha[i] += step
        p = p + step * direction
    norm = float(p.norm())
    if norm < 1e-9:
        return torch.zeros_like(p), 0.0
    w = p / norm
    return w, float((z @ w).min())


class PerceptronTask(Task):
    monitor = "train_accuracy"
    monitor_mode = "max"
    progress_metric = "mistakes"

    def __init__(self, ctx: TaskContext, *, shuffle: bool = True) -> None:
        super().__init__(ctx)
        self.data = self.load_data()
        if self.data.kind != "points" or self.data.num_classes != 2:
            raise ValueError("the perceptron task needs 2-class points (data: linear2d or xor)")
        self.model = self.build_model(in_features=self.data.input_shape[0])
        if not hasattr(self.model, "predict"):
            raise ValueError(f"the perceptron task needs model: perceptron, got {self.recipe.model.name}")
        self.shuffle = shuffle
        self.x, self.y = self.data.train.x.double(), self.data.train.y
        self.model.double()
        self.updates = 0  # total updates over all epochs
        self.epoch_mistakes = 0
        self.mistakes_per_epoch: list[int] = []

    def header(self) -> dict[str, Any]:
        return {"train_samples": len(self.x)}

    def steps_per_epoch(self, epoch: int) -> int:
        return len(self.x)

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.x))
        return torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.recipe.seed * 1000 + epoch))

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        if start_step == 0:
            self.epoch_mistakes = 0
        order = self._order(epoch)
        a, b = self.model.a, self.model.b
        for i in order[start_step:].tolist():
            x, d = self.x[i], int(self.y[i])
            predicted = 1 if float(x @ a + b) > 0 else -1
            if predicted != d:  # the perceptron rule
                with torch.no_grad():
                    a.add_(d * x)
                    b.add_(d)
                self.updates += 1
                self.epoch_mistakes += 1
            yield {"mistakes": float(self.epoch_mistakes)}

    def accuracy(self) -> float:
        return float((self.model.predict(self.x) == self.y).double().mean())

    def end_epoch(self, epoch: int) -> dict[str, float]:
        self.mistakes_per_epoch.append(self.epoch_mistakes)
        return {"mistakes": self.epoch_mistakes, "updates": self.updates, "train_accuracy": self.accuracy()}

    def converged(self, metrics: dict[str, float]) -> bool:
        return metrics["mistakes"] == 0

    def finish(self, run_dir: Path) -> dict[str, Any]:
        final = self.summary()
        plot_decision_line(self.x, self.y, self.model.a, self.model.b, run_dir / "decision.png",
                           f"{self.recipe.name}: {'converged' if final['converged'] else 'did not converge'}")
        return final

    def summary(self) -> dict[str, Any]:
        w_star, gamma = max_margin(self.x, self.y)
        r = float(torch.cat([self.x, torch.ones(len(self.x), 1, dtype=torch.float64)], 1).norm(dim=1).max())
        separable = gamma > 1e-9
        converged = bool(self.mistakes_per_epoch and self.mistakes_per_epoch[-1] == 0)
        bound = (r / gamma) ** 2 if separable else None
        correct = int((self.model.predict(self.x) == self.y).sum())
        return {
            "converged": converged,
            "linearly_separable": separable,
            "epochs_to_converge": len(self.mistakes_per_epoch) if converged else None,
            "updates": self.updates,
            "novikoff_bound": bound,
            "updates_within_bound": bool(bound is not None and self.updates <= bound),
            "margin": gamma if separable else None,
            "radius": r,
            "train_correct": correct,
            "train_accuracy": correct / len(self.x),
            "weights": [*self.model.a.tolist(), float(self.model.b)],
        }

    def raw_model(self) -> torch.nn.Module:
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "epoch_mistakes": self.epoch_mistakes,
                "mistakes_per_epoch": list(self.mistakes_per_epoch)}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"eval_state": self.state_dict()}  # the mistake counts that the evaluation report shows

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        self.updates = int(state["updates"])
        self.epoch_mistakes = int(state["epoch_mistakes"])
        self.mistakes_per_epoch = [int(m) for m in state["mistakes_per_epoch"]]

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        task = cls(ctx, **ctx.recipe.task_args)
        task.model.load_state_dict(checkpoint["model"])
        task.load_state_dict(checkpoint.get("eval_state") or checkpoint["task_state"])
        final = task.summary()
        rows = [[f"({', '.join(f'{v:g}' for v in x.tolist())})", int(y), int(p)]
                for x, y, p in zip(task.x[:16], task.y[:16], task.model.predict(task.x[:16]))]
        fig = plot_decision_line(task.x, task.y, task.model.a, task.model.b, out_dir / "decision.png", ctx.recipe.name)
        return EvalResult(final, [("points (first 16)", ["x", "label", "predicted"], rows)], [str(fig)])


def plot_decision_line(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor, path: Path,
                       title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    pos, neg = y > 0, y <= 0
    ax.scatter(x[pos, 0], x[pos, 1], c="tab:blue", marker="+", s=60, label="+1")
    ax.scatter(x[neg, 0], x[neg, 1], c="tab:red", marker="_", s=60, label="-1")
    lo, hi = float(x.min()) - 0.2, float(x.max()) + 0.2
    xs = torch.linspace(lo, hi, 2, dtype=torch.float64)
    a0, a1, b0 = float(a[0]), float(a[1]), float(b)
    if abs(a1) > 1e-12:
        ax.plot(xs, -(a0 * xs + b0) / a1, "k-", label="a·x + b = 0")
    elif abs(a0) > 1e-12:
        ax.axvline(-b0 / a0, color="k", label="a·x + b = 0")
    ax.set_xlim(lo, hi)
    ax.set_ylim(float(x[:, 1].min()) - 0.2, float(x[:, 1].max()) + 0.2)
    ax.set_aspect("equal")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


register_task("perceptron", summary="Rosenblatt's rule: a += d·x, b += d on each mistake")(PerceptronTask)
