"""Adversarial training (Goodfellow et al. 2014; Radford et al. 2015): a generator G against a discriminator D.

One step takes a batch of real images x and as many noise vectors z. D learns to tell x from G(z) (binary
cross-entropy on its logits), G learns to make D call G(z) real: the "non-saturating" loss -log D(G(z)) that
both papers train with. Two update orders:

``alternating`` (pytorch/examples' dcgan): one D step on x and G(z).detach(), then one G step through the
updated D that differentiates with respect to G's parameters only (``backward(inputs=...)``: D's weight
gradients are neither computed nor accumulated, as when D's weights are frozen, without toggling
``requires_grad`` on every parameter of D at every step).
``simultaneous`` (the authors' pylearn2 code for the 2014 paper): one forward pass, D's gradient of
``d_loss`` and G's gradient of ``g_loss`` taken from the same D(G(z)), both optimisers stepped together.

``task_args.cuda_graph`` (alternating updates with Adam on CUDA): the whole step, both updates and both
optimiser steps, is captured once as a CUDA graph and replayed for every full batch (see ``_graph_update``);
a 64-px DCGAN step is a few hundred small kernels whose launching, not their arithmetic, bounds it.

``d_loss = d_loss_scale * (BCE(D(x), 1) + BCE(D(G(z)), 0))`` (scale 0.5 in the authors' code, 1 in
pytorch/examples), each BCE a mean over the batch. Both networks get an optimiser built from the recipe's
``optim`` section. The 2014 recipe's schedules live in ``task_args``: the learning rate divided by
``lr_decay`` after every step (floor ``lr_min``) and momentum rising linearly from ``optim.momentum`` to
``momentum_final`` between epochs ``momentum_start`` and ``momentum_saturate`` (pylearn2's
ExponentialDecay and MomentumAdjustor); both are functions of the position, so a resumed run continues them.

Every ``log_every`` steps a ``step`` row holds the window's mean D and G losses, D(x), D(G(z)) and the
samples' diversity (mean pairwise distance of the step's generated images over that of its real ones; 0 when
every sample is the same image). Two failure modes get one warning line each (and are listed in the final
metrics): the discriminator's loss collapsing towards 0 (it wins and G's gradient fades) and the diversity
collapsing (mode collapse; checked from the second epoch on, since an untrained generator's samples are all
alike). ``samples/epoch-NNN.png`` shows G(fixed noise) after every epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.batches import ImageBatches
from dlcli.genmetrics import SIGMA_VAL_IMAGES
from dlcli.registry import register_task
from dlcli.runtime import optimizer_step
from dlcli.tasks.base import EvalResult, Task, TaskContext
from dlcli.tasks.gan_eval import (
    FITS,
    NOISES,
    build_pair,
    draw_noise,
    evaluate_gan,
    fit_real,
    generate,
    measure,
    note,
    optional_features,
    resolve_features,
    write_grid,
)
from dlcli.tasks.optim import build_optimizer

UPDATES = ("alternating", "simultaneous")
GRAPH_WARMUP = 3  # eager full-batch steps before the step is captured as a CUDA graph (task_args.cuda_graph)
GRID = 64  # fixed-noise samples in each epoch's grid (8 x 8)
_SUMS = ("d_loss", "g_loss", "d_x", "d_g_z")  # running sums per step, in this order


class GANTask(Task):
    one_process = "DDP around its two discriminator passes per step is not supported yet"
    monitor = None  # no validation metric to choose by: the last epoch is the result
    progress_metric = "d_x"

    def __init__(self, ctx: TaskContext, *, update: str = "alternating", d_loss_scale: float = 1.0,
                 noise: str = "normal", fit: str = "pad", lr_decay: float = 1.0, lr_min: float = 0.0,
                 momentum_final: float | None = None, momentum_start: int = 1, momentum_saturate: int = 250,
                 output_bias_from_data: bool = False, log_every: int = 50, eval_samples: int = 10_000,
                 features: str | None = None, fld_every_epoch: bool = False, warn_d_loss: float = 0.05,
                 warn_diversity: float = 0.3, cuda_graph: bool = False) -> None:
        super().__init__(ctx)
        if update not in UPDATES:
            raise ValueError(f"task_args.update must be one of {', '.join(UPDATES)}, got {update!r}")
        if noise not in NOISES:
            raise ValueError(f"task_args.noise must be one of {', '.join(NOISES)}, got {noise!r}")
        if fit not in FITS:
            raise ValueError(f"task_args.fit must be one of {', '.join(FITS)}, got {fit!r}")
        if lr_decay < 1 or d_loss_scale <= 0 or log_every < 1 or eval_samples < 1:
            raise ValueError("task_args: lr_decay >= 1, d_loss_scale > 0, log_every >= 1 and eval_samples >= 1 "
                             "are required")
        if momentum_final is not None and not (0 <= momentum_final < 1 and momentum_saturate > momentum_start):
            raise ValueError("task_args: momentum_final in [0, 1) and momentum_saturate > momentum_start")
        if self.recipe.schedule.name != "none":
            raise ValueError("the gan task sets its learning rate and momentum from task_args (lr_decay, "
                             "momentum_final); set schedule.name: none")
        rt = self.runtime
        self.update, self.d_loss_scale, self.noise, self.fit = update, d_loss_scale, noise, fit
        self.lr_decay, self.lr_min = lr_decay, lr_min
        self.momentum_final, self.momentum_start, self.momentum_saturate = momentum_final, momentum_start, \
            momentum_saturate
        self.log_every, self.eval_samples, self.features = log_every, eval_samples, features
        self.warn_d_loss, self.warn_diversity = warn_d_loss, warn_diversity

        self.data = self.load_data()
        if self.data.val is None or self.data.test is None:  # checked before a run folder exists, not at the end
            raise ValueError("the gan task measures on validation and test images; keep data.args.val_size > 0")
        if self.data.kind != "images" or self.data.train is None:
            raise ValueError(f"the gan task needs images, got data source {self.recipe.data.source}")
        self.data_shape = tuple(int(d) for d in self.data.train.x.shape[1:])
        self.pair = build_pair(self.recipe, self.data_shape)
        if self.pair.image_shape[0] != self.data_shape[0]:
            raise ValueError(f"the model makes {self.pair.image_shape[0]}-channel images, the data has "
                             f"{self.data_shape[0]}")
        self.size = self.pair.image_shape[-1]
        fit_real(self.data.train.x[:1].float(), self.size, fit)  # an impossible fit fails here, not mid-epoch
        if output_bias_from_data:
            self._output_bias_from_marginals()
        dev = rt.device
        # Compiled, the networks keep the default memory format: inductor chooses convolution layouts itself,
        # and torch 2.11's inductor failed (a stride assertion in convolution_backward) on the channels-last
        # weight of G's first transposed convolution, whose input is 1x1.
        weights_channels_last = rt.channels_last and not (rt.compile and dev.type == "cuda")
        if rt.channels_last and not weights_channels_last:
            rt.notes.append("channels_last: compiled G and D keep the default memory format (inductor chooses "
                            "the convolutions' layouts)")
        self.G, self.G_raw = rt.prepare(self.pair.G, channels_last=weights_channels_last)
        self.D, self.D_raw = rt.prepare(self.pair.D, channels_last=weights_channels_last)
        self.batches = ImageBatches(self.data.train.x.to(dev), self.data.train.y.to(dev), self.recipe.batch_size,
                                    self.recipe.seed, rank=rt.rank, world_size=rt.world_size)
        self.g_params, self.d_params = list(self.G_raw.parameters()), list(self.D_raw.parameters())
        refusal = self._graph_refusal(rt, lr_decay, momentum_final) if cuda_graph else None
        self.graphed = cuda_graph and refusal is None
        if refusal:
            rt.notes.append(f"task_args.cuda_graph: eager steps ({refusal})")
        self.opt_g = build_optimizer(self.recipe, self.g_params, capturable=self.graphed)
        self.opt_d = build_optimizer(self.recipe, self.d_params, capturable=self.graphed)
        self._graph: torch.cuda.CUDAGraph | None = None  # captured at the first full batch after the warm-ups
        self._graph_warmups = 0
        self.lr0, self.momentum0 = self.recipe.optim.lr, self.recipe.optim.momentum
        self.scaler_g, self.scaler_d = rt.grad_scaler(), rt.grad_scaler()
        # noise for training steps comes from the task's own generator (saved in state_dict); the fixed noise
        # of the sample grids is a function of the seed alone
        self.noise_rng = torch.Generator(device=dev).manual_seed(self.recipe.seed * 1000 + 7)
        self.fixed_noise = draw_noise(GRID, self.pair.nz, noise, torch.Generator().manual_seed(self.recipe.seed),
                                      "cpu").to(dev)
        self.sums = torch.zeros(len(_SUMS), device=dev)  # this epoch, summed on the device: no sync per step
        self.window = torch.zeros(len(_SUMS), device=dev)  # since the last step row
        self.steps_done = 0  # steps of this epoch
        self.warnings: list[str] = []
        self._warned_epoch: dict[str, int] = {}
        self.feature_net = None
        if fld_every_epoch:  # resolved now: a missing classifier fails before training, not after an epoch
            self.feature_net = resolve_features(self.recipe.data.source, features, dev, self.data_shape)
            self._fld_ref = None

    # --- set-up -------------------------------------------------------------------------------------------
    def _graph_refusal(self, rt: Any, lr_decay: float, momentum_final: float | None) -> str | None:
        """Why the step cannot be one CUDA graph here, or None when it can."""
        if rt.device.type != "cuda":
            return f"CUDA graphs need a CUDA device, not {rt.device.type}"
        if self.update != "alternating":
            return "only the alternating update is captured"
        if lr_decay != 1.0 or momentum_final is not None:
            return "a graph would keep the first learning rate and momentum: lr_decay and momentum_final change them"
        if rt.precision == "fp16":
            return "fp16's GradScaler reads its overflow check on the host every step"
        if rt.compile:
            return "compile: torch.compile's own CUDA graphs (compile: reduce-overhead) are the other way"
        if self.recipe.optim.name not in ("adam", "adamw"):
            return f"optim.name {self.recipe.optim.name}: only adam and adamw keep their step count on the GPU"
        return None

    def _output_bias_from_marginals(self) -> None:
        """G's sigmoid output starts at the mean training image: bias = logit(mean pixel), clipped to
        [1e-5, 1 - 1e-5] (pylearn2's init_sigmoid_bias_from_marginals)."""
        layer = getattr(self.pair.G, "output_layer", None)
        if layer is None or self.pair.output != "sigmoid":
            raise ValueError("task_args.output_bias_from_data needs a generator with a sigmoid output layer (gan-mlp)")
        mean = self.data.train.x.float().div(255).mean(0).flatten().clamp(1e-5, 1 - 1e-5)
        with torch.no_grad():
            layer().bias.copy_(torch.logit(mean.double()).float())

    def header(self) -> dict[str, Any]:
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        return {"data": self.recipe.data.source, "train_samples": len(self.batches),
                "val_samples": len(self.data.val) if self.data.val else 0,
                "test_samples": len(self.data.test) if self.data.test else 0,
                "generator_parameters": count(self.G_raw), "discriminator_parameters": count(self.D_raw),
                "image_size": self.size, "update": self.update, "cuda_graph": self.graphed}

    def steps_per_epoch(self, epoch: int) -> int:
        return self.batches.steps()

    def samples_per_step(self) -> int:
        return self.recipe.batch_size

    # --- schedules (functions of the position: a resumed run continues them) -------------------------------
    def _set_hyperparameters(self, epoch: int, global_step: int) -> None:
        if self.lr_decay != 1.0:
            lr = max(self.lr0 / self.lr_decay ** global_step, self.lr_min)
            for opt in (self.opt_g, self.opt_d):
                for group in opt.param_groups:
                    group["lr"] = lr
        if self.momentum_final is not None:
            m = self.momentum_at(epoch)
            for opt in (self.opt_g, self.opt_d):
                for group in opt.param_groups:
                    group["momentum"] = m

    def momentum_at(self, epoch: int) -> float:
        if self.momentum_final is None:
            return self.momentum0
        a = min(1.0, max(0.0, (epoch - self.momentum_start) / (self.momentum_saturate - self.momentum_start)))
        return self.momentum0 + (self.momentum_final - self.momentum0) * a

    # --- training -------------------------------------------------------------------------------------------
    def _bce(self, logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float32))

    def _step(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One update of D and G on real pixels x (B, C, H, W) in [0, 1]; returns (d_loss, g_loss, D(x) logits,
        D(G(z)) logits, G(z), the real batch as D saw it), all detached."""
        rt = self.runtime
        rt.mark_step()  # compiled with CUDA graphs: the previous step's graph outputs may be overwritten now
        real = rt.to_input(self.pair.from_pixels(fit_real(x, self.size, self.fit)))
        z = draw_noise(len(real), self.pair.nz, self.noise, self.noise_rng, rt.device)
        if self.graphed and len(real) == self.recipe.batch_size:  # a last, smaller batch runs eagerly
            return (*self._graph_update(real, z), real)
        return (*self._update(real, z), real)

    def _update(self, real: torch.Tensor, z: torch.Tensor, cache: bool = True) -> tuple[torch.Tensor, ...]:
        """The D and G updates from the real batch and the noise; returns (d_loss, g_loss, D(x) logits, D(G(z))
        logits, G(z)), detached. ``cache``: autocast's reuse of low-precision weight copies within a block."""
        rt = self.runtime
        if self.update == "alternating":
            with rt.autocast(cache):
                out_real = self.D(real)
                fake = self.G(z)
                out_fake = self.D(fake.detach())
                d_loss = self.d_loss_scale * (self._bce(out_real, 1.0) + self._bce(out_fake, 0.0))
            optimizer_step(d_loss, self.opt_d, self.scaler_d)
            # A second autocast block: autocast keeps low-precision copies of D's weights for as long as a
            # block lasts, and the D step has just changed those weights.
            with rt.autocast(cache):
                g_loss = self._bce(self.D(fake), 1.0)
            # gradients through D for G's parameters only
            optimizer_step(g_loss, self.opt_g, self.scaler_g, inputs=self.g_params)
        else:
            with rt.autocast(cache):
                out_real = self.D(real)
                fake = self.G(z)
                out_fake = self.D(fake)  # the same pass serves both objectives (and the same dropout masks)
                d_loss = self.d_loss_scale * (self._bce(out_real, 1.0) + self._bce(out_fake, 0.0))
                g_loss = self._bce(out_fake, 1.0)
            self.opt_d.zero_grad(set_to_none=True)
            self.opt_g.zero_grad(set_to_none=True)
            d_params, g_params = self.d_params, self.g_params
            if self.scaler_d is not None:
                self.scaler_d.scale(d_loss).backward(inputs=d_params, retain_graph=True)
                self.scaler_g.scale(g_loss).backward(inputs=g_params)
                self.scaler_d.step(self.opt_d)
                self.scaler_g.step(self.opt_g)
                self.scaler_d.update()
                self.scaler_g.update()
            else:
                d_loss.backward(inputs=d_params, retain_graph=True)
                g_loss.backward(inputs=g_params)
                self.opt_d.step()
                self.opt_g.step()
        return d_loss.detach(), g_loss.detach(), out_real.detach(), out_fake.detach(), fake.detach()

    def _graph_update(self, real: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``_update`` replayed from one CUDA graph: the whole step's few hundred kernels launched at once,
        which is what a 64-px DCGAN step costs on a large GPU (its arithmetic takes less time than launching
        it). The first ``GRAPH_WARMUP`` full batches run eagerly on a side stream (cuDNN's algorithm choices,
        the optimisers' state and the memory pool settle, as CUDA-graph capture needs), the next one is
        captured and then every full batch copies its real images and noise into the graph's inputs and
        replays it. The outputs are copied out (the next replay overwrites them)."""
        if self._graph is None and self._graph_warmups < GRAPH_WARMUP:
            self._graph_warmups += 1
            side = torch.cuda.Stream(self.runtime.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self._update(real, z)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self._graph is None:
            self._graph_inputs = (real.clone(), z.clone())
            # gradients of None: backward allocates them from the graph's own memory pool, where every replay
            # writes them again
            self.opt_d.zero_grad(set_to_none=True)
            self.opt_g.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._graph_outputs = self._update(*self._graph_inputs, cache=False)
            self._graph = graph
        self._graph_inputs[0].copy_(real)
        self._graph_inputs[1].copy_(z)
        self._graph.replay()
        return tuple(t.clone() for t in self._graph_outputs)

    def train_steps(self, epoch: int, start_step: int) -> Iterator[dict[str, float]]:
        if start_step == 0:
            self.sums.zero_()
            self.steps_done = 0
        self.G.train()
        self.D.train()
        base = epoch * self.batches.steps()
        for i, (xb, _, _) in enumerate(self.batches.epoch(epoch, start_step), start=start_step):
            global_step = base + i
            self._set_hyperparameters(epoch, global_step)
            d_loss, g_loss, out_real, out_fake, fake, real = self._step(xb)
            step_sums = torch.stack([d_loss, g_loss, torch.sigmoid(out_real.float()).mean(),
                                     torch.sigmoid(out_fake.float()).mean()])
            self.sums += step_sums
            self.window += step_sums
            self.steps_done += 1
            if (global_step + 1) % self.log_every == 0:
                self._log_window(epoch, global_step + 1, fake, real)
            yield {"d_loss": d_loss, "g_loss": g_loss}  # tensors: the progress bar reads them when it redraws

    def _log_window(self, epoch: int, step: int, fake: torch.Tensor, real: torch.Tensor) -> None:
        """A ``step`` row with the means since the last one, and the collapse checks."""
        n = (step - 1) % self.log_every + 1
        d_loss, g_loss, d_x, d_g_z = (v / n for v in self.window.tolist())
        self.window.zero_()
        diversity = sample_diversity(fake, real)
        self.ctx.log_row("step", {"step": step, "d_loss": d_loss, "g_loss": g_loss, "d_x": d_x, "d_g_z": d_g_z,
                                  "diversity": diversity})
        mean_bce = d_loss / (2 * self.d_loss_scale)  # per term: real and fake
        if mean_bce < self.warn_d_loss:
            self._warn("d_loss", epoch, f"step {step}: the discriminator's loss collapsed to {d_loss:.3g} "
                       f"(D(x) {d_x:.3f}, D(G(z)) {d_g_z:.3f}): D wins and G's gradient is fading; lower D's "
                       "learning rate or train longer and watch whether it recovers")
        # an untrained generator's samples are all alike: diversity is judged from the second epoch on
        if epoch >= 1 and diversity < self.warn_diversity:
            self._warn("diversity", epoch, f"step {step}: sample diversity {diversity:.2f} of the real images' "
                       "(mean pairwise distance): the generator is collapsing onto few modes")

    def _warn(self, kind: str, epoch: int, message: str) -> None:
        if self._warned_epoch.get(kind) == epoch:  # at most one line of each kind per epoch
            return
        self._warned_epoch[kind] = epoch
        self.warnings.append(message)
        if self.runtime.is_primary:
            note(f"warning: {message}")

    def end_epoch(self, epoch: int) -> dict[str, float]:
        n = max(1, self.steps_done)
        d_loss, g_loss, d_x, d_g_z = (v / n for v in self.sums.tolist())
        metrics: dict[str, float] = {"d_loss": d_loss, "g_loss": g_loss, "d_x": d_x, "d_g_z": d_g_z,
                                     "lr": self.opt_g.param_groups[0]["lr"]}
        if self.momentum_final is not None:
            metrics["momentum"] = self.momentum_at(epoch)
        if self.runtime.is_primary and self.ctx.run_dir is not None:
            write_grid(self._fixed_samples(), self.ctx.run_dir / "samples" / f"epoch-{epoch + 1:03d}.png")
        if self.feature_net is not None:
            t0 = time.perf_counter()
            metrics["fld"] = self._epoch_fld()
            metrics["fld_time_s"] = time.perf_counter() - t0  # so a benchmark can subtract it from the wall time
        return metrics

    @torch.no_grad()
    def _fixed_samples(self) -> torch.Tensor:
        """G(fixed noise) as pixels (64, C, H, W) in the data's space, G in eval mode."""
        from dlcli.tasks.gan_eval import to_data_space

        was = self.G_raw.training
        self.G_raw.eval()
        try:
            x = self.pair.to_pixels(self.G_raw(self.fixed_noise).float())
        finally:
            self.G_raw.train(was)
        return to_data_space(x, self.data_shape, self.fit).clamp(0, 1)

    def _epoch_fld(self) -> float:
        """Fréchet LeNet distance of ``eval_samples`` samples to the validation images (never the test split
        during training)."""
        from dlcli.batches import images_to_float
        from dlcli.genmetrics import FrechetFeatures

        if self._fld_ref is None:
            assert self.data.val is not None, "fld_every_epoch needs validation images (data.args.val_size > 0)"
            self._fld_ref = FrechetFeatures(self.feature_net.features, images_to_float(self.data.val.x),
                                            self.runtime.device)
        samples = generate(self.pair, self.eval_samples, self.recipe.seed + 1, self.noise, self.runtime.device,
                           self.data_shape, self.fit)
        return self._fld_ref.distance(samples)

    def finish(self, run_dir: Path) -> dict[str, Any]:
        """Samples from the fixed noise, then every measure of ``eval_samples`` samples (drawn with the recipe's
        seed, as ``dlcli eval`` draws them) against the test images."""
        rt = self.runtime
        if rt.is_primary:
            write_grid(self._fixed_samples(), run_dir / "samples" / "final.png")
        features = self.feature_net or optional_features(self.recipe.data.source, self.features, rt.device,
                                                         self.data_shape)
        samples = generate(self.pair, self.eval_samples, self.recipe.seed, self.noise, rt.device, self.data_shape,
                           self.fit)
        metrics, _ = measure(samples, val=self.data.val.x, images=self.data.test.x, train=self.data.train.x,
                             features=features, device=rt.device, sigma_val_images=SIGMA_VAL_IMAGES)
        metrics["warnings"] = list(self.warnings)
        return metrics

    def raw_model(self) -> nn.Module:
        return self.pair

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"gan": {"data_shape": list(self.data_shape), "fit": self.fit, "noise": self.noise,
                        "data_source": self.recipe.data.source, "class_names": list(self.data.class_names),
                        "fixed_noise": self.fixed_noise.cpu()}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict() if self.scaler_g is not None else None,
            "scaler_d": self.scaler_d.state_dict() if self.scaler_d is not None else None,
            "noise_rng": self.noise_rng.get_state(),
            "fixed_noise": self.fixed_noise.cpu(),
            "sums": self.sums.cpu(),
            "window": self.window.cpu(),
            "steps_done": self.steps_done,
            "warnings": list(self.warnings),
            "warned_epoch": dict(self._warned_epoch),
        }

    def load_state_dict(self, state: dict[str, Any], *, restore_schedule: bool = True) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self._graph, self._graph_warmups = None, 0  # a graph holds the old optimiser state's addresses
        for scaler, key in ((self.scaler_g, "scaler_g"), (self.scaler_d, "scaler_d")):
            if scaler is not None and state.get(key) is not None:
                scaler.load_state_dict(state[key])
        self.noise_rng.set_state(state["noise_rng"])
        self.fixed_noise = state["fixed_noise"].to(self.runtime.device)
        self.sums = state["sums"].to(self.runtime.device)
        self.window = state["window"].to(self.runtime.device)
        self.steps_done = int(state["steps_done"])
        self.warnings = list(state.get("warnings") or [])
        self._warned_epoch = {str(k): int(v) for k, v in (state.get("warned_epoch") or {}).items()}

    @classmethod
    def evaluate(cls, checkpoint: dict[str, Any], ctx: TaskContext, split: str, out_dir: Path) -> EvalResult:
        return evaluate_gan(checkpoint, ctx, split, out_dir)


def sample_diversity(fake: torch.Tensor, real: torch.Tensor, max_images: int = 128) -> float:
    """Mean pairwise L2 distance among generated images over that among real ones (same batch size): about 1
    for a generator as varied as the data, 0 when every sample is the same image."""
    f = fake[:max_images].float().flatten(1)
    r = real[:max_images].float().flatten(1)
    if len(f) < 2 or len(r) < 2:
        return float("nan")
    return float(torch.pdist(f).mean() / torch.pdist(r).mean().clamp_min(1e-12))


register_task("gan", summary="a generator against a discriminator (Goodfellow et al. 2014, DCGAN)")(GANTask)
