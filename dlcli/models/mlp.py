"""The lecture's first models: Rosenblatt's perceptron and the two-layer network h = g(Wx + b), y = W2ᵀh + b2."""

from __future__ import annotations

import torch
from torch import nn

from dlcli.registry import register_model

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class Perceptron(nn.Module):
    """y = sign(a·x + b). Trained by the perceptron rule, not by gradients: the parameters need no grad."""

    def __init__(self, in_features: int = 2) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(in_features), requires_grad=False)
        self.b = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N,) scores a·x + b
        return x @ self.a + self.b

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels in {-1, +1}; a score of exactly 0 counts as -1 (positive means a·x + b > 0)."""
        return torch.where(self.forward(x) > 0, 1, -1)


@register_model("perceptron", input_shape=(2,), summary="Rosenblatt 1958: y = sign(a·x + b)")
def perceptron(*, in_features: int = 2) -> Perceptron:
    return Perceptron(in_features)


class TwoLayer(nn.Module):
    """h = g(W x + b) (hidden width ``hidden``), y = W2ᵀ h + b2; the universal approximator of the lecture."""

    def __init__(self, in_features: int, hidden: int, out_features: int, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.hidden = nn.Linear(in_features, hidden)
        self.act = ACTIVATIONS[activation]()
        self.out = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) -> (N, out)
        return self.out(self.act(self.hidden(x)))


def lecture_xor_weights(model: TwoLayer) -> TwoLayer:
    """The lecture's hand-set XOR solution: W = [[1,-1],[-1,1]], b = [-1/2,-1/2], w2 = [4,4], b2 = -1."""
    with torch.no_grad():
        model.hidden.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        model.hidden.bias.copy_(torch.tensor([-0.5, -0.5]))
        model.out.weight.copy_(torch.tensor([[4.0, 4.0]]))
        model.out.bias.copy_(torch.tensor([-1.0]))
    return model


@register_model("mlp", input_shape=(2,), summary="two layers: h = g(Wx + b), y = W2ᵀh + b2")
def mlp(
    *,
    in_features: int = 2,
    hidden: int = 2,
    out_features: int = 1,
    activation: str = "tanh",
    weights: str = "random",
    slope: float = 10.0,
) -> TwoLayer:
    """``weights``: ``random`` (PyTorch's default init), ``spread`` (each hidden unit's transition placed at
    a uniformly random point of the unit cube, steepness ``slope``: the picture behind universal
    approximation, and a much better start on [0, 1] than the default), or ``lecture`` (the lecture's XOR
    solution; 2 inputs, 2 hidden units, 1 output only)."""
    if hidden < 1 or in_features < 1 or out_features < 1:
        raise ValueError("in_features, hidden and out_features must be >= 1")
    model = TwoLayer(in_features, hidden, out_features, activation)
    if weights == "spread":
        with torch.no_grad():
            direction = torch.nn.functional.normalize(torch.randn(hidden, in_features), dim=1)  # (H, D)
            centre = torch.rand(hidden, in_features)  # where each unit switches, (H, D)
            model.hidden.weight.copy_(slope * direction)
            model.hidden.bias.copy_(-(slope * direction * centre).sum(1))
    elif weights == "lecture":
        if (in_features, hidden, out_features) != (2, 2, 1):
            raise ValueError("weights: lecture is the 2-2-1 XOR network; set in_features=2, hidden=2, out_features=1")
        lecture_xor_weights(model)
    elif weights != "random":
        raise ValueError(f"weights must be 'random', 'spread' or 'lecture', got {weights!r}")
    return model
