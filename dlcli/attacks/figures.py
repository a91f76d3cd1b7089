"""The PNG figures the attack commands write: original / perturbation / adversarial strips and the transfer heatmap.

matplotlib is imported inside the functions (it takes a second to import) with the Agg backend, so the
figures are written without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import Tensor


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_image(t: Tensor) -> Any:
    """(C, H, W) in [0, 1] -> what imshow takes: (H, W) grey or (H, W, 3) colour."""
    t = t.detach().cpu().float()
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).clamp(0, 1).numpy()


def amplified(r: Tensor) -> Tensor:
    """A perturbation (C, H, W) stretched to fill [0, 1] for display; zero maps to mid-grey."""
    return 0.5 + r / (2 * r.abs().max().clamp_min(1e-12))


def save_triptych(path: Path, originals: Tensor, perturbations: Tensor, adversarial: Tensor,
                  clean_labels: Sequence[str], adv_labels: Sequence[str], notes: Sequence[str], title: str) -> None:
    """A PNG with three rows: originals, perturbations (amplified to fill the grey range), adversarial images."""
    plt = _plt()
    k = max(originals.shape[0], 1)
    fig, axes = plt.subplots(3, k, figsize=(1.6 * k + 0.6, 5.6), squeeze=False)
    for j in range(k):
        for row in range(3):
            axes[row][j].axis("off")
        if j >= originals.shape[0]:
            continue
        cmap = "gray" if originals.shape[1] == 1 else None
        axes[0][j].imshow(to_image(originals[j]), cmap=cmap, vmin=0, vmax=1)
        axes[0][j].set_title(f"{clean_labels[j]}", fontsize=9)
        axes[1][j].imshow(to_image(amplified(perturbations[j])), cmap=cmap, vmin=0, vmax=1)
        axes[1][j].set_title(notes[j], fontsize=7)
        axes[2][j].imshow(to_image(adversarial[j]), cmap=cmap, vmin=0, vmax=1)
        axes[2][j].set_title(f"→ {adv_labels[j]}", fontsize=9)
    axes[0][0].text(-0.15, 0.5, "original", rotation=90, va="center", ha="right", transform=axes[0][0].transAxes)
    axes[1][0].text(-0.15, 0.5, "perturbation\n(amplified)", rotation=90, va="center", ha="right",
                    transform=axes[1][0].transAxes)
    axes[2][0].text(-0.15, 0.5, "adversarial", rotation=90, va="center", ha="right", transform=axes[2][0].transAxes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_side_by_side(path: Path, original: Tensor, perturbation: Tensor, adversarial: Tensor,
                      titles: Sequence[str], suptitle: str) -> None:
    """One image's original, amplified perturbation and adversarial image in a row (``--images`` output)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    cmap = "gray" if original.shape[0] == 1 else None
    for ax, img, title in zip(axes, (original, amplified(perturbation), adversarial), titles):
        ax.imshow(to_image(img), cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_heatmap(path: Path, rates: Sequence[Sequence[float]], row_labels: Sequence[str],
                 col_labels: Sequence[str], title: str) -> None:
    """Fooling rates (rows × columns, fractions) as an annotated heatmap, 0% white to 100% dark red."""
    plt = _plt()
    nr, nc = len(row_labels), len(col_labels)
    fig, ax = plt.subplots(figsize=(1.6 * nc + 2.8, 0.7 * nr + 1.8))
    im = ax.imshow([[100 * v for v in row] for row in rates], cmap="Reds", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(nc), labels=col_labels, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(nr), labels=row_labels, fontsize=8)
    ax.set_xlabel("applied to")
    ax.set_ylabel("built on")
    for i in range(nr):
        for j in range(nc):
            v = 100 * rates[i][j]
            ax.text(j, i, f"{v:.1f}%", ha="center", va="center", fontsize=8, color="white" if v > 60 else "black")
    fig.colorbar(im, ax=ax, label="fooling rate (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
