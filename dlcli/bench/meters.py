"""Meters: the peak memory of one benchmark, timestamps on the host or a CUDA stream, and percentiles.

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA (reset before the model is built); on the CPU the
peak resident set size of this process, whose high-water mark is reset through ``/proc/self/clear_refs``
before the model is built, so each benchmark reports its own peak. Where that reset is not possible the
process-wide ``ru_maxrss`` is reported and labelled as such (``bench all`` runs each model in its own
process for the same reason).

Time: ``time.perf_counter`` on the host; on a GPU, CUDA events recorded in the stream and read after one
``torch.cuda.synchronize`` at the end, so that timing never stalls the queue.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import resource
import sys
import time
from typing import Any, Callable, Sequence

import torch

# ----------------------------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return maxrss_bytes()


def maxrss_bytes() -> int:
    """Process-wide peak RSS since start (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # "5": reset the peak resident set size (Linux >= 4.0, proc(5))
        return True
    except OSError:
        return False


def rss_peak_bytes() -> int:
    """The kernel's RSS high-water mark of this process (VmHWM), else the process-wide ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError):
        pass
    return maxrss_bytes()


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so a previous benchmark's garbage is not resident."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


class MemoryMeter:
    """Peak memory of one benchmark: CUDA allocator peak, or the process's RSS high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss"
        self.baseline = 0

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()
            if not reset_rss_peak():
                self.kind = "cpu_peak_rss_process"  # honest label: a peak since the process started
            self.baseline = rss_bytes()

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        return rss_peak_bytes()


# ------------------------------------------------------------------------------------------------- time


class Clock:
    """Timestamps for the host (perf_counter, seconds) or a CUDA stream (events); differences in ms."""

    host_time: Callable[[], float] = staticmethod(time.perf_counter)  # seconds; tests substitute a fake clock

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()  # enqueued on the current stream: no synchronisation here
            return ev
        return self.host_time()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def ms(self, a: Any, b: Any) -> float:
        if self.cuda:
            return float(a.elapsed_time(b))  # both events must have completed: call after sync()
        return (b - a) * 1000.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
