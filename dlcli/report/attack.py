"""Progress bars and result tables for ``dlcli attack deepfool``, ``fgsm`` and ``universal``."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dlcli import report


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yields ``update(done, total, rate=None)`` that drives a bar on stderr; a no-op when not ``enabled``.

    ``rate`` (optional) is shown as the fooling rate so far; the universal attack reports one per pass, so the
    bar restarts when ``done`` goes back to a smaller number.
    """
    if not enabled:
        yield lambda *args, **kwargs: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=report.err,
        transient=True,
    )
    task = bar.add_task(description, total=max(total, 1), info="")
    state = {"last": 0, "round": 1}

    def update(done: int, total_now: int, rate: float | None = None) -> None:
        if done < state["last"]:
            state["round"] += 1
        state["last"] = done
        desc = description if rate is None else f"{description} pass {state['round']}"
        info = "" if rate is None else f"fooled so far {rate:.1%}"
        bar.update(task, completed=done, total=max(total_now, 1), description=desc, info=info)

    with bar:
        yield update


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.1%}"


def _norm_label(norm: str) -> str:
    return "ℓ∞" if norm == "inf" else "ℓ2"


def print_deepfool(r: dict[str, Any]) -> None:
    s = r["settings"]
    p = _norm_label(s["norm"])
    paper = r.get("paper")
    rows: dict[str, Any] = {
        "checkpoint": r["checkpoint"],
        "device": f"{r['device']} ({r['device_name']})",
        "images": r["images"],
        "clean accuracy": _pct(r["clean_accuracy"]),
        "misclassified (not attacked, r = 0)": r["misclassified"],
        "attacked": r["attacked"],
        "fooling rate": _pct(r["fooling_rate"]),
        f"ρ_adv (mean ‖r‖{p[1:]}/‖x‖{p[1:]})": r["rho_adv"],
    }
    if paper:
        rows[f"paper's ρ_adv ({paper['row']})"] = paper["rho_adv"]
    pct = r["r_norm_percentiles"]
    if pct:
        rows[f"‖r‖{p[1:]} p5 / p50 / p95 / max"] = " / ".join(report.fmt(pct[k]) for k in ("p5", "p50", "p95", "max"))
    rows.update({
        "mean iterations": r["mean_iterations"],
        "mean gradient evaluations": r["mean_grad_evals"],
        "images/s": r["images_per_s"],
        "ms per image": r["ms_per_image"],
        "clip": s["clip"],
        "fooling rate after clipping to [0, 1]": _pct(r["fooling_rate_after_clip"]),
        "ρ_adv of the clipped perturbation": r["rho_adv_clipped"],
    })
    report.out.print(report.key_value_table(f"DeepFool {p} on {r['recipe']} ({r['split']} split)", rows))
    if s["clip"] == "final" and r["clip_undid"]:
        report.out.print(f"clipping to [0, 1] changed the outcome for {r['clip_undid']} of {r['fooled']} fooled images "
                         "(the paper's ρ is measured before clipping); --clip step clips every iterate instead, "
                         "so every adversarial image is valid", markup=False, highlight=False)
    elif s["clip"] == "final":
        report.out.print("clipping to [0, 1] changed no outcome", markup=False, highlight=False)
    if r["not_fooled_within_max_iter"]:
        report.out.print(f"{r['not_fooled_within_max_iter']} images kept their label after {s['max_iter']} iterations",
                         markup=False, highlight=False)
    if "fgsm" in r:
        print_comparison(r)
    _print_files(r)


def print_comparison(r: dict[str, Any]) -> None:
    """DeepFool vs fast gradient sign, as in the DeepFool paper's Tables 1 and 2."""
    f = r["fgsm"]
    p = _norm_label(r["settings"]["norm"])
    paper_df = (r.get("paper") or {}).get("rho_adv")
    paper_fg = (f.get("paper") or {}).get("rho_adv")
    rows = [
        ["DeepFool", r["rho_adv"], paper_df, _pct(r["fooling_rate"]), r["ms_per_image"]],
        [f"fast gradient sign (ε {report.fmt(f['eps'])})" if f["eps"] is not None else "fast gradient sign (target not reached)",
         f["rho_adv"], paper_fg, _pct(f["fooling_rate"]), f["ms_per_image"]],
    ]
    report.out.print(report.table(f"DeepFool vs fast gradient sign, ρ_adv in {p}",
                                  ["method", "ρ_adv", "paper", "fooling rate", "ms per image"], rows,
                                  caption=f"fast gradient sign: smallest ε fooling ≥ {f['target_rate']:.0%} "
                                          "of the attacked images"))
    if r["rho_adv"] > 0 and math.isfinite(f["rho_adv"]):
        report.out.print(f"fast gradient sign needs {f['rho_adv'] / r['rho_adv']:.1f}x DeepFool's perturbation",
                         markup=False, highlight=False)


def print_fgsm(r: dict[str, Any]) -> None:
    s = r["settings"]
    p = _norm_label(s["norm"])
    rows: dict[str, Any] = {
        "checkpoint": r["checkpoint"],
        "device": f"{r['device']} ({r['device_name']})",
        "images": r["images"],
        "clean accuracy": _pct(r["clean_accuracy"]),
        "misclassified (not attacked)": r["misclassified"],
        "attacked": r["attacked"],
        f"smallest ε fooling ≥ {r['target_rate']:.0%}": r["eps"] if r["eps"] is not None else "not reached for ε ≤ 1",
        "fooling rate at ε": _pct(r["fooling_rate"]),
        f"ρ_adv ({p}) at ε": r["rho_adv"],
    }
    if r.get("paper"):
        rows[f"paper's ρ_adv ({r['paper']['row']})"] = r["paper"]["rho_adv"]
    rows.update({
        "fooling rate after clipping to [0, 1]": _pct(r["fooling_rate_after_clip"]),
        "ρ_adv of the clipped perturbation": r["rho_adv_clipped"],
        "ms per image (one gradient)": r["ms_per_image"],
        "ε search (forward passes)": f"{r['search_evaluations']} in {report.fmt(r['search_seconds'])} s",
    })
    report.out.print(report.key_value_table(f"Fast gradient sign on {r['recipe']} ({r['split']} split)", rows))
    _print_files(r)


def print_universal(r: dict[str, Any]) -> None:
    s = r["settings"]
    p = _norm_label(s["norm"])
    hist = ", ".join(f"{h:.1%}" for h in r["build_fooling_history"])
    rows: dict[str, Any] = {
        "checkpoint": r["checkpoint"],
        "device": f"{r['device']} ({r['device_name']})",
        f"ξ ({p}, pixels in [0, 1])": s["xi"],
        "building images": f"{r['build_images']} ({r['build_split']} split)",
        "passes": f"{r['passes']} (v from pass {r['best_pass']}); target 1 − δ = {r['target_rate']:.0%} "
                  + ("reached" if r["reached_target"] else "not reached"),
        "building-set fooling rate per pass": hist,
        "DeepFool runs / updates of v": f"{r['deepfool_images']} / {r['updates']}",
        "time": f"{report.fmt(r['seconds'])} s",
        "‖v‖2 / ‖v‖∞": f"{report.fmt(r['v_norm_l2'])} / {report.fmt(r['v_norm_linf'])}",
        "mean ‖x‖2 of the evaluation images": r["mean_x_norm_l2"],
        f"held-out fooling rate ({r['eval_images']} {r['eval_split']} images)": _pct(r["fooling_rate"]),
        "random noise of the same norm": _pct(r["noise_fooling_rate"]),
    }
    report.out.print(report.key_value_table(f"Universal perturbation {p} on {r['recipe']}", rows))
    if len(r["transfer"]) > 1:
        report.out.print(report.table(
            "fooling rate of this perturbation on other models (held-out images)",
            ["model", "checkpoint", "universal v", "random noise"],
            [[t["model"], t["checkpoint"], _pct(t["fooling_rate"]), _pct(t["noise_fooling_rate"])] for t in r["transfer"]]))
    _print_files(r)


def _print_files(r: dict[str, Any]) -> None:
    for kind, path in (r.get("files") or {}).items():
        report.out.print(f"{kind}: {path}", markup=False, highlight=False)
