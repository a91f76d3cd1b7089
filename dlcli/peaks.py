"""Published dense peak throughput of common GPUs, and matching of CUDA device names to them.

MFU (model FLOPs utilisation) is achieved FLOP/s divided by the peak of the device *at the precision the
matrix units ran in*. The figures are vendors' datasheet numbers without structured sparsity ("dense"),
in TFLOP/s (10^12 real floating-point operations per second, 2 per multiply-add). A device that is not in
the table gets no peak and therefore no MFU: an invented peak would make an invented MFU.

Sources (dense = the datasheet's sparse figure halved where only that is printed):
  H100 SXM: NVIDIA H100 Tensor Core GPU datasheet, SXM column: FP32 67, TF32 989*, BF16/FP16 1,979* (*sparse).
  H200 SXM: NVIDIA H200 Tensor Core GPU datasheet, SXM column: the same figures as the H100 SXM.
  A100: NVIDIA A100 Tensor Core GPU datasheet: FP32 19.5, TF32 156 (312*), BF16/FP16 312 (624*).
  H100 PCIe: NVIDIA H100 datasheet, PCIe column: FP32 51, TF32 756*, BF16/FP16 1,513* (*sparse).
  L4: NVIDIA L4 datasheet: FP32 30.3, TF32 120*, BF16/FP16 242* (*sparse).
  RTX 4090: NVIDIA Ada Lovelace architecture whitepaper, appendix table: FP32 82.6; TF32 tensor 82.6;
    FP16/BF16 tensor *with FP32 accumulate* 165.2 (PyTorch accumulates in fp32; the 330 figure is for
    fp16 accumulate, which GeForce cards run at double rate).
Variants whose figures differ and are not listed here (H100 NVL, H200 NVL, MIG slices, RTX 4090 D, laptop
parts) deliberately match nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuPeak:
    """Dense peak TFLOP/s of one GPU model, per kind of arithmetic."""

    name: str  # canonical name shown in reports, e.g. "H100 SXM"
    bf16: float  # BF16/FP16 tensor cores, fp32 accumulate
    tf32: float  # TF32 tensor cores (fp32 matmuls with allow_tf32)
    fp32: float  # plain FP32 (CUDA cores, no tensor cores)
    source: str


H100_SXM = GpuPeak("H100 SXM", bf16=989.0, tf32=495.0, fp32=67.0, source="NVIDIA H100 Tensor Core GPU datasheet, SXM")
H100_PCIE = GpuPeak("H100 PCIe", bf16=756.5, tf32=378.0, fp32=51.0, source="NVIDIA H100 datasheet, PCIe column")
H200_SXM = GpuPeak("H200 SXM", bf16=989.0, tf32=495.0, fp32=67.0, source="NVIDIA H200 Tensor Core GPU datasheet, SXM")
A100 = GpuPeak("A100", bf16=312.0, tf32=156.0, fp32=19.5, source="NVIDIA A100 Tensor Core GPU datasheet")
L4 = GpuPeak("L4", bf16=121.0, tf32=60.0, fp32=30.3, source="NVIDIA L4 datasheet")
RTX_4090 = GpuPeak("RTX 4090", bf16=165.2, tf32=82.6, fp32=82.6, source="NVIDIA Ada Lovelace whitepaper")

PEAKS: tuple[GpuPeak, ...] = (H100_SXM, H100_PCIE, H200_SXM, A100, L4, RTX_4090)

# Names that share a family with a listed part but have other figures: never guess for them.
_EXCLUDE = re.compile(r"\bmig\b|\bnvl\b|laptop|mobile|\bmax-q\b|rtx 4090 d\b", re.IGNORECASE)


def match_device(name: str) -> GpuPeak | None:
    """The table entry for a ``torch.cuda.get_device_name`` string, or None when the part is not known.

    Examples: "NVIDIA H100 80GB HBM3" -> H100 SXM (the SXM5 board reports its memory, not its form factor),
    "NVIDIA H100 PCIe" -> H100 PCIe, "NVIDIA H200" -> H200 SXM, "NVIDIA A100-SXM4-80GB" -> A100,
    "NVIDIA L4" -> L4 (but "NVIDIA L40S" -> None), "NVIDIA GeForce RTX 4090" -> RTX 4090.
    """
    n = " ".join(name.lower().replace("_", " ").split())
    if not n or _EXCLUDE.search(n):
        return None
    if re.search(r"\bh100\b", n):
        if "pcie" in n:
            return H100_PCIE
        if "hbm3" in n or "sxm" in n:  # "NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"
            return H100_SXM
        return None  # a bare "H100" does not say which board; PCIe and SXM differ by a third
    if re.search(r"\bgh200\b", n):
        return None  # Grace Hopper: different clocks and power, not in the table
    if re.search(r"\bh200\b", n):
        return H200_SXM  # "NVIDIA H200"; the NVL board is excluded above
    if re.search(r"\ba100\b", n):
        return A100  # SXM4 and PCIe, 40 and 80 GB, share the same tensor-core peaks
    if re.search(r"\bl4\b", n):
        return L4  # \b keeps "L40" and "L40S" out
    if re.search(r"\brtx 4090\b", n):
        return RTX_4090
    return None


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s of a CUDA device for a dlcli precision, or None when unknown.

    fp32 means plain FP32 (dlcli turns TF32 off unless asked), tf32 the TF32 tensor-core rate, and
    bf16/fp16 the 16-bit tensor-core rate (autocast runs convolutions and matmuls in 16 bits).
    """
    peak = match_device(device_name)
    if peak is None:
        return None
    if precision in ("bf16", "fp16"):
        return peak.bf16
    if precision == "tf32":
        return peak.tf32
    if precision == "fp32":
        return peak.fp32
    return None
