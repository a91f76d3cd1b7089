"""Adversarial attacks as pure functions on a model that maps [0, 1] pixels (B, C, H, W) to logits (B, K).

``deepfool`` (Moosavi-Dezfooli et al. 2016), ``fgsm_direction`` / ``fgsm_min_eps`` (the fast gradient sign
baseline under the DeepFool paper's protocol) and ``universal_perturbation`` (Moosavi-Dezfooli et al. 2017)
return result dataclasses and print nothing; ``dlcli.attacks.runner`` turns them into reports and files.
"""

from dlcli.attacks.deepfool import DeepFoolResult, deepfool
from dlcli.attacks.fgsm import FGSMDirection, FGSMResult, fgsm_direction, fgsm_min_eps
from dlcli.attacks.universal import UniversalResult, fooling_rate, project, random_like, universal_perturbation

__all__ = [
    "DeepFoolResult",
    "FGSMDirection",
    "FGSMResult",
    "UniversalResult",
    "deepfool",
    "fgsm_direction",
    "fgsm_min_eps",
    "fooling_rate",
    "project",
    "random_like",
    "universal_perturbation",
]
