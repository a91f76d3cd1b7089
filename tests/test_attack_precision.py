"""Attacks run in full float32: TF32 (PyTorch's default for cuDNN convolutions) is off inside every attack and
restored afterwards. Whether an adversarial image fools the model is decided on logits a hair apart at the
boundary; in TF32 that decision changed with the batch an image was evaluated in (0.7% of a CIFAR ResNet-20's
images on an H200). The flags are global Python state, so this is checked on the CPU: the model records them
on every forward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlcli.attacks import deepfool, fgsm_direction, fgsm_min_eps
from dlcli.attacks.universal import fooling_matrix, fooling_rate, universal_perturbation


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return self.net(x)


@pytest.fixture
def tf32_on():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("attack", ["deepfool", "fgsm", "universal", "fooling_rate", "fooling_matrix"])
def test_every_attack_runs_without_tf32_and_restores_it(tf32_on, attack):
    model = Recorder()
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    if attack == "deepfool":
        deepfool(model, x, max_iter=5)
    elif attack == "fgsm":
        fgsm_min_eps(model, x, fgsm_direction(model, x), grid=4, bisect_steps=2)
    elif attack == "universal":  # Algorithm 1 itself: its own predictions, the inner DeepFool, the pass's rate
        universal_perturbation(model, x, xi=0.5, norm="2", max_passes=1, fold_batch=4)
    elif attack == "fooling_rate":
        fooling_rate(model, x, torch.full_like(x[0], 0.1))
    else:  # the cross-model matrix computes each model's clean predictions itself
        fooling_matrix([model], x, [torch.full_like(x[0], 0.1)])
    assert model.seen and set(model.seen) == {(False, False)}  # every forward pass in full float32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)  # restored
