"""dlcli bench: FLOP counts against closed forms and torchvision's published figures, the peaks table, the
timing arithmetic on a model of known step time, the batch-size search, memory measurement, the JSON/CSV
contract, clear errors, and small real runs."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from dlcli import bench, peaks
from dlcli.bench import BenchResult, BenchSpec, count_flops, find_max_batch, meters, percentile, run_benchmark
from dlcli.bench import run as bench_run
from dlcli.bench import workload
from dlcli.errors import DlcliError, UsageError
from dlcli.registry import MODELS, build_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _data_dir() -> Path | None:
    """The shared real data: $DLCLI_DATA, else ../shared/data beside the repository, else /work/shared/data."""
    root = Path(__file__).resolve().parent.parent
    for cand in (os.environ.get("DLCLI_DATA"), root.parent / "shared" / "data", "/work/shared/data"):
        if cand and (Path(cand) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(cand)
    return None


@pytest.fixture
def temp_model(monkeypatch):
    """Register a throwaway model for one test only (the registry itself forbids re-registration)."""
    MODELS.names()  # load the built-in models first

    def add(name: str, builder, **meta):
        monkeypatch.setitem(MODELS._entries, name, builder)
        monkeypatch.setitem(MODELS._meta, name, meta)
        return name

    return add


# ---------------------------------------------------------------------------------------------- FLOPs

# torchvision's "_ops" metadata (GMACs at 3x224x224) and parameter counts: the `_ops` and `num_params` of
# AlexNet_Weights.IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1 and ResNet50_Weights.IMAGENET1K_V1
PUBLISHED = {"alexnet": (0.714, 61_100_840), "resnet18": (1.814, 11_689_512), "resnet50": (4.089, 25_557_032)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_flops_match_torchvision_published_macs_times_two(name):
    gmacs, params = PUBLISHED[name]
    fc = count_flops(name, (3, 224, 224))
    assert fc.forward == pytest.approx(2 * gmacs * 1e9, rel=0.02)
    assert fc.params == params
    assert fc.output_shape == (1000,)
    # backward = input gradients + weight gradients, each about one forward (the first layer needs no input
    # gradient), so a training step is a little under 3 forward passes
    assert 1.8 * fc.forward < fc.backward <= 2.0 * fc.forward


def test_flops_of_a_linear_layer_are_exact(temp_model):
    # y = W x + b with W (5, 10): 50 multiply-adds = 100 FLOPs forward; backward computes only dL/dW
    # (the input needs no gradient): another 100. Per sample, whatever the batch used for counting.
    temp_model("t-linear", lambda: nn.Linear(10, 5), input_shape=(10,))
    fc = count_flops("t-linear", (10,), batch=4)
    assert (fc.forward, fc.backward, fc.params, fc.output_shape) == (100, 100, 55, (5,))


def test_lenet5_forward_flops_are_the_closed_form_833040():
    # 2 FLOPs per multiply-add, per layer: output values x inputs per output value. The 28x28 digit is padded
    # to 32x32, so C1 makes 6 maps of 28x28 from 5x5 windows, C3 16 maps of 10x10 from 5x5x6 windows.
    c1 = 2 * 6 * 28 * 28 * (5 * 5 * 1)
    c3 = 2 * 16 * 10 * 10 * (5 * 5 * 6)
    c5, f6, out = 2 * 400 * 120, 2 * 120 * 84, 2 * 84 * 10
    assert c1 + c3 + c5 + f6 + out == 833_040
    for variant in ("classic", "modern"):  # pooling and the squashing function are not counted
        fc = count_flops("lenet5", (1, 28, 28), builder_kwargs={"variant": variant})
        assert fc.forward == 833_040 and fc.params == 61_706 and fc.output_shape == (10,)


def test_flops_of_a_model_that_cannot_take_the_input_is_one_clear_error():
    with pytest.raises(DlcliError, match="alexnet cannot run on an input of shape 3,16,16"):
        count_flops("alexnet", (3, 16, 16))


# ---------------------------------------------------------------------------------------------- peaks


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 SXM5 80GB", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        # similar names with other figures: no peak, so no MFU
        ("NVIDIA L40S", None),
        ("NVIDIA L40", None),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA H100", None),
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", None),
        ("NVIDIA GeForce RTX 4090 D", None),
        ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
        ("NVIDIA GeForce RTX 3090", None),
        ("AMD EPYC 7763 64-Core Processor", None),
        ("", None),
    ],
)
def test_device_names_match_the_right_peak(name, expected):
    match = peaks.match_device(name)
    assert (match.name if match else None) == expected


def test_peak_depends_on_precision_and_is_dense():
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", "fp16") == 989.0
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", "tf32") == 495.0
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 67.0
    assert peaks.peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert peaks.peak_tflops("NVIDIA GeForce RTX 4090", "bf16") == 165.2  # fp32 accumulate, not 330
    assert peaks.peak_tflops("Some Future GPU", "bf16") is None
    for p in peaks.PEAKS:  # tensor cores beat plain FP32; 16-bit beats TF32 (dense ratios 2x on datacenter parts)
        assert p.bf16 >= p.tf32 >= p.fp32 * 0.99 and p.bf16 > p.fp32


# ------------------------------------------------------------------------------------- statistics, search


def test_percentile_interpolates_like_numpy():
    values = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile([3.0], 99) == 3.0


@pytest.mark.parametrize("largest", [0, 1, 3, 7, 8, 100, 127, 128, 129, 5000])
def test_find_max_batch_finds_the_largest_that_fits(largest):
    calls = []

    def fits(b: int) -> bool:
        calls.append(b)
        return b <= largest

    assert find_max_batch(fits, start=8, limit=1 << 16) == largest
    assert len(calls) <= 2 * 17  # doubling plus bisection: logarithmic, not a linear scan


def test_find_max_batch_stops_at_the_limit():
    assert find_max_batch(lambda b: True, start=3, limit=100) == 100


# -------------------------------------------------------------------------------------------- memory


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc/self/clear_refs")
def test_cpu_peak_memory_is_per_benchmark_not_process_wide():
    big = torch.ones(100_000_000)  # 400 MB, touched
    process_peak = meters.rss_peak_bytes()
    del big
    meter = meters.MemoryMeter(torch.device("cpu"))
    meter.start()
    small = torch.ones(10_000_000)  # 40 MB
    peak = meter.peak()
    del small
    try:  # where this process may reset its high-water mark, the meter must have done so (not fallen back)
        with open("/proc/self/clear_refs", "w", encoding="ascii"):
            resettable = True
    except OSError:
        resettable = False
    if resettable:
        assert meter.kind == "cpu_peak_rss"
    if meter.kind == "cpu_peak_rss":  # the reset worked: the earlier 400 MB is not in this benchmark's peak
        assert peak < process_peak - 200_000_000
        assert peak >= meter.baseline + 30_000_000
    else:
        assert meter.kind == "cpu_peak_rss_process"


# ------------------------------------------------------------------------------ the timing arithmetic


class _VirtualTime:
    """A clock that only moves when the model says so: step times are then known exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _TakesTime(torch.autograd.Function):
    """Identity whose backward pass "takes" ``backward_s`` seconds of the virtual clock."""

    @staticmethod
    def forward(ctx, x, clock, backward_s):
        ctx.clock, ctx.backward_s = clock, backward_s
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.clock.now += ctx.backward_s
        return grad, None, None


class _KnownTime(nn.Module):
    """Linear(16 -> 4): 2 x 16 x 4 = 128 FLOPs per sample forward, 128 backward (weights only; the input
    needs no gradient). A forward pass takes ``forward_s``, a backward pass ``backward_s`` on ``clock``."""

    def __init__(self, clock, forward_s: float, backward_s: float) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.clock, self.forward_s, self.backward_s = clock, forward_s, backward_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":  # FLOP counting on the meta device takes no time
            self.clock.now += self.forward_s
        return _TakesTime.apply(self.fc(x), self.clock, self.backward_s)


@pytest.fixture
def fast_gc(monkeypatch):
    """The benchmark collects garbage around every measurement (0.2-0.5 s each with torch loaded); a test of
    its arithmetic does not need that."""
    import gc

    monkeypatch.setattr(gc, "collect", lambda *a: 0)


# The H100 SXM's dense peaks (dlcli.peaks) for each precision: MFU must divide by the one the step ran in.
H100_PEAK = {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0, "fp16": 989.0}


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_throughput_percentiles_tflops_and_mfu_of_a_model_with_known_step_times(temp_model, monkeypatch, fast_gc,
                                                                                 precision):
    clock = _VirtualTime()
    monkeypatch.setattr(meters.Clock, "host_time", staticmethod(clock))
    # the CPU as a GPU of known peak: the published H100 figures, whatever the device
    monkeypatch.setattr(bench_run, "device_peak", lambda _type, _name, p: (H100_PEAK[p], "H100 SXM"))
    monkeypatch.setattr("dlcli.runtime.validate_precision", lambda *a: None)  # fp16 / tf32 on the CPU
    fwd_s, bwd_s, opt_s, batch, steps = 0.25, 0.5, 0.125, 6, 3

    def update_takes_time(*_):
        clock.now += opt_s

    temp_model("t-known", lambda: _KnownTime(clock, fwd_s, bwd_s), input_shape=(16,))
    hook = register_optimizer_step_post_hook(update_takes_time)  # every optimizer's step takes opt_s
    try:
        infer, train = run_benchmark(BenchSpec("t-known", device="cpu", precision=precision, batch_size=batch,
                                               warmup=2, steps=steps, detail=True))
    finally:
        hook.remove()

    assert (infer.precision, train.precision) == (precision, precision)
    assert infer.flops_per_sample == 128 and train.flops_per_sample == 256
    for r, step_s in ((infer, fwd_s), (train, fwd_s + bwd_s + opt_s)):
        assert r.samples_per_s == pytest.approx(batch / step_s, rel=1e-9)  # 24 and 6.857 samples/s
        assert r.step_ms_p50 == r.step_ms_p99 == pytest.approx(1000 * step_s, rel=1e-9)
        achieved = r.flops_per_sample * (batch / step_s) / 1e12  # TFLOP/s
        assert r.achieved_tflops == pytest.approx(achieved, rel=1e-9)
        assert r.peak_tflops == H100_PEAK[precision] and r.peak_device == "H100 SXM"
        assert r.mfu == pytest.approx(achieved / H100_PEAK[precision], rel=1e-9)
    assert infer.forward_ms == pytest.approx(1000 * fwd_s) and infer.backward_ms is None
    assert train.forward_ms == pytest.approx(1000 * fwd_s) and train.backward_ms == pytest.approx(1000 * bwd_s)
    assert train.optimizer_ms == pytest.approx(1000 * opt_s)


def test_a_model_that_sleeps_is_timed_by_the_real_clock(temp_model, fast_gc):
    class Sleeps(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.device.type != "meta":
                time.sleep(0.03)
            return self.fc(x)

    temp_model("t-sleeps", Sleeps, input_shape=(2,))
    (r,) = run_benchmark(BenchSpec("t-sleeps", device="cpu", modes=("infer",), batch_size=3, warmup=0, steps=3))
    # a sleep lasts at least what was asked, and on a busy machine somewhat more
    assert 30.0 <= r.step_ms_p50 < 30.0 + 60.0
    assert 3 / 0.09 < r.samples_per_s <= 3 / 0.03


# ------------------------------------------------------------------------------------------ CPU runs


def _check_result(r: BenchResult) -> None:
    _check_result_common(r)
    assert r.peak_memory_bytes >= r.memory_baseline_bytes > 0
    assert r.mfu is None and r.peak_tflops is None  # no published CPU peak: never an invented MFU
    assert r.env.device == "cpu" and r.env.torch == torch.__version__


def _check_result_common(r: BenchResult) -> None:
    # samples/s comes from the wall time of the whole timed loop, the step times from marks inside it: the
    # loop takes at least the sum of its steps and, with nothing else in it, not much more
    loop_vs_steps = r.batch_size / (r.samples_per_s * r.step_ms_mean / 1000)
    assert 1.0 - 1e-9 <= loop_vs_steps < 1.5
    assert 0 < r.step_ms_p50 <= r.step_ms_p90 <= r.step_ms_p99
    assert r.params > 0 and r.flops_per_sample > 0
    assert r.achieved_tflops == pytest.approx(r.flops_per_sample * r.samples_per_s / 1e12)


def test_cpu_bench_of_lenet5_reports_both_modes_with_detail():
    results = run_benchmark(BenchSpec("lenet5", device="cpu", batch_size=4, warmup=1, steps=3, detail=True))
    assert [(r.mode, r.data, r.batch_size, r.steps, r.warmup) for r in results] == [
        ("infer", "synthetic", 4, 3, 1),
        ("train", "synthetic", 4, 3, 1),
    ]
    for r in results:
        _check_result(r)
    infer, train = results
    assert train.flops_per_sample > 2.5 * infer.flops_per_sample  # forward + backward
    assert infer.forward_ms is not None and infer.backward_ms is None
    assert None not in (train.forward_ms, train.backward_ms, train.optimizer_ms)
    # the phases are medians of parts of each step, so together they cannot exceed the slowest step by much
    assert train.forward_ms + train.backward_ms + train.optimizer_ms <= train.step_ms_p99 * 1.5


def test_cpu_bench_of_resnet18_runs_in_seconds():
    (r,) = run_benchmark(BenchSpec("resnet18", device="cpu", modes=("train",), batch_size=1, warmup=1, steps=2))
    _check_result(r)
    assert r.input_shape == (3, 224, 224) and r.flops_per_sample > 3 * 2 * 1.8e9 * 0.9


def test_models_without_gradient_parameters_skip_train_mode():
    messages: list[str] = []
    results = run_benchmark(BenchSpec("perceptron", device="cpu", batch_size=4, warmup=0, steps=2), messages.append)
    assert [r.mode for r in results] == ["infer"]
    assert any("train mode skipped" in m for m in messages)
    with pytest.raises(UsageError, match="--mode infer"):
        run_benchmark(BenchSpec("perceptron", device="cpu", modes=("train",), steps=1))


def test_out_of_memory_is_a_clear_error_with_a_smaller_size(temp_model):
    class Hungry(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.device.type != "meta" and x.shape[0] > 5:  # "fits" up to batch 5
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return self.fc(x)

    temp_model("t-hungry", Hungry, input_shape=(4,))
    with pytest.raises(DlcliError, match=r"out of memory .* at --batch-size 24 .*try --batch-size 8"):
        run_benchmark(BenchSpec("t-hungry", device="cpu", batch_size=24, warmup=1, steps=1))
    (r, _) = run_benchmark(BenchSpec("t-hungry", device="cpu", batch_size=5, warmup=1, steps=1))
    assert r.batch_size == 5  # the size asked for, never silently changed


def test_out_of_memory_is_recognised_in_its_several_forms():
    assert workload.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert workload.is_oom(RuntimeError("CUDA error: out of memory"))
    cpu_oom = "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
    assert workload.is_oom(RuntimeError(cpu_oom))
    assert workload.is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not workload.is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x3 and 4x2)"))
    assert not workload.is_oom(ValueError("out of memory"))


def test_a_model_without_input_shape_needs_input_size(temp_model):
    temp_model("t-noshape", lambda: nn.Linear(3, 2))
    with pytest.raises(DlcliError, match="--input-size"):
        run_benchmark(BenchSpec("t-noshape", device="cpu", steps=1))
    (r,) = run_benchmark(BenchSpec("t-noshape", device="cpu", modes=("infer",), input_shape=(3,), steps=1))
    assert r.input_shape == (3,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (BenchSpec("nosuch"), "unknown model 'nosuch'; valid names: .*resnet18"),
        (BenchSpec("lenet5", batch_size=0), "--batch-size 0"),
        (BenchSpec("lenet5", steps=0), "--steps 0"),
        (BenchSpec("lenet5", compile=True, warmup=0), "--compile needs at least one warm-up step"),
        (BenchSpec("lenet5", compile="reduce-overhead", warmup=0), "--compile needs at least one warm-up step"),
        (BenchSpec("lenet5", compile="fast"), "--compile-mode 'fast': expected one of default, reduce-overhead"),
        (BenchSpec("lenet5", batch_size=8, auto_batch=True), "drop --batch-size or --auto-batch"),
        (BenchSpec("lenet5", device="cpu", precision="fp16"), "fp16 needs a CUDA device"),
        (BenchSpec("lenet5", device="cpu", precision="tf32"), "tf32"),
        (BenchSpec("lenet5", device="cpu", auto_batch=True), "--auto-batch .* CUDA"),
        (BenchSpec("mlp", device="cpu", data="real"), "no real data set for input shape 2"),
        (BenchSpec("lenet5", device="cpu", data="real", data_dir="/nonexistent"), "MNIST not found under /nonexistent"),
        (BenchSpec("alexnet", device="cpu", data="real", data_dir="/nonexistent"),
         "CIFAR-10 not found: expected the original batches /nonexistent/cifar-10-batches-py/ \\(or "
         "/nonexistent/cifar-10-python.tar.gz\\) or the image folder /nonexistent/cifar10-jpg/train"),
    ],
)
def test_bad_requests_are_one_clear_error(spec, message, monkeypatch):
    import dlcli.data
    import dlcli.download

    monkeypatch.setattr(dlcli.download, "any_reachable", lambda urls, timeout=0: False)  # offline, at once
    with pytest.raises(DlcliError, match=message) as info:
        run_benchmark(spec)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_is_one_clear_error():
    with pytest.raises(DlcliError, match="CUDA is not available"):
        run_benchmark(BenchSpec("lenet5", device="cuda"))


def test_real_data_runs_beside_synthetic_and_reports_the_loader():
    data_dir = _data_dir()
    if data_dir is None:
        pytest.skip("the shared MNIST files are not here")
    spec = BenchSpec("lenet5", device="cpu", modes=("infer",), batch_size=16, warmup=1, steps=3, data="real",
                     data_dir=str(data_dir), workers=0, detail=True)
    synthetic, real = run_benchmark(spec)
    assert (synthetic.data, real.data) == ("synthetic", "real")
    assert real.data_ms is not None and real.data_ms > 0  # decoding 16 MNIST images takes time
    from dlcli.report.bench import notes

    assert any("real input reaches" in line for line in notes([synthetic, real]))


@pytest.mark.parametrize(("shape", "folder"),
                         [((1, 28, 28), "MNIST"), ((1, 20, 24), "MNIST"), ((3, 16, 16), "cifar10-jpg")])
def test_real_batches_are_the_source_images_normalised_with_its_statistics(shape, folder):
    data_dir = _data_dir()
    if data_dir is None or not (data_dir / folder).is_dir():
        pytest.skip(f"the shared {folder} files are not here")
    from dlcli.runtime import Runtime

    real = workload.RealData.open(shape, str(data_dir), seed=0)
    assert (real.name, len(real.mean)) == (("MNIST", 1) if shape[0] == 1 else ("CIFAR-10", 3))
    assert real.mean == ((0.1307,) if shape[0] == 1 else (0.4914, 0.4822, 0.4465))  # the sources' statistics
    batches = workload.Batches(Runtime.create("cpu"), 8, shape, lambda b: torch.zeros(b), real=real,
                               use_labels=True, workers=0)
    x, y = batches.next()
    batches.close()
    assert x.shape == (8, *shape) and x.dtype == torch.float32 and y.dtype == torch.long
    mean = torch.tensor(real.mean).view(1, -1, 1, 1)
    std = torch.tensor(real.std).view(1, -1, 1, 1)
    pixels = (x * std + mean) * 255  # undo the normalisation: whole grey levels 0..255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    assert pixels.max() > 128 and set(y.tolist()) <= set(range(10))


# ----------------------------------------------------------------------------------- output contract


def _fake_result(**over) -> BenchResult:
    env = bench.Environment("cpu", "Test CPU", "2.x", None, None, False, False, 2, 2, 0.5, "0.1.0", "3.11", "Linux")
    kw = dict(
        model="m", mode="train", data="synthetic", batch_size=8, auto_batch=False, input_shape=(3, 8, 8),
        precision="fp32", channels_last=False, compile=False, warmup=1, steps=2, samples_per_s=10.0,
        step_ms_p50=1.0, step_ms_p90=2.0, step_ms_p99=3.0, step_ms_mean=1.5, data_ms=None, forward_ms=None,
        backward_ms=None, optimizer_ms=None, peak_memory_bytes=2000, memory_baseline_bytes=1000,
        memory_kind="cpu_peak_rss", params=5, flops_per_sample=100, achieved_tflops=1e-9, peak_tflops=None,
        peak_device=None, mfu=None, timestamp="2026-01-01T00:00:00+00:00", env=env,
    )
    kw.update(over)
    return BenchResult(**kw)


def test_result_round_trips_through_its_dict():
    r = _fake_result()
    d = json.loads(json.dumps(r.to_dict()))
    assert tuple(d) == bench.FIELDS
    assert BenchResult.from_dict(d) == r
    with pytest.raises(DlcliError, match="missing field"):
        BenchResult.from_dict({k: v for k, v in d.items() if k != "samples_per_s"})


def test_csv_appends_rows_and_writes_the_header_once(tmp_path):
    path = tmp_path / "sub" / "bench.csv"
    bench.append_csv(path, [_fake_result(mode="infer"), _fake_result()])
    bench.append_csv(path, [_fake_result(model="n")])
    rows = list(csv.reader(path.open()))
    assert rows[0] == list(bench.FIELDS)
    assert [row[0] for row in rows[1:]] == ["m", "m", "n"]
    assert rows[1][bench.FIELDS.index("input_shape")] == "3x8x8"
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(DlcliError, match="other columns"):
        bench.append_csv(other, [_fake_result()])


def test_child_argv_reproduces_every_option():
    spec = BenchSpec("x", modes=("train",), device="cpu", batch_size=4, precision="bf16", channels_last=True,
                     compile=True, warmup=0, steps=3, input_shape=(1, 28, 28), data="real", data_dir="/d",
                     workers=2, detail=True, seed=7)
    argv = bench.child_argv(spec)
    joined = " ".join(argv)
    for part in ("--device cpu", "--mode train", "--precision bf16", "--batch-size 4", "--warmup 0",
                 "--steps 3", "--input-size 1,28,28", "--data real", "--data-dir /d", "--workers 2",
                 "--seed 7", "--channels-last", "--compile", "--detail"):
        assert part in joined
    assert "--auto-batch" not in argv
    assert "--mode both" in " ".join(bench.child_argv(BenchSpec("x")))
    graphs = bench.child_argv(BenchSpec("x", compile="reduce-overhead"))  # a mode travels as --compile-mode MODE
    assert graphs[graphs.index("--compile-mode") + 1] == "reduce-overhead" and "--compile" not in graphs
    assert "--compile-mode" not in argv


def test_every_timed_step_starts_a_cuda_graph_replay(monkeypatch):
    """Under --compile-mode reduce-overhead each step is one replay of its CUDA graphs: the workload marks its
    start (``Runtime.mark_step``, a no-op without graphs) in warm-up and timed steps, in both modes."""
    from dlcli.runtime import Runtime

    calls = []
    monkeypatch.setattr(Runtime, "mark_step", lambda self: calls.append(self.device.type))
    for mode in ("infer", "train"):
        calls.clear()
        run_benchmark(BenchSpec("mlp", device="cpu", modes=(mode,), batch_size=4, warmup=2, steps=3))
        assert calls == ["cpu"] * 5, mode


# ----------------------------------------------------------------------------------------- the CLI

REQUIRED_JSON = {
    "model", "mode", "batch_size", "samples_per_s", "step_ms_p50", "step_ms_p90", "step_ms_p99", "forward_ms",
    "backward_ms", "optimizer_ms", "peak_memory_bytes", "memory_kind", "params", "flops_per_sample",
    "achieved_tflops", "peak_tflops", "mfu", "device", "device_name", "torch", "cuda", "cudnn", "tf32_matmul",
    "tf32_cudnn", "cpu_threads", "dlcli",
}


def test_cli_json_is_one_document_with_every_field(capsys, tmp_path):
    from dlcli.cli import main

    csv_path = tmp_path / "b.csv"
    main(["bench", "mlp", "--device", "cpu", "--steps", "2", "--warmup", "1", "--detail", "--json",
          "--csv", str(csv_path)])
    captured = capsys.readouterr()
    docs = json.loads(captured.out)  # stdout holds exactly one JSON document
    assert [d["mode"] for d in docs] == ["infer", "train"]
    for d in docs:
        assert REQUIRED_JSON <= set(d)
        assert d["model"] == "mlp" and d["mfu"] is None
    assert "timing 2 step(s)" in captured.err  # progress on stderr
    assert len(csv_path.read_text().splitlines()) == 3


def test_cli_table_names_the_flop_convention(capsys):
    from dlcli.cli import main

    main(["bench", "mlp", "--device", "cpu", "--steps", "1", "--warmup", "0", "--detail"])
    out = capsys.readouterr().out
    assert "2 per multiply-add" in out and "MFU" in out and "torch" in out
    # captured output is not a terminal: the wide --detail table is printed whole, no header cut to "samp…"
    for header in ("samples/s", "GFLOP/sample", "fwd ms", "opt ms", "peak mem", "TFLOP/s"):
        assert header in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["bench", "nosuch"], 2, "unknown model 'nosuch'"),
        (["bench", "lenet5", "--batch-size", "0"], 2, "--batch-size 0"),
        (["bench", "lenet5", "--device", "cpu", "--precision", "fp16"], 2, "needs a CUDA device"),
        (["bench", "all", "--input-size", "3,32,32"], 2, "--input-size applies to one model"),
        (["bench", "lenet5", "--warmup", "-1"], 2, "--warmup -1: must be 0 or more"),
        (["bench", "lenet5", "--steps", "0"], 2, "--steps 0: must be at least 1"),
        (["bench", "lenet5", "--input-size", "1,28,x"], 2, "--input-size '1,28,x': expected positive integers"),
        (["bench", "lenet5", "--input-size", "1,,28"], 2, "--input-size '1,,28': expected positive integers"),
        (["bench", "lenet5", "--input-size", "0,28,28"], 2, "--input-size '0,28,28': expected positive integers"),
        (["bench", "lenet5", "--input-size", "1,28,28.5"], 2, "expected positive integers like 3,224,224"),
        (["bench", "lenet5,nosuch", "--steps", "1"], 2, "unknown model 'nosuch'"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv, code, message):
    from dlcli.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_parse_input_size_accepts_commas_and_x():
    assert bench.parse_input_size("3,224,224") == bench.parse_input_size(" 3x224x224 ") == (3, 224, 224)
    assert bench.parse_input_size("16") == (16,)


@pytest.mark.parametrize(("argv", "expected"), [("all", None), ("lenet5, mlp", ["lenet5", "mlp"])])
def test_bench_all_and_a_list_hand_every_model_to_child_processes(capsys, monkeypatch, argv, expected):
    from dlcli.cli import main
    from dlcli.registry import list_models

    seen = {}

    def fake_run_all(models, spec, on_line):
        seen["models"], seen["spec"] = list(models), spec
        return [], []

    monkeypatch.setattr(bench, "run_all", fake_run_all)  # cli_bench looks it up when the command runs
    main(["bench", argv, "--device", "cpu", "--steps", "1", "--warmup", "1", "--mode", "infer", "--json"])
    assert seen["models"] == (expected or list_models())
    assert (seen["spec"].steps, seen["spec"].warmup, seen["spec"].modes) == (1, 1, ("infer",))
    assert json.loads(capsys.readouterr().out) == []


def test_bench_all_passes_on_a_childs_one_line_error():
    # the successful children of a list (results, their order, the [i/n] progress lines) are tested through the
    # command line in test_json_cli.py (`dlcli bench lenet5,mlp`); here a child that fails
    lines: list[str] = []
    spec = BenchSpec("all", modes=("infer",), device="cpu", batch_size=2, warmup=0, steps=1)
    results, failures = bench.run_all(["nosuch"], spec, on_line=lines.append)
    assert results == [] and [f.model for f in failures] == ["nosuch"]
    assert "unknown model 'nosuch'" in failures[0].message  # the child's one-line error, passed on
    assert any("[1/1] nosuch" in line for line in lines)


# ------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "resnet50"])
def test_image_models_take_channels_and_classes(name):
    model = build_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_pretrained_weights_come_only_from_the_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DlcliError, match="not in the torch hub cache .*resnet18-f37072fd.pth"):
        build_model("resnet18", pretrained=True)
    with pytest.raises(UsageError, match="in_channels=3"):
        build_model("resnet18", pretrained=True, in_channels=1)
    # a cached file is loaded: weights of a fresh model, saved under torchvision's file name, come back
    # tensor for tensor (two fresh models never share a random initialisation)
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(123)
    saved = build_model("alexnet").state_dict()
    torch.save(saved, tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth")
    loaded = build_model("alexnet", pretrained=True).state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not torch.equal(build_model("alexnet").state_dict()["features.0.weight"], saved["features.0.weight"])
    # fine-tuning on 10 classes: every layer loaded but the last, which is a fresh 4096 -> 10 layer
    tuned = build_model("alexnet", pretrained=True, num_classes=10).state_dict()
    assert tuned["classifier.6.weight"].shape == (10, 4096)
    assert all(torch.equal(tuned[k], saved[k]) for k in saved if not k.startswith("classifier.6."))


# -------------------------------------------------------------------------------------------- CUDA


@cuda
@pytest.mark.cuda
def test_cuda_bench_uses_events_allocator_peak_and_mfu():
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    results = run_benchmark(BenchSpec("resnet18", device="cuda", batch_size=16, precision=precision,
                                      channels_last=True, warmup=2, steps=5, detail=True))
    for r in results:
        assert r.memory_kind == "cuda_max_memory_allocated" and r.peak_memory_bytes > 11_689_512 * 4
        _check_result_common(r)
        peak = peaks.peak_tflops(r.env.device_name, precision)
        assert r.peak_tflops == peak and (r.mfu is None) == (peak is None)
        if peak is not None:  # the 16-bit tensor-core peak of this GPU, and the MFU it implies
            assert r.mfu == pytest.approx(r.achieved_tflops / peak, rel=1e-9)
            assert 0 < r.mfu < 1


@cuda
@pytest.mark.cuda
def test_cuda_auto_batch_states_its_choice():
    messages: list[str] = []
    (r,) = run_benchmark(BenchSpec("lenet5", device="cuda", modes=("infer",), auto_batch=True, warmup=1, steps=2),
                         messages.append)
    assert r.auto_batch and r.batch_size >= 128
    assert any(f"chose batch {r.batch_size}" in m for m in messages)


@cuda
@pytest.mark.cuda
def test_cuda_out_of_memory_suggests_a_size():
    with pytest.raises(DlcliError, match="out of memory .* try --batch-size"):
        run_benchmark(BenchSpec("alexnet", device="cuda", modes=("train",), batch_size=1 << 20, warmup=0, steps=1))


@cuda
@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_compile_runs():
    (r,) = run_benchmark(BenchSpec("lenet5", device="cuda", modes=("train",), compile=True, batch_size=64,
                                   warmup=2, steps=3))
    assert r.compile and r.samples_per_s > 0


@cuda
@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_graphs_run_in_both_modes():
    """--compile-mode reduce-overhead: torch.compile's CUDA graphs, replayed in the timed steps of both modes."""
    results = run_benchmark(BenchSpec("lenet5", device="cuda", compile="reduce-overhead", batch_size=64, warmup=3,
                                      steps=5))
    assert [r.mode for r in results] == ["infer", "train"]
    assert all(r.compile == "reduce-overhead" and r.samples_per_s > 0 for r in results)
