"""The lecture's autoencoder: min ‖x − x'‖² with h = g(W x + b), x' = g(W' h + b') (``dlcli.models.autoencoder``).

The loss of a batch is the squared error summed over the D pixels of an image, averaged over the images.
Two options make an over-complete code (dim h > D) learn something other than the identity: ``noise``, the
fraction of input pixels set to 0 before encoding (a denoising autoencoder: the loss is still to the clean x),
and ``sparsity``, a weight on the L1 norm of h added to the loss. The reference number is PCA with as many
components as dim h, fitted on the same training images: the best any linear code of that size reconstructs
(Baldi and Hornik 1989), reported beside the autoencoder's test error as ``recon_vs_pca``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from dlcli.batches import ImageBatches, images_to_float
from dlcli.registry import build_model_with_defaults, register_task
from dlcli.runtime import optimizer_step
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.layerwise import masking_noise
from dlcli.tasks.optim import build_optimizer, build_scheduler, load_scheduler

SHOWN = 10  # images in the reconstruction figure


def squared_error(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """‖x − x'‖² of each image (B,), summed over its pixels."""
    return (x - x_rec).flatten(1).pow(2).sum(1)


@torch.no_grad()
def reconstruction_error(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Mean ‖x − x'‖² over images x (N, C, H, W) (uint8 or float in [0, 1])."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb = images_to_float(x[i:i + batch_size].to(device))
        total += float(squared_error(xb, model(xb)).sum())
    return total / max(1, len(x))


@torch.no_grad()
def pca_error(train: torch.Tensor, test: torch.Tensor, k: int) -> float:
    """Mean squared reconstruction error on ``test`` of PCA with ``k`` components fitted on ``train`` (both
    (N, ...) images, uint8 or float); the principal directions from the covariance's eigenvectors (float64)."""
    a = images_to_float(train).flatten(1).double()
    mean = a.mean(0)
    a -= mean
    _, vecs = torch.linalg.eigh(a.T @ a)  # ascending eigenvalues
    v = vecs[:, -k:]  # (D, k)
    t = images_to_float(test).flatten(1).double() - mean
    return float((t - t @ v @ v.T).pow(2).sum(1).mean())


def build_autoencoder(recipe: Any, input_shape: list[int] | tuple[int, ...]) -> nn.Module:
    return build_model_with_defaults(recipe.model.name, recipe.model.args, in_channels=int(input_shape[0]),
                                     input_size=int(input_shape[-1]))


def write_figures(model: nn.Module, images: torch.Tensor, out_dir: Path, title: str) -> list[str]:
    """reconstructions.png (originals above their reconstructions) and filters.png (rows of W as images)."""
    from dlcli.tasks.pretrain_figures import filters_figure, mosaic_figure, tile

    model.eval()
    x = images_to_float(images[:SHOWN].cpu())
    with torch.no_grad():
        rec = model.cpu()(x)
    out_dir.mkdir(parents=True, exist_ok=True)
    pair = torch.cat([x[:, 0], rec[:, 0]])  # (2·SHOWN, H, W): originals, then reconstructions
    recs = mosaic_figure(tile(pair, len(x)), out_dir / "reconstructions.png",
                         f"{title}: test images (top) and their reconstructions x' (bottom)")
    filters = filters_figure(model.encoder.weight.detach(), tuple(x.shape[1:]), out_dir / "filters.png",
                             f"{title}: learned filters (rows of W)")
    return [str(recs), str(filters)]


class AutoencodeTask(Task):
    one_process = "its training is not split over ranks"
    monitor = "val_recon_error"
    monitor_mode = "min"
    progress_metric = "val_recon_error"

    def __init__(self, ctx: TaskContext, *, noise: float = 0.0, sparsity: float = 0.0, pca: bool = True) -> None:
        super().__init__(ctx)
        if not 0 <= noise < 1 or sparsity < 0:
            raise ValueError(f"task_args: noise in [0, 1) and sparsity >= 0 are required (got {noise}, {sparsity})")
        rt = self.runtime
        self.noise, self.sparsity, self.pca = noise, sparsity, pca
        self.data = self.load_data()
        if self.data.kind != "images" or self.data.train is None:
            raise ValueError(f"the autoencode task needs images, got data source {self.recipe.data.source}")
        self.input_shape = list(self.data.input_shape)
        if rt.compile:  # said, not silently ignored: the header would claim a compiled run
            rt.notes.append("compile: off for the autoencoder: its steps call the model's encode and decode (the "
                            "sparsity penalty needs the code h), which torch.compile's wrapper of forward never runs")
            rt.compile = False
        self.model, self.raw = rt.prepare(build_autoencoder(self.recipe, self.input_shape))
        dev = rt.device
        self.batches = ImageBatches(self.data.train.x.to(dev), self.data.train.y.to(dev), self.recipe.batch_size,
                                    self.recipe.seed)
        self.optimizer = build_optimizer(self.recipe, self.raw.parameters())
        self.scheduler = build_scheduler(self.recipe, self.optimizer, total_steps=self.schedule_steps(),
                                         steps_per_epoch=self.batches.steps())
        self.sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss sum, images (this epoch)

    def header(self) -> dict[str, Any]:
        return {"data": self.recipe.data.source, "train_samples": len(self.batches),
                "val_samples": len(self.data.val) if self.data.val else 0,
                "test_samples": len(self.data.test) if self.data.test else 0,
                "code": f"{self.raw.encoder.out_features} units for {self.raw.encoder.in_features} pixels"}

    def steps_per_epoch(self, epoch: int) -> int:
        return self.batches.steps()

    def samples_per_step(self) -> int:
        return self.recipe.batch_size

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, Any]]:
        if start_step == 0:
            self.sums.zero_()
        self.model.train()
        for step, (x, _, _) in enumerate(self.batches.epoch(epoch, start_step), start=start_step):
            g = torch.Generator(device=x.device).manual_seed(((self.recipe.seed * 1000 + epoch) << 20) + step)
            h = self.raw.encode(masking_noise(x, self.noise, g))
            err = squared_error(x, self.raw.decode(h).reshape(x.shape))  # to the clean x
            loss = err.mean() + (self.sparsity * h.abs().sum(1).mean() if self.sparsity else 0.0)
            optimizer_step(loss, self.optimizer)
            if self.scheduler is not None and self.scheduler.per_step:
                self.scheduler.step()
            self.sums[0] += err.detach().sum().double()
            self.sums[1] += len(x)
            yield {"loss": loss.detach()}
        if self.scheduler is not None and not self.scheduler.per_step:
            self.scheduler.step()

    def end_epoch(self, epoch: int) -> dict[str, float]:
        metrics = {"train_recon_error": float(self.sums[0] / self.sums[1].clamp(min=1)),
                   "lr": self.optimizer.param_groups[0]["lr"]}
        if self.data.val is not None:
            metrics["val_recon_error"] = self._error(self.data.val.x)
        return metrics

    def _error(self, x: torch.Tensor) -> float:
        return reconstruction_error(self.raw, x, self.recipe.eval_batch_size, self.runtime.device)

    def finish(self, run_dir: Path) -> dict[str, Any]:
        final: dict[str, Any] = {}
        if self.data.val is not None:
            final["val_recon_error"] = self._error(self.data.val.x)
        if self.data.test is not None:
            final["test_recon_error"] = self._error(self.data.test.x)
            if self.pca:
                final["pca_recon_error"] = pca_error(self.data.train.x, self.data.test.x,
                                                     self.raw.encoder.out_features)
                final["recon_vs_pca"] = final["test_recon_error"] / final["pca_recon_error"]
        if self.runtime.is_primary:
            images = self.data.test.x if self.data.test is not None else self.data.train.x
            final["figures"] = write_figures(self.raw, images, run_dir, self.recipe.name)
            self.raw.to(self.runtime.device)
        return final

    def raw_model(self) -> nn.Module:
        return self.raw

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"autoencoder": {"input_shape": self.input_shape}}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "sums": self.sums.cpu()}

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler(self.scheduler, state.get("scheduler"), restore_schedule)
        self.sums = state["sums"].to(self.runtime.device)

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        from dlcli.runs import load_bundle

        recipe, rt = ctx.recipe, ctx.runtime
        model = build_autoencoder(recipe, checkpoint["autoencoder"]["input_shape"])
        model.load_state_dict(checkpoint["model"])
        model.to(rt.device)
        data = load_bundle(recipe, ctx.data_dir)
        x = {"val": data.val, "test": data.test}[split]
        if x is None:
            from dlcli.errors import DlcliError

            raise DlcliError(f"recipe {recipe.name} has no {split!r} split (val_size 0?)")
        err = reconstruction_error(model, x.x, recipe.eval_batch_size, rt.device)
        metrics: dict[str, Any] = {"recon_error": err, "samples": len(x), "epoch": checkpoint.get("epoch")}
        if recipe.task_args.get("pca", True):
            metrics["pca_recon_error"] = pca_error(data.train.x, x.x, model.encoder.out_features)
            metrics["recon_vs_pca"] = err / metrics["pca_recon_error"]
        figures = write_figures(model, x.x, out_dir, recipe.name)
        return EvalResult(metrics=metrics, figures=figures)


register_task("autoencode", summary="the lecture's autoencoder: min ‖x − x'‖², h = g(Wx + b), x' = g(W'h + b')")(
    AutoencodeTask)
