"""Adversarial attacks as pure functions on a model that maps [0, 1] pixels (B, C, H, W) to logits (B, K).

``deepfool`` (Moosavi-Dezfooli et al. 2016; by default every step solved inside the valid pixel box),
``fgsm_direction`` / ``fgsm_min_eps`` (the fast gradient sign baseline under the DeepFool paper's protocol)
and ``universal_perturbation`` / ``fooling_matrix`` (Moosavi-Dezfooli et al. 2017) return result dataclasses
and print nothing; ``dlcli.attacks.runner`` and ``runner_universal`` turn them into reports and files.
"""

from dlcli.attacks.deepfool import DeepFoolResult, deepfool
from dlcli.attacks.fgsm import FGSMDirection, FGSMResult, fgsm_direction, fgsm_min_eps
from dlcli.attacks.linear_step import box_step, free_step
from dlcli.attacks.universal import (
    UniversalResult,
    fooling_matrix,
    fooling_rate,
    project,
    random_like,
    universal_perturbation,
)

__all__ = [
    "DeepFoolResult",
    "FGSMDirection",
    "FGSMResult",
    "UniversalResult",
    "box_step",
    "deepfool",
    "fgsm_direction",
    "fgsm_min_eps",
    "fooling_matrix",
    "fooling_rate",
    "free_step",
    "project",
    "random_like",
    "universal_perturbation",
]
