"""Wall-time figures of a training run read from its epochs' end times. The lowest layer (standard library only,
no torch), so the trainer and the benchmark scripts that read saved curves share one definition."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def steady_epoch_s(times: Iterable[tuple[int, float | None]]) -> float | None:
    """The steady time of one epoch: the median of the durations of epochs e+1 whose own time is known, i.e.
    ``t[e+1] - t[e]`` over the (epoch, cumulative seconds) pairs where both e and e+1 have a time.

    The first epoch present is never one of them (nothing before it to subtract), and it is the one that
    carries compilation, CUDA-graph capture and cuDNN's autotuning (52 s of ResNet-56's first epoch on a GPU,
    then about 2.5 s each). None times and missing epochs are skipped; None when no duration is known."""
    at = {int(e): float(t) for e, t in times if t is not None}
    durations = [at[e + 1] - at[e] for e in sorted(at) if e + 1 in at]
    return statistics.median(durations) if durations else None
