"""One layer of greedy layer-wise pretraining, as pure functions of its weights and a batch.

A layer has weights W (H, V), a hidden bias b (H) and a visible (reconstruction) bias c (V); a batch v is
(B, V) with values in [0, 1]: pixels for the first layer, the sigmoid codes of the layer below for the others.

Denoising autoencoder (Vincent et al. 2008, 2010), tied weights:
    ṽ = v with a random fraction ``noise`` of its entries set to 0 (masking noise)
    h = σ(W ṽ + b),  z = σ(Wᵀ h + c)
    loss = −Σ_j [v_j log z_j + (1 − v_j) log(1 − z_j)]  (cross-entropy to the clean v), averaged over the batch

Restricted Boltzmann machine with binary units (Hinton 2002; Hinton, Osindero, Teh 2006):
    E(v, h) = −cᵀv − bᵀh − hᵀW v,   p(h_i = 1 | v) = σ(W v + b)_i,   p(v_j = 1 | h) = σ(Wᵀ h + c)_j
    ∂ log p(v) / ∂W = ⟨h vᵀ⟩_data − ⟨h vᵀ⟩_model; CD-k replaces the model average by the end of a k-step
    Gibbs chain started at the data: ΔW ∝ p(h | v⁰) v⁰ᵀ − p(h | vᵏ) vᵏᵀ (and likewise for b and c).
Every random draw takes an explicit generator, so a step is a pure function of (weights, batch, generator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bernoulli(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Binary samples with probabilities p (same shape), drawn from ``generator`` (on p's device)."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


def masking_noise(v: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """v with each entry set to 0 with probability ``fraction`` (Vincent's masking corruption)."""
    if fraction <= 0:
        return v
    keep = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype) >= fraction
    return v * keep


def dae_loss(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, noise: float,
             generator: torch.Generator) -> torch.Tensor:
    """The denoising autoencoder's loss on a batch v (B, V): reconstruction cross-entropy summed over the V
    units, mean over the batch (a scalar with a graph to W, b, c)."""
    h = torch.sigmoid(F.linear(masking_noise(v, noise, generator), W, b))  # (B, H)
    logits = h @ W + c  # (B, V): z = σ(logits)
    return F.binary_cross_entropy_with_logits(logits, v, reduction="sum") / len(v)


def rbm_hidden(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """p(h = 1 | v) = σ(W v + b): (B, V) -> (B, H)."""
    return torch.sigmoid(F.linear(v, W, b))


def rbm_visible(h: torch.Tensor, W: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """p(v = 1 | h) = σ(Wᵀ h + c): (B, H) -> (B, V)."""
    return torch.sigmoid(h @ W + c)


@torch.no_grad()
def cd_k(v0: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, k: int,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CD-k estimate of the gradient of the mean log-likelihood of v0 (B, V), for ascent:
    (dW (H, V), db (H), dc (V), reconstruction error). The chain's hidden states are sampled at every step,
    its visible states too (so that the negative statistics are those of samples of the model); the
    statistics use p(h | v) rather than sampled h (lower variance, same expectation). The reconstruction
    error is the squared distance from v0 to p(v | h⁰) summed over units, mean over the batch."""
    if k < 1:
        raise ValueError(f"cd_k needs k >= 1, got {k}")
    h0 = rbm_hidden(v0, W, b)
    h = bernoulli(h0, generator)
    recon = None
    for _ in range(k):
        vp = rbm_visible(h, W, c)
        if recon is None:
            recon = (v0 - vp).pow(2).sum(1).mean()
        v = bernoulli(vp, generator)
        hk = rbm_hidden(v, W, b)
        h = bernoulli(hk, generator)
    n = len(v0)
    dW = (h0.T @ v0 - hk.T @ v) / n
    return dW, (h0 - hk).mean(0), (v0 - v).mean(0), recon


@torch.no_grad()
def gibbs(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, steps: int,
          generator: torch.Generator) -> torch.Tensor:
    """``steps`` alternating Gibbs steps v -> h -> v from the states v (B, V); returns p(v | h) of the last
    step (the usual way to show a sample: its probabilities rather than its binary draw)."""
    vp = v
    for _ in range(steps):
        h = bernoulli(rbm_hidden(v, W, b), generator)
        vp = rbm_visible(h, W, c)
        v = bernoulli(vp, generator)
    return vp
