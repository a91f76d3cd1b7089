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


CLIP_NOTES = {
    "box": "box: every step solved inside [0, 1]; the images written are the iterates that fooled the model",
    "step": "step: every iterate clamped to [0, 1] (as torchattacks does)",
    "none": "none: the paper's unconstrained iteration; the images written are clamp(x + r, 0, 1)",
}


def _line(text: str) -> None:
    report.out.print(text, markup=False, highlight=False)


def _paper_rows(r: dict[str, Any], rows: dict[str, Any]) -> None:
    """The paper's own value for this model, or its rows for the same data set as anchors."""
    paper = r.get("paper")
    if paper:
        rows[f"paper's ρ_adv ({paper['row']})"] = paper["rho_adv"]
    else:
        for a in r.get("paper_anchors") or []:
            rows[f"paper's ρ_adv, another model ({a['row']})"] = a["rho_adv"]


def print_deepfool(r: dict[str, Any]) -> None:
    s = r["settings"]
    p = _norm_label(s["norm"])
    q = p[1:]
    pp = r.get("paper_protocol")
    rows: dict[str, Any] = {
        "checkpoint": r["checkpoint"],
        "device": f"{r['device']} ({r['device_name']})",
        "images": r["images"],
        "clean accuracy": _pct(r["clean_accuracy"]),
        "misclassified (not attacked, r = 0)": r["misclassified"],
        "attacked": r["attacked"],
        "fooling rate of the images written (valid, in [0, 1])": _pct(r["fooling_rate"]),
        f"ρ_adv of the images written (mean ‖r‖{q}/‖x‖{q}, clip {s['clip']})": r["rho_adv"],
    }
    if pp:
        rows["ρ_adv, paper protocol (unconstrained iteration, before clipping)"] = pp["rho_adv"]
        rows["fooling rate, paper protocol (x + r unclamped)"] = _pct(pp["fooling_rate"])
    _paper_rows(r, rows)
    pct = r["r_norm_percentiles"]
    if pct:
        rows[f"‖r‖{q} p5 / p50 / p95 / max"] = " / ".join(report.fmt(pct[k]) for k in ("p5", "p50", "p95", "max"))
    rows.update({
        "mean iterations": r["mean_iterations"],
        "boundary-projection rounds (--refine)": s.get("refine", 0),
        "mean gradient evaluations": f"{report.fmt(r['mean_grad_evals'])} ({s['grad']})",
        "images/s": r["images_per_s"],
        "ms per image": r["ms_per_image"],
    })
    if pp and not pp["same_run"]:
        rows["paper-protocol run (extra, not in images/s)"] = f"{report.fmt(pp['seconds'])} s, " \
                                                              f"{report.fmt(pp['mean_iterations'])} iterations"
    report.out.print(report.key_value_table(f"DeepFool {p} on {r['recipe']} ({r['split']} split)", rows))
    _line(f"clip {CLIP_NOTES[s['clip']]}")
    if s.get("refine"):
        _line(f"--refine {s['refine']}: each adversarial image then shrunk towards the closest point of the decision "
              "boundary (boundary projection inside [0, 1]; still valid, checked to fool)")
    if s["clip"] == "none" and r["clip_undid"]:
        _line(f"clamping to [0, 1] undid {r['clip_undid']} of the iteration's {r['iteration_fooled']} flips; "
              "--clip box (the default) gives valid adversarial images")
    if r["not_fooled"] and s["clip"] != "none":
        _line(f"{r['not_fooled']} images kept their label after {s['max_iter']} iterations")
    if "fgsm" in r:
        print_comparison(r)
    _print_files(r)


def print_deepfool_images(r: dict[str, Any]) -> None:
    s = r["settings"]
    p = _norm_label(s["norm"])
    report.out.print(report.table(
        f"DeepFool {p} (clip {s['clip']}) on {r['recipe']}: your images from {r['images_folder']}",
        ["file", "prediction", "adversarial", "fooled", "as 8-bit PNG", f"‖r‖{p[1:]}", "ρ", "iterations"],
        [[i["file"], i["clean_pred"], i["adv_pred"], "yes" if i["fooled"] else "no",
          "fools" if i["fooled_as_8bit_png"] else "does not fool", i["r_norm"], i["rho"], i["iterations"]]
         for i in r["per_image"]]))
    _line(f"fooled {r['fooled']} of {r['attacked']} images ({_pct(r['fooling_rate'])}); "
          f"{r['fooled_as_8bit_png']} still fool once saved as 8-bit PNG; ρ_adv {report.fmt(r['rho_adv'])}")
    if r["skipped_files"]:
        _line(f"skipped (not images): {', '.join(r['skipped_files'])}")
    _line(f"figures and adversarial PNGs: {r['files']['folder']}")
    _print_files(r)


def print_comparison(r: dict[str, Any]) -> None:
    """DeepFool vs fast gradient sign, as in the DeepFool paper's Tables 1 and 2."""
    f = r["fgsm"]
    p = _norm_label(r["settings"]["norm"])
    paper_df = (r.get("paper") or {}).get("rho_adv")
    paper_fg = (f.get("paper") or {}).get("rho_adv")
    df_pp = (r.get("paper_protocol") or {}).get("rho_adv")
    fg_pp = (f.get("paper_protocol") or {}).get("rho_adv")
    eps_pp = (f.get("paper_protocol") or {}).get("eps")
    fg_name = f"fast gradient sign (ε {report.fmt(f['eps'])})" if f["eps"] is not None else \
        "fast gradient sign (target not reached)"
    rows = [
        ["DeepFool", r["rho_adv"], df_pp, paper_df, _pct(r["fooling_rate"]), r["ms_per_image"]],
        [fg_name, f["rho_adv"], fg_pp, paper_fg, _pct(f["fooling_rate"]), f["ms_per_image"]],
    ]
    report.out.print(report.table(f"DeepFool vs fast gradient sign, ρ_adv in {p}",
                                  ["method", "ρ_adv (images written)", "ρ_adv (paper protocol)", "paper",
                                   "fooling rate", "ms per image"], rows,
                                  caption=f"fast gradient sign: smallest ε fooling ≥ {f['target_rate']:.0%} "
                                          "of the attacked images"
                                          + (f"; paper protocol ε {report.fmt(eps_pp)}" if eps_pp else "")))
    if r["rho_adv"] > 0 and math.isfinite(f["rho_adv"]):
        _line(f"fast gradient sign needs {f['rho_adv'] / r['rho_adv']:.1f}x DeepFool's perturbation")


def print_fgsm(r: dict[str, Any]) -> None:
    s = r["settings"]
    p = _norm_label(s["norm"])
    pp = r.get("paper_protocol")
    rows: dict[str, Any] = {
        "checkpoint": r["checkpoint"],
        "device": f"{r['device']} ({r['device_name']})",
        "images": r["images"],
        "clean accuracy": _pct(r["clean_accuracy"]),
        "misclassified (not attacked)": r["misclassified"],
        "attacked": r["attacked"],
        f"smallest ε fooling ≥ {r['target_rate']:.0%} (clip {s['clip']})":
            r["eps"] if r["eps"] is not None else "not reached for ε ≤ 1",
        "fooling rate of the images written (valid)": _pct(r["fooling_rate"]),
        f"ρ_adv ({p}) of the images written": r["rho_adv"],
    }
    if pp:
        rows["paper protocol (unclamped): ε, ρ_adv"] = f"{report.fmt(pp['eps'])}, {report.fmt(pp['rho_adv'])}"
    _paper_rows(r, rows)
    rows.update({
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
        "building images": f"{r['build_images']} ({r['build_split']} split), x + v "
                           + ("clamped to [0, 1]" if s["clip"] else "not clamped (--no-clip)"),
        "passes": f"{r['passes']} (v from pass {r['best_pass']}); target 1 − δ = {r['target_rate']:.0%} "
                  + ("reached" if r["reached_target"] else "not reached"),
        "building-set fooling rate per pass": hist,
        "DeepFool runs / updates of v": f"{r['deepfool_images']} / {r['updates']}",
        "time": f"{report.fmt(r['seconds'])} s",
        "‖v‖2 / ‖v‖∞": f"{report.fmt(r['v_norm_l2'])} / {report.fmt(r['v_norm_linf'])}",
        "mean ‖x‖2 of the evaluation images": r["mean_x_norm_l2"],
        f"held-out fooling rate, valid images clamp(x + v, 0, 1) ({r['eval_images']} {r['eval_split']} images)":
            _pct(r["fooling_rate"]),
        "random noise of the same norm": _pct(r["noise_fooling_rate"]),
    }
    if r.get("unclamped_fooling_rate") is not None:
        rows["held-out fooling rate of x + v unclamped (not valid images)"] = _pct(r["unclamped_fooling_rate"])
    report.out.print(report.key_value_table(f"Universal perturbation {p} on {r['recipe']}", rows))
    m = r.get("matrix")
    if m:
        report.out.print(report.table(
            "fooling rate across models (rows: v built on; columns: applied to; held-out valid images)",
            ["built on \\ applied to", *m["models"]],
            [*([label, *(_pct(v) for v in row)] for label, row in zip(m["models"], m["fooling"])),
             ["random noise, same norm", *(_pct(v) for v in m["noise"])]]))
    _print_files(r)


def _print_files(r: dict[str, Any]) -> None:
    for kind, path in (r.get("files") or {}).items():
        report.out.print(f"{kind}: {path}", markup=False, highlight=False)
