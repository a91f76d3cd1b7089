"""What one timed step runs: a prepared model, its optimizer and an endless supply of input.

Synthetic input is one fixed random batch on the device. Real input (``--data real``) is a ``DataLoader``
with worker processes over the training images of ``dlcli.data``'s sources, read file by file as a real
input pipeline does: MNIST for 1-channel models (the ``mnist`` source's DataLoader path, the one training
uses with ``in_memory: false``), CIFAR-10 for 3-channel ones (the JPEG files that the ``cifar10`` source
scans, each decoded in a worker when the batch is drawn; the source itself decodes everything once into
memory, which would time indexing, not a loader). Workers hand over uint8 images, resized to the model's
input when it differs; the float conversion and the normalisation with the source's mean and std happen
on the device, as in training.

A train step is ``zero_grad(set_to_none=True)``, the forward pass under autocast, the loss (cross-entropy
for class logits, mean squared error otherwise) and ``dlcli.runtime.optimizer_step`` (backward through a
GradScaler for fp16 only, ``SGD(lr=1e-4, momentum=0.9).step()``). An inference step is a forward pass in
eval mode; the caller holds ``torch.inference_mode()``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.bench.meters import Clock
from dlcli.bench.spec import BenchSpec, default_workers
from dlcli.errors import DlcliError, UsageError
from dlcli.registry import accepted_args, build_model, get_model_builder
from dlcli.runtime import Runtime, device_name, optimizer_step

SGD_LR = 1e-4  # small, so that long benchmarks never diverge into NaN/inf (which can change kernel speed)
SGD_MOMENTUM = 0.9

# ------------------------------------------------------------------------------------------------ inputs


class _ImageFiles(torch.utils.data.Dataset):
    """Image files decoded one per item (in a DataLoader worker): (uint8 (C, H, W), label)."""

    def __init__(self, files: list[str], labels: list[int], size: tuple[int, int] | None) -> None:
        self.files, self.labels, self.size = files, labels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.io import ImageReadMode, decode_image, read_file

        img = decode_image(read_file(self.files[i]), mode=ImageReadMode.RGB)  # uint8 (3, H, W)
        if self.size is not None:
            from torchvision.transforms.v2 import functional as TF

            img = TF.resize(img, list(self.size), antialias=True)
        return img, self.labels[i]


class _ImageTensors(torch.utils.data.Dataset):
    """Images already in memory (the original CIFAR-10 batches): (uint8 (C, H, W), label), resized per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int] | None) -> None:
        self.x, self.y, self.size = x, y, size

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.x[i]
        if self.size is not None:
            from torchvision.transforms.v2 import functional as TF

            img = TF.resize(img, list(self.size), antialias=True)
        return img, int(self.y[i])


class RealData:
    """The real training images for an input shape, as a Dataset of uint8 images, and how to normalise them."""

    def __init__(self, dataset: Any, name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.dataset, self.name = dataset, name
        self.mean, self.std = mean, std

    @classmethod
    def open(cls, input_shape: tuple[int, ...], data_dir: str | None, seed: int) -> "RealData":
        """MNIST for 1xHxW inputs, CIFAR-10 for 3xHxW ones, resized to H x W when that differs."""
        from dlcli.data import (
            CIFAR10_MEAN,
            CIFAR10_STD,
            data_root,
            load_data,
            scan_image_folder,
        )
        from dlcli.data_cifar import (
            ORIGINAL_FOLDER,
            TARBALL,
            choose_copy,
            original_tensors,
        )

        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            shape = ",".join(str(d) for d in input_shape)
            raise UsageError(
                f"--data real: no real data set for input shape {shape} (real input is MNIST for 1xHxW "
                "or CIFAR-10 for 3xHxW images); use --data synthetic"
            )
        c, h, w = input_shape
        if c == 1:
            bundle = load_data("mnist", {"val_size": 0, "in_memory": False}, data_dir, seed)
            subset = bundle.train_dataset  # a Subset of torchvision's MNIST: (uint8 (1, 28, 28), label)
            assert subset is not None
            if (h, w) != (28, 28):
                from torchvision import transforms

                subset.dataset.transform = transforms.Compose(
                    [transforms.PILToTensor(), transforms.Resize((h, w), antialias=True)]
                )
            return cls(subset, "MNIST", bundle.mean, bundle.std)
        root = data_root(data_dir)
        size = None if (h, w) == (32, 32) else (h, w)
        copy = choose_copy(root)  # what a training run reads (files: auto)
        if copy in ("original", "tarball"):  # the original batches: the images are in memory, nothing to decode
            x, y, *_ = original_tensors(root)
            return cls(_ImageTensors(x, y, size), "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD)
        folder = root / "cifar10-jpg" / "train"
        if copy != "images":
            raise DlcliError(
                f"--data real: CIFAR-10 not found: expected the original batches {root / ORIGINAL_FOLDER}/ (or "
                f"{root / TARBALL}) or the image folder {folder}/<class>/*.jpg; pass --data-dir or set DLCLI_DATA "
                "(`dlcli data cifar10 --download` fetches it)"
            )
        index = scan_image_folder(folder)
        if not index.files:
            raise DlcliError(f"--data real: no images in {folder}/<class>/; expected the CIFAR-10 JPEGs there")
        return cls(_ImageFiles(index.files, index.labels, size), "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD)


class Batches:
    """An endless supply of (input, target) on the device: one fixed synthetic batch, or a real DataLoader."""

    def __init__(
        self,
        rt: Runtime,
        batch: int,
        input_shape: tuple[int, ...],
        make_target: Callable[[int], torch.Tensor],
        real: RealData | None = None,
        use_labels: bool = False,  # real labels (0..9) as targets; otherwise synthetic targets
        workers: int = 0,
    ) -> None:
        self.rt = rt
        self.make_target = make_target
        self.use_labels = use_labels
        self.loader: Any = None
        self._it: Iterator[Any] | None = None
        if real is None:
            self.x = rt.to_input(torch.randn(batch, *input_shape, device=rt.device))  # (B, *input_shape)
            self.y = make_target(batch)
            return
        if len(real.dataset) < batch:
            raise UsageError(f"--batch-size {batch} is larger than the real data set ({len(real.dataset)} samples)")
        shape = (1, -1, 1, 1)  # per channel, broadcast over (B, C, H, W)
        self.mean = torch.tensor(real.mean, device=rt.device).view(shape)
        self.std = torch.tensor(real.std, device=rt.device).view(shape)
        self.loader = torch.utils.data.DataLoader(
            real.dataset,
            batch_size=batch,
            shuffle=True,
            drop_last=True,  # every step sees exactly the batch size asked for
            num_workers=workers,
            pin_memory=rt.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loader is None:
            return self.x, self.y
        if self._it is None:
            self._it = iter(self.loader)
        try:
            x, labels = next(self._it)
        except StopIteration:  # an epoch ended; real pipelines start the next one, so do we
            self._it = iter(self.loader)
            x, labels = next(self._it)
        x = x.to(self.rt.device, non_blocking=True).float().div_(255).sub_(self.mean).div_(self.std)
        x = self.rt.to_input(x)  # (B, C, H, W), normalised, in the runtime's memory format
        if self.use_labels:
            return x, labels.to(self.rt.device, non_blocking=True)
        return x, self.make_target(x.shape[0])

    def close(self) -> None:
        self._it = None  # shuts the worker processes down
        self.loader = None


def loss_and_target(output_shape: tuple[int, ...], device: torch.device) -> tuple[Callable[..., Any], Any, int]:
    """(loss_fn, make_target(batch), number of classes or 0) for a model's per-sample output shape."""
    if len(output_shape) == 1 and output_shape[0] >= 2:  # class logits (B, K)
        k = output_shape[0]

        def class_target(b: int) -> torch.Tensor:
            return torch.randint(0, k, (b,), device=device)

        return F.cross_entropy, class_target, k

    def regression_target(b: int) -> torch.Tensor:
        return torch.randn(b, *output_shape, device=device)

    return F.mse_loss, regression_target, 0


# ------------------------------------------------------------------------------------------ the model


def builder_kwargs(name: str, meta: dict[str, Any], input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Pass ``in_channels`` when --input-size changes the number of channels and the builder takes it."""
    registered = meta.get("input_shape")
    if (
        registered
        and len(input_shape) == len(registered) >= 2
        and input_shape[0] != registered[0]
        and "in_channels" in accepted_args(get_model_builder(name))
    ):
        return {"in_channels": input_shape[0]}
    return {}


def oom_error(model: str, mode: str, batch: int, rt: Runtime) -> DlcliError:
    where = device_name(rt.device) if rt.device.type == "cuda" else "the CPU"
    if batch <= 1:
        return DlcliError(f"out of memory on {where}: {model} {mode} does not fit even at --batch-size 1")
    smaller = 1 << (max(1, batch // 2).bit_length() - 1)  # the power of two at or below half the batch
    hint = " or --auto-batch to find the largest that fits" if rt.device.type == "cuda" else ""
    return DlcliError(
        f"out of memory on {where} at --batch-size {batch} ({model} {mode}, {rt.precision}); "
        f"try --batch-size {smaller}{hint}"
    )


_OOM_MESSAGES = (
    "out of memory",  # "CUDA error: out of memory" raised outside the caching allocator
    "can't allocate memory",  # the CPU allocator
    "not enough memory",
    "CUDNN_STATUS_ALLOC_FAILED",  # cuDNN / cuBLAS workspaces
    "CUBLAS_STATUS_ALLOC_FAILED",
)


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e) for m in _OOM_MESSAGES)


class Workload:
    """A prepared model, optimizer and input supply; ``step()`` runs one step and returns its timestamps.

    Timestamps per step: (start, [data ready], [forward done, backward done], end), the inner ones only
    with ``detail`` (and "data ready" only for real input). "backward done" is the moment the optimizer's
    step begins (a step pre-hook), so that the update itself is the "optimizer" phase.
    """

    def __init__(
        self,
        rt: Runtime,
        model: nn.Module,
        mode: str,
        batches: Batches,
        loss_fn: Callable[..., Any],
        clock: Clock,
        detail: bool,
    ) -> None:
        self.rt, self.model, self.mode, self.batches, self.loss_fn = rt, model, mode, batches, loss_fn
        self.clock, self.detail = clock, detail
        self.real = batches.loader is not None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler = None
        self._step_begins: Any = None  # the clock's mark when optimizer.step() began, in this train step
        if mode == "train":
            model.train()
            self.optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
            self.scaler = rt.grad_scaler()
            if detail:
                self.optimizer.register_step_pre_hook(self._mark_step)
        else:
            model.eval()

    def _mark_step(self, *_: Any) -> None:
        self._step_begins = self.clock.mark()

    def phases(self) -> tuple[str, ...]:
        if not self.detail:
            return ()
        data = ("data",) if self.real else ()
        return data + (("forward", "backward", "optimizer") if self.mode == "train" else ("forward",))

    def step(self) -> tuple[Any, ...]:
        mark, detail = self.clock.mark, self.detail
        self.rt.mark_step()  # compiled with CUDA graphs (--compile-mode reduce-overhead): a new replay begins
        if self.mode == "infer":
            t0 = mark()
            x, _ = self.batches.next()
            if detail and self.real:
                t_data = mark()
                with self.rt.autocast():
                    self.model(x)
                return (t0, t_data, mark())
            with self.rt.autocast():
                self.model(x)
            return (t0, mark())

        assert self.optimizer is not None
        t0 = mark()
        x, y = self.batches.next()
        marks = [t0]
        if detail and self.real:
            marks.append(mark())
        # optimizer_step zeroes the gradients only before its backward: without this, the previous step's
        # gradients would stay allocated through this forward pass and add a model's size to the peak memory
        self.optimizer.zero_grad(set_to_none=True)
        with self.rt.autocast():
            out = self.model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            loss = self.loss_fn(out.float(), y)
        if detail:
            marks.append(mark())
        self._step_begins = None
        optimizer_step(loss, self.optimizer, self.scaler)
        end = mark()
        if detail:  # a step the GradScaler skipped (inf/NaN gradients) has no optimizer phase
            marks.append(self._step_begins if self._step_begins is not None else end)
        marks.append(end)
        return tuple(marks)


def prepare_workload(
    spec: BenchSpec,
    rt: Runtime,
    mode: str,
    data: str,
    batch: int,
    input_shape: tuple[int, ...],
    kwargs: dict[str, Any],
    output_shape: tuple[int, ...],
    clock: Clock,
    real: RealData | None,
) -> Workload:
    torch.manual_seed(spec.seed)
    model, _raw = rt.prepare(build_model(spec.model, **kwargs))
    loss_fn, make_target, classes = loss_and_target(output_shape, rt.device)
    if data == "real":
        assert real is not None
        workers = default_workers() if spec.workers is None else spec.workers
        # real labels (0..9) fit a classifier with at least 10 classes; other heads get synthetic targets
        batches = Batches(rt, batch, input_shape, make_target, real=real, use_labels=classes >= 10, workers=workers)
    else:
        batches = Batches(rt, batch, input_shape, make_target)
    return Workload(rt, model, mode, batches, loss_fn, clock, spec.detail)
