#!/usr/bin/env bash
# Every GPU figure dlcli promises, in one script: the CUDA tests, `dlcli bench` rows (AlexNet, ResNet-50 in
# fp32 / bf16 + channels-last / torch.compile), LeNet time to 99% on MNIST, CIFAR-10 time to 94% for
# resnet18-cifar10, alexnet-cifar10 and resnet20-cifar10 trained with their recipes, dlcli's training
# throughput against a bare PyTorch loop, and DeepFool images/s when benchmarks/attack_gpu_bench.py exists.
#
#   benchmarks/gpu_suite.sh --part mnist --out "$OUT"        # <= ~5 min on one H100 (needs MNIST/raw)
#   benchmarks/gpu_suite.sh --part cifar --out "$OUT"        # <= ~5 min: resnet18 to 94%, alexnet (cifar10-jpg/)
#   benchmarks/gpu_suite.sh --part cifar2 --out "$OUT"       # <= ~5 min: resnet20's whole recipe, DeepFool on it
#   benchmarks/gpu_suite.sh --part all   --out DIR           # the three, one after the other
#   benchmarks/gpu_suite.sh --part precision --out DIR       # optional: alexnet/resnet18-cifar10 again in fp32
#   benchmarks/gpu_suite.sh --part lanes --out DIR           # <= ~9 min: full recipes side by side (see run_lanes)
#   benchmarks/gpu_suite.sh --part scaling --out DIR         # 2+ GPUs: resnet18-cifar10 on 1, 2, 4, ... GPUs (DDP)
#   benchmarks/gpu_suite.sh --dry --out /tmp/suite           # CPU, tiny sizes: checks the script itself (CI)
#
# Data: DLCLI_DATA (or --data DIR) must hold MNIST/raw for part mnist and CIFAR-10 for part cifar (the original
# cifar-10-batches-py/ or the image folders cifar10-jpg/; the dry run makes a tiny cifar10-jpg/). dlcli
# need not be installed: it runs as `$PYTHON -m dlcli` with PYTHONPATH at this repository (PYTHON defaults
# to python3). Every step has its own timeout, and a step that fails or times out is recorded and the suite
# goes on; --budget SECONDS (default 290 per part) skips the steps that would no longer fit, most important
# first. Results go to OUT/results.md (the table, rewritten after every step, so a suite that is killed still
# leaves what it measured), OUT/results.json (every figure) and OUT/suite.log (each step's output, clipped).
# In --dry mode the CIFAR steps run on a generated 200-image CIFAR-shaped folder, so CI needs only MNIST.
set -u -o pipefail

PART=all
DRY=0
OUT_DIR="${OUT:-gpu-suite-out}"
DATA="${DLCLI_DATA:-}"
BUDGET=290
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --part) PART="$2"; shift 2 ;;
    --dry) DRY=1; shift ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PART" in mnist|cifar|cifar2|all|precision|lanes|scaling) ;;
  *) echo "gpu_suite.sh: --part must be mnist, cifar, cifar2, all, precision, lanes or scaling" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dlcli-gpu-suite.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs"
STEPS="$OUT_DIR/steps.jsonl"  # one line per step (merged into results.json at the end)
: > "$STEPS"
: > "$OUT_DIR/suite.log"
[ -n "$DATA" ] && export DLCLI_DATA="$DATA"
export PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
  DEV=cpu
  BUDGET=100000
  export DLCLI_CACHE="$WORK/cache"  # the generated folder's decoded copy is thrown away with $WORK
else
  DEV=cuda
fi
SUITE_T0=$(date +%s)
PART_T0=$SUITE_T0

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with a timeout (cut to what is left of the budget), keeps its
# stdout for the summary, appends both streams (clipped) to suite.log and one JSON line to steps.jsonl.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - ($(date +%s) - PART_T0) ))
  if [ "$left" -lt 15 ]; then
    printf '{"name": "%s", "status": "skipped", "seconds": 0, "note": "budget of %ss used up"}\n' \
      "$name" "$BUDGET" >> "$STEPS"
    echo "[gpu_suite] $name: skipped (budget)" >&2
    summarize
    return 0
  fi
  [ "$DRY" = 1 ] && [ "$limit" -lt 240 ] && limit=240  # dry: slow CI machines, the plumbing is the point
  [ "$limit" -gt "$left" ] && limit=$left
  echo "[gpu_suite] $name (timeout ${limit}s): $*" >&2
  local t0 rc status
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.out" 2> "$WORK/logs/$name.err"
  rc=$?
  local secs
  secs=$("$PY" -c "import sys; print(round($(date +%s.%N) - $t0, 1))")
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  {
    echo "===== $name: $status (exit $rc, ${secs}s): $*"
    echo "----- stdout (last 150 lines)"; tail -n 150 "$WORK/logs/$name.out"
    echo "----- stderr (last 80 lines)"; tail -n 80 "$WORK/logs/$name.err"
  } >> "$OUT_DIR/suite.log"
  printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "stdout": "%s", "command": %s}\n' \
    "$name" "$status" "$rc" "$secs" "$WORK/logs/$name.out" \
    "$("$PY" -c 'import json, sys; print(json.dumps(" ".join(sys.argv[1:])))' "$@")" >> "$STEPS"
  echo "[gpu_suite] $name: $status in ${secs}s" >&2
  summarize
}

summarize() {  # lanes run in parallel: one summary at a time. `summarize final` also imports torch (versions, GPU)
  if command -v flock > /dev/null; then
    ( flock 9; summarize_now "${1:-}" ) 9> "$WORK/summary.lock"
  else
    summarize_now "${1:-}"
  fi
}

summarize_now() {
  "$PY" - "$STEPS" "$OUT_DIR" "$PART" "$DRY" "$DEV" "$(( $(date +%s) - SUITE_T0 ))" "${1:-}" <<'PYEOF'
"""Turn steps.jsonl and each step's stdout into results.md (a table) and results.json (every figure)."""
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys

steps_file, out_dir, part, dry, dev, elapsed, final = sys.argv[1:8]
steps = [json.loads(line) for line in open(steps_file, encoding="utf-8") if line.strip()]


def stdout_json(s):
    try:  # a step may write its JSON beside its stdout (--json-out STDOUT.json) instead of on it
        return json.load(open(s["stdout"] + ".json", encoding="utf-8"))
    except (OSError, KeyError, ValueError):
        pass
    try:
        text = open(s["stdout"], encoding="utf-8").read()
    except (OSError, KeyError):
        return None
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    try:
        return json.loads(text[min(starts):])
    except ValueError:
        return None


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def headline(s, data):
    """One short figure per step for the table."""
    name = s["name"]
    if data is None:
        if name.startswith("cuda_tests"):
            try:
                text = open(s["stdout"], encoding="utf-8").read().strip().splitlines()
            except OSError:
                return ""
            return next((l for l in reversed(text) if re.search(r"passed|failed|skipped|deselected|error", l)), "")
        return ""
    if isinstance(data, list) and data and "samples_per_s" in json.dumps(data[0]):
        parts = []
        for r in data:
            r = r.get("row", r) if isinstance(r, dict) else r
            sps = r.get("samples_per_s") or r.get("throughput")
            mfu = r.get("mfu")
            parts.append(f"{r.get('model')} {r.get('mode')} {r.get('precision')}{' CL' if r.get('channels_last') else ''}"
                         f"{' compile' if r.get('compile') else ''} b{r.get('batch_size')}: "
                         f"{sps:,.0f} img/s" + (f", MFU {mfu:.1%}" if isinstance(mfu, (int, float)) else ""))
        return "; ".join(parts)
    if isinstance(data, dict) and "time_to_target_s" in data:
        t = data["time_to_target_s"]
        met = all(e["met"] for e in data.get("expect") or []) if data.get("expect") else None
        return (f"{data['target']:.2%} test acc: " + (f"{t:.1f} s (epoch {data['epochs_to_target']}, training "
                f"{data['train_time_to_target_s']:.1f} s)" if t is not None else "not reached")
                + f"; {data['per_epoch_s']} s/epoch; final {data['final_test_accuracy']:.2%}"
                + (f", expectation {'met' if met else 'NOT met'}" if met is not None else "")
                + f" [{data['precision']}" + (f", compile {data['compile']}" if data.get("compile") else "") + "]")
    if isinstance(data, dict) and "ratio" in data and "dlcli_images_per_s" in data:
        return (f"dlcli {data['dlcli_images_per_s']:,.0f} vs bare {data['bare_images_per_s']:,.0f} img/s "
                f"= {data['ratio']:.3f}x [{data['precision']}, b{data['batch_size']}]")
    if isinstance(data, dict) and "runs" in data and "dlcli" in data.get("runs", {}):
        runs = data["runs"]["dlcli"]
        out = []
        for r in runs:
            hit = next((e for e in r["epochs"] if e["test_accuracy"] >= 0.99), None)
            out.append(f"{hit['time_s']:.2f} s (epoch {hit['epoch']})" if hit else "99% not reached")
        return "time to 99%: " + ", ".join(out) + f"; final {[round(r['final_test_accuracy'], 4) for r in runs]}"
    if isinstance(data, dict) and isinstance(data.get("rows"), list) and data["rows"] and "images_per_s" in data["rows"][0]:
        return f"DeepFool on {data.get('recipe')}: " + "; ".join(
            f"{r['method']}: {r['images_per_s']:,.0f} img/s" for r in data["rows"] if r.get("images_per_s"))
    if isinstance(data, dict) and "images_per_s" in data:
        return (f"{data.get('attack', 'attack')} on {data.get('recipe')}: {data['images_per_s']:,.0f} images/s "
                f"({data.get('images')} images, fooling rate {data.get('fooling_rate')}, rho_adv {data.get('rho_adv')})")
    if isinstance(data, dict) and "learning_steps_per_s" in data:
        f = lambda v: f"{v:,.0f}" if isinstance(v, (int, float)) else "-"
        return (f"{data['env']}: {f(data['acting_steps_per_s'])} env steps/s acting, "
                f"{f(data['learning_steps_per_s'])} learning; {data['env_steps']:,} steps, {data['episodes']} "
                f"episodes, last 10 mean {data['last10_mean_return']}, eval {data['eval_mean_return']}")
    if isinstance(data, dict) and isinstance(data.get("throughput"), dict) and "runs" in data["throughput"]:
        runs = data["throughput"]["runs"]
        med = {k: statistics.median(r["images_per_s"] for r in v) for k, v in runs.items() if v}
        base = med.get("baseline")
        return "; ".join(f"{k} {v:,.0f} img/s" + (f" ({v / base:.2f}x)" if base and k != "baseline" else "")
                         for k, v in med.items())
    if isinstance(data, dict) and data.get("scaling") and isinstance(data.get("table"), list):
        f = lambda v, fmt: format(v, fmt) if isinstance(v, (int, float)) else "-"
        return (f"{data['recipe']}, {data['scaling']} scaling on {data.get('device_name')}: " + "; ".join(
            f"{r['nproc']}x b{r['batch_per_process']}: {f(r['images_per_s'], ',.0f')} img/s, efficiency "
            f"{f(r['efficiency'], '.2f')}" for r in data["table"]))
    if isinstance(data, dict) and "tta_mean" in data:
        return (f"{data['script']} on the JPEG copy, {len(data['runs'])} runs: {data['tta_mean']:.2%} ± {data['tta_std']:.2%} "
                f"with its TTA, {data['plain_mean'] or float('nan'):.2%} without; published {data.get('published_mean', float('nan')):.2%} "
                f"on the original (handicap {data.get('handicap_points')} points); {data['timed_s_median']} s/run")
    if isinstance(data, dict) and isinstance(data.get("time_to_fld"), dict):
        t = data["time_to_fld"]
        return ("FLD per epoch " + ", ".join(f"{e['fld']:.2f}@{e['train_s']:.0f}s" for e in t.get("epochs", []))
                + "; reached " + json.dumps(t.get("reached")))
    found = {}
    def scan(d):
        if isinstance(d, dict):
            for k, v in d.items():
                if k in ("parzen_ll", "fld", "fld_floor", "classes_covered", "test_accuracy", "fooling_rate",
                         "rho_adv", "epoch", "best_epoch") and isinstance(v, (int, float)):
                    found.setdefault(k, round(v, 4))
                else:
                    scan(v)
    scan(data)
    if "parzen_ll" in found or "fld" in found:
        return json.dumps(found)
    if isinstance(data, dict) and "final" in data and "header" in data:
        return f"final {json.dumps({k: v for k, v in data['final'].items() if 'accuracy' in k})}"
    text = json.dumps(data)
    return text[:200]


rows, details = [], []
for s in steps:
    data = stdout_json(s) if s.get("status") != "skipped" else None
    fig = headline(s, data) if s.get("status") in ("ok", "timeout", "failed") else ""
    if s.get("status") == "timeout" and "cifar_" in s["name"] and "time_to_target_s" not in json.dumps(data):
        m = re.search(r"--progress (\S+)", s.get("command", ""))
        prog = m.group(1) if m else os.path.join(os.path.dirname(s["stdout"]), "..", "progress.jsonl")
        try:
            curve = [json.loads(l) for l in open(prog, encoding="utf-8")]
            mine = [c for c in curve if c["recipe"] in s.get("command", "")]
            if mine:
                last = mine[-1]
                fig = (f"stopped after epoch {last['epoch']}: test {last['test_accuracy']:.2%} at {last['time_s']:.1f} s"
                       f" ({last['train_time_s'] / last['epoch']:.2f} s/epoch)")
                data = {"partial_history": mine}
        except OSError:
            pass
    rows.append((s["name"], s["status"], s.get("seconds", 0), fig))
    details.append({**s, "data": data})

env = {"date": dt.datetime.now().isoformat(timespec="seconds"), "part": part, "dry": dry == "1", "device": dev,
       "gpu": gpu_name(), "torch": None, "cuda": None,
       "python": platform.python_version(), "host_cpus": os.cpu_count(), "elapsed_s": int(elapsed),
       "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
if final == "final":  # torch takes seconds to import: once, at the end (after the cheap parts, so a broken
    import torch  # torch still leaves the table above)

    env["torch"], env["cuda"] = torch.__version__, torch.version.cuda
    if dev == "cuda" and torch.cuda.is_available():
        env["gpu_torch_name"] = torch.cuda.get_device_name(0)
else:  # the summaries after each step: the version from the package metadata
    from importlib import metadata

    try:
        env["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        pass
lines = [f"# dlcli GPU suite: part {part}{' (DRY RUN on the CPU: figures are not results)' if dry == '1' else ''}",
         "", f"{env.get('gpu_torch_name') or env['gpu'] or 'no GPU'}; torch {env['torch']}" + (f" (CUDA {env['cuda']})" if env["cuda"] else "") + ", "
         f"Python {env['python']}, {env['host_cpus']} CPUs; {env['date']}; suite time {env['elapsed_s']} s.", "",
         "| step | status | seconds | figure |", "|---|---|---:|---|"]
lines += [f"| {n} | {st} | {sec} | {fig} |" for n, st, sec, fig in rows]
with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"environment": env, "steps": details}, f, indent=1, default=str)
PYEOF
}

# A CIFAR-shaped folder of 200 generated 32x32 JPEGs (10 classes x 16 train + 4 test) for --dry.
make_mini_cifar() {
  "$PY" - "$1" <<'PYEOF'
import random
import sys
from pathlib import Path

from PIL import Image  # (torchvision's dependency; no torch import: this is CI's dry run)

root = Path(sys.argv[1]) / "cifar10-jpg"
rng = random.Random(0)
for split, n in (("train", 16), ("test", 4)):
    for c in range(10):
        d = root / split / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):  # class-dependent brightness
            pixels = bytes(int(rng.random() * 64) + c * 19 for _ in range(32 * 32 * 3))
            Image.frombytes("RGB", (32, 32), pixels).save(d / f"{i:04d}.jpg", quality=75)
PYEOF
}

run_mnist() {
  PART_T0=$(date +%s)
  # -o addopts=: one process (the device may lack pytest-xdist, which pyproject.toml's -n 2 needs)
  step cuda_tests 150 "$PY" -m pytest -q -o addopts= -p no:cacheprovider -m cuda tests/
  if [ "$DRY" = 1 ]; then
    # The same command lines on LeNet-5 (AlexNet and ResNet-50 take minutes on a small CPU), no --compile
    # (compiling takes minutes on a CPU).
    local tiny=(--device cpu --batch-size 2 --warmup 1 --steps 1 --json)
    step bench_alexnet 60 "$PY" -m dlcli bench lenet5 "${tiny[@]}"
    step bench_resnet50_bf16_cl 60 "$PY" -m dlcli bench lenet5 --precision bf16 --channels-last "${tiny[@]}"
    step lenet_tt99 90 "$PY" benchmarks/lenet_vs_pytorch_examples.py --dlcli-only --device cpu --json \
      --set epochs=1 --set data.args.train_size=1280 --set data.args.val_size=100
  else
    step bench_alexnet 60 "$PY" -m dlcli bench alexnet --device cuda --json
    step bench_alexnet_bf16_cl 60 "$PY" -m dlcli bench alexnet --device cuda --precision bf16 --channels-last --json
    step bench_resnet50_bf16_cl 75 "$PY" -m dlcli bench resnet50 --device cuda --precision bf16 --channels-last \
      --batch-size 256 --json
    step bench_resnet50_fp32_infer 60 "$PY" -m dlcli bench resnet50 --device cuda --mode infer --precision fp32 \
      --batch-size 256 --json
    step lenet_tt99 75 "$PY" benchmarks/lenet_vs_pytorch_examples.py --dlcli-only --device cuda --json
    step lenet_tt99_b512 60 "$PY" benchmarks/lenet_vs_pytorch_examples.py --dlcli-only --device cuda --json \
      --set batch_size=512 --set optim.lr=0.4  # fewer, larger steps: what a GPU wants
    run_attack lenet-modern mnist
    step bench_resnet50_bf16_cl_compile 150 "$PY" -m dlcli bench resnet50 --device cuda --mode train \
      --precision bf16 --channels-last --compile --batch-size 256 --json
    return
  fi
  run_attack lenet-modern mnist
}

# DeepFool images/s on a run trained here, when the attacks' GPU benchmark exists (it is someone else's file).
run_attack() {  # RUNS_FROM=DIR: attack DIR/RECIPE (a run brought along) instead of training one here
  local recipe="$1" kind="$2" run="$WORK/$1-run"
  # (not for CIFAR in a dry run: a real run's recipe holds out 5,000 images, the dry run's folder has 200)
  [ -n "${RUNS_FROM:-}" ] && [ -f "$RUNS_FROM/$recipe/best.pt" ] && { [ "$DRY" != 1 ] || [ "$kind" != cifar ]; } \
    && run="$RUNS_FROM/$recipe"
  if [ ! -f "$run/best.pt" ]; then
    local extra=()
    [ "$DRY" = 1 ] && extra=(--epochs 1 --set data.args.train_size=256)
    [ "$DRY" = 1 ] && [ "$kind" = cifar ] && extra=(--epochs 1 --data-dir "$WORK/data" --set data.args.train_size=32
                                                   --set data.args.val_size=10 --set data.args.test_size=10)
    step "train_$kind" 60 "$PY" -m dlcli train "$recipe" --device "$DEV" --out "$run" --json "${extra[@]}"
  fi
  local n=(--n 2000) data=()
  [ "$DRY" = 1 ] && n=(--n 8)
  [ "$DRY" = 1 ] && [ "$kind" = cifar ] && data=(--data-dir "$WORK/data")
  if [ -f benchmarks/attack_gpu_bench.py ]; then  # the attacks' own GPU benchmark: box/paper x loop/batched
    # batched gradients only (3.1x the per-candidate loop on an H200, first session); torchattacks on 40 images
    # (4 images/s on an H200): the step fits its 90 s (3 repeats of 6 configurations + 200 images did not fit 60 s)
    local bench=(--n 10000 --repeats 2 --grads batched --ta-n 40)
    [ "$kind" = cifar ] && bench=(--n 2000 --repeats 2 --grads batched --ta-n 20)
    [ "$DRY" = 1 ] && bench=(--n 8 --repeats 1 --ta-n 0)
    step "deepfool_$kind" 90 "$PY" benchmarks/attack_gpu_bench.py "$run" --device "$DEV" "${bench[@]}" "${data[@]}" \
      --json-out "$WORK/logs/deepfool_$kind.out.json"
  else  # the attack command itself reports images/s (model, data on the device, batched DeepFool)
    step "deepfool_$kind" 75 "$PY" -m dlcli attack deepfool "$run" --device "$DEV" --json "${n[@]}" "${data[@]}"
  fi
}

run_cifar() {  # CIFAR_SET=1: part cifar; 2: part cifar2
  PART_T0=$(date +%s)
  local data_args=() sets=() thr=(--steps 50 --warmup 10 --repeats 3)
  if [ "$DRY" = 1 ]; then
    make_mini_cifar "$WORK/data"
    data_args=(--data-dir "$WORK/data")
    sets=(--set epochs=1 --set batch_size=16 --set data.args.train_size=32 --set data.args.val_size=10
          --set data.args.test_size=10)
    thr=(--steps 1 --warmup 1 --repeats 1 --set batch_size=8 --set data.args.val_size=10
         --set data.args.test_size=10)
  fi
  local tta=("$PY" benchmarks/cifar_time_to_accuracy.py --device "$DEV" --json --progress "$WORK/progress.jsonl"
             "${data_args[@]}" "${sets[@]}")
  if [ "$CIFAR_SET" = 1 ]; then  # part cifar: the two recipes that fit one call, then dlcli vs a bare loop
    step cifar_resnet18_tta94 120 "${tta[@]}" --recipe resnet18-cifar10 --out "$WORK/resnet18-cifar10-run"
    step cifar_alexnet_verify 140 "${tta[@]}" --recipe alexnet-cifar10 --out "$WORK/alexnet-cifar10-run"
    local r
    for r in resnet18 resnet20; do
      step "throughput_$r" 40 "$PY" benchmarks/cifar_throughput.py --recipe "$r-cifar10" --device "$DEV" --json \
        "${data_args[@]}" "${thr[@]}"
    done
  else  # part cifar2: ResNet-20's whole recipe (about 3 minutes on an H200), DeepFool on it, AlexNet's throughput
    step cifar_resnet20_verify 210 "${tta[@]}" --recipe resnet20-cifar10 --out "$WORK/resnet20-cifar10-run"
    run_attack resnet20-cifar10 cifar
    step throughput_alexnet 40 "$PY" benchmarks/cifar_throughput.py --recipe alexnet-cifar10 --device "$DEV" --json \
      "${data_args[@]}" "${thr[@]}"
  fi
}

# Optional, not in "all": the CIFAR recipes again in fp32 (same seed, same epochs) beside the bf16 runs of
# part cifar, to show that bf16 autocast reaches the same accuracy. Needs cifar10-jpg/.
run_precision() {
  PART_T0=$(date +%s)
  local data_args=() sets=()
  if [ "$DRY" = 1 ]; then
    make_mini_cifar "$WORK/data"
    data_args=(--data-dir "$WORK/data")
    sets=(--set epochs=1 --set batch_size=16 --set data.args.train_size=32 --set data.args.val_size=10
          --set data.args.test_size=10)
  fi
  local tta=("$PY" benchmarks/cifar_time_to_accuracy.py --device "$DEV" --json --progress "$WORK/progress.jsonl"
             "${data_args[@]}" "${sets[@]}" --set precision=fp32)
  step cifar_alexnet_fp32 120 "${tta[@]}" --recipe alexnet-cifar10
  step cifar_resnet18_fp32_tta94 240 "${tta[@]}" --recipe resnet18-cifar10
}

# Part scaling (a machine with 2 or more GPUs): resnet18-cifar10 for SCALING_EPOCHS (3) epochs on 1, 2, 4, ...
# and all of its GPUs, torchrun + DDP over NCCL, weak scaling (each GPU keeps the recipe's batch of 512):
# steady epoch time, training images/s and scaling efficiency = images/s(N) / (N x images/s(1)), with the
# accuracy curves beside (benchmarks/cifar_ddp_curve.py). With one GPU it records why it skipped.
run_scaling() {
  PART_T0=$(date +%s)
  local gpus counts="" n=2 sets=(--set "epochs=${SCALING_EPOCHS:-3}") data_args=() recipe="${SCALING_RECIPE:-resnet18-cifar10}"
  if [ "$DRY" = 1 ]; then  # the plumbing on the CPU: 2 gloo processes, a generated folder, 2 tiny epochs
    gpus=2
    recipe=resnet20-cifar10
    make_mini_cifar "$WORK/data"
    data_args=(--data-dir "$WORK/data")
    sets=(--set epochs=2 --set batch_size=8 --set data.args.train_size=64 --set data.args.val_size=16
          --set data.args.test_size=16)
  else
    gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  fi
  if [ "${gpus:-0}" -lt 2 ]; then
    printf '{"name": "ddp_scaling", "status": "skipped", "seconds": 0, "note": "%s GPU(s): scaling needs 2 or more"}\n' \
      "${gpus:-0}" >> "$STEPS"
    echo "[gpu_suite] ddp_scaling: skipped (${gpus:-0} GPU)" >&2
    summarize
    return 0
  fi
  while [ "$n" -lt "$gpus" ]; do counts="$counts$n,"; n=$(( n * 2 )); done
  counts="$counts$gpus"
  step ddp_scaling 900 "$PY" benchmarks/cifar_ddp_curve.py --device "$DEV" --nproc "$counts" --scaling weak \
    --recipe "$recipe" "${data_args[@]}" "${sets[@]}" --json
}

# Part lanes: full-budget runs side by side, as concurrent processes on one GPU; their *accuracies* are what
# they measure, their times are not solo figures. Measured on an H200 (2026-11-26): with all six lanes, each
# CIFAR lane ran 2.6x slower than alone (resnet20: 9 s/epoch against 3.5), so the GPU did about 2.3x the work
# of one process, but no 60-epoch recipe finished in a 280 s lane. Choose fewer lanes with LANES (a space-
# separated subset of: cifar_a cifar_a32 cifar_b cifar_c cifar_d rl gan airbench; default all but cifar_a32 and
# airbench) and a longer LANE_BUDGET. Solo, before the lanes:
# resnet18-cifar10's time to 94% (its whole 60-epoch recipe, bf16). Solo, after them: DCGAN against
# pytorch/examples (when EXAMPLES_DCGAN names its main.py) and dlcli vs a bare loop for resnet18-cifar10.
#   lane cifar_a:  alexnet-cifar10's whole recipe (bf16), then again in fp32 (same seed, same epochs)
#   lane cifar_a32: that fp32 twin in a lane of its own (then cifar_a runs only the bf16 recipe)
#   lane cifar_b:  resnet20-cifar10's whole recipe (bf16), then DeepFool on it
#   lane cifar_c:  resnet18-cifar10 in fp32 (the bf16 twin is the solo run)
#   lane cifar_d:  resnet20-cifar10 in fp32 (its per-epoch curve beside the bf16 one, as far as it gets)
#   lane rl:       dqn-pong for a fixed budget of DQN_STEPS (120,000) environment steps: steps/s and the score
#   lane gan:      gan-mnist for GAN_SECONDS (Ctrl-C then), then `dlcli eval` (Parzen, Fréchet LeNet distance
#                  with the LeNet of FEATURES, class coverage)
#   lane airbench: the JPEG copy's handicap: airbench (Jordan 2024; 94.01% / 96.03% on the original CIFAR-10)
#                  trained on the images dlcli trains on, AIRBENCH_RUNS (5) runs of AIRBENCH_DIR/airbench94.py,
#                  then 2 of airbench96.py when it is there (benchmarks/airbench_on_jpeg.py; CUDA only)
# Each lane has its own budget (LANE_BUDGET seconds, default 300), every step of a lane up to all of it; the
# solo steps after the lanes have TAIL_BUDGET (default a third of LANE_BUDGET).
# SOLO=0 skips the solo resnet18 run; DQN_LEARNING_STARTS moves the rl lane's switch from acting to learning
# (default: the recipe's 80,000); TAIL (default "dcgan throughput") picks the solo steps after the lanes from:
# dcgan, throughput, deepfool (DeepFool images/s on lenet-modern: box with and without refinement, the paper's
# iteration, torchattacks; RUNS_FROM=DIR takes DIR/lenet-modern instead of training it), deepfool_cifar (the
# same on resnet20-cifar10: DIR/resnet20-cifar10, else the cifar_b lane's run, else one trained here), resnet50_compile (`dlcli bench resnet50` bf16, channels-last, --compile),
# dcgan_fld (dcgan-mnist's whole recipe, FLD after every epoch: the wall time to FLD <= 10, 5, 2, 1 and the
# final sample quality; the LeNet of FEATURES, else one trained first), cifar_graphs (the whole recipes of
# GRAPHS_RECIPES, default "resnet56-cifar10 resnet20-cifar10", compiled with CUDA graphs: compile=reduce-overhead;
# a ResNet-20 step of 128 images took about 10 ms on the H200, for 31 GFLOP: 0.2 ms at a fifth of its bf16
# peak; the rest is kernel launches and Python, which a graph replays as one launch), graphs_bench (`dlcli
# bench` training steps of resnet20 and resnet56, bf16, channels-last, eager and --compile-mode reduce-overhead).
# The runs' small files come back in
# OUT/runs.tar.gz (checkpoints under 8 MB, summaries, metric logs) for attacks and evaluation elsewhere,
# and the long GAN run's samples in OUT/gan-mnist-samples.png.
run_lanes() {
  local data_args=() sets=() lane_budget="${LANE_BUDGET:-300}" dqn_steps="${DQN_STEPS:-120000}"
  local gan_seconds="${GAN_SECONDS:-200}" gan_sets=() dqn_args=() thr=(--steps 50 --warmup 10 --repeats 3)
  local dcgan=(--steps 200 --warmup 20 --repeats 1)
  if [ "$DRY" = 1 ]; then
    make_mini_cifar "$WORK/data"
    data_args=(--data-dir "$WORK/data")
    sets=(--set epochs=1 --set batch_size=16 --set data.args.train_size=32 --set data.args.val_size=10
          --set data.args.test_size=10)
    dqn_args=(--learning-starts 200 --test-episodes 1 --val-episodes 1)
    dqn_steps=400
    gan_sets=(--epochs 1 --set data.args.train_size=200 --set task_args.eval_samples=100)
    gan_seconds=200
    thr=(--steps 1 --warmup 1 --repeats 1 --set batch_size=8 --set data.args.val_size=10 --set data.args.test_size=10)
    dcgan=(--steps 2 --warmup 1 --repeats 1 --batch-size 8)
  fi
  tta() {  # tta LANE ARGS...: the time-to-accuracy script with this lane's progress file
    local lane="$1"; shift
    echo "$PY" benchmarks/cifar_time_to_accuracy.py --device "$DEV" --json --progress "$WORK/progress-$lane.jsonl" \
      "${data_args[@]}" "${sets[@]}" "$@"
  }
  local solo_budget=$(( lane_budget / 2 )) tail_budget="${TAIL_BUDGET:-$(( lane_budget / 3 ))}"
  [ "$DRY" = 1 ] && lane_budget=$BUDGET solo_budget=$BUDGET tail_budget=$BUDGET  # dry: no budgets
  PART_T0=$(date +%s)
  BUDGET=$solo_budget
  # shellcheck disable=SC2046
  [ "${SOLO:-1}" = 1 ] && step cifar_resnet18_tta94 "$BUDGET" \
    $(tta solo --recipe resnet18-cifar10 --out "$WORK/resnet18-cifar10-run")
  [ "$DRY" != 1 ] && [ -n "${DQN_LEARNING_STARTS:-}" ] && dqn_args+=(--learning-starts "$DQN_LEARNING_STARTS")

  export OMP_NUM_THREADS=2  # several processes on 16 cores; the GPU does the arithmetic
  local pids=() lanes=" ${LANES:-cifar_a cifar_b cifar_c cifar_d rl gan} "
  want() { [[ "$lanes" == *" $1 "* ]]; }
  want cifar_a && (
    PART_T0=$(date +%s); BUDGET=$lane_budget
    step lane_cifar_a_alexnet_verify "$lane_budget" $(tta a --recipe alexnet-cifar10 --out "$WORK/alexnet-cifar10-run")
    want cifar_a32 || step lane_cifar_a_alexnet_fp32 "$lane_budget" \
      $(tta a32 --recipe alexnet-cifar10 --set precision=fp32)
  ) & pids+=($!)
  want cifar_a32 && (  # the fp32 twin in a lane of its own, beside the bf16 run rather than after it
    PART_T0=$(date +%s); BUDGET=$lane_budget
    step lane_cifar_a_alexnet_fp32 "$lane_budget" $(tta a32 --recipe alexnet-cifar10 --set precision=fp32)
  ) & pids+=($!)
  want cifar_b && (
    PART_T0=$(date +%s); BUDGET=$lane_budget
    step lane_cifar_b_resnet20_verify "$lane_budget" $(tta b --recipe resnet20-cifar10 --out "$WORK/resnet20-cifar10-run")
    run_attack resnet20-cifar10 cifar
  ) & pids+=($!)
  want cifar_c && (
    PART_T0=$(date +%s); BUDGET=$lane_budget
    step lane_cifar_c_resnet18_fp32 "$lane_budget" $(tta c --recipe resnet18-cifar10 --set precision=fp32)
  ) & pids+=($!)
  want cifar_d && (
    PART_T0=$(date +%s); BUDGET=$lane_budget
    step lane_cifar_d_resnet20_fp32 "$lane_budget" $(tta d --recipe resnet20-cifar10 --set precision=fp32)
  ) & pids+=($!)
  want rl && (
    PART_T0=$(date +%s); BUDGET=$lane_budget
    step lane_rl_dqn_pong "$lane_budget" "$PY" benchmarks/dqn_atari_speed.py --device "$DEV" --steps "$dqn_steps" \
      "${dqn_args[@]}" --json
  ) & pids+=($!)
  want airbench && [ "$DRY" != 1 ] && (
    PART_T0=$(date +%s); BUDGET=$lane_budget
    local ab="${AIRBENCH_DIR:-}" script runs
    if [ -f "$ab/airbench94.py" ]; then
      for script_runs in "airbench94:${AIRBENCH_RUNS:-5}" airbench96:2; do  # script:runs; airbench96 when present
        script="${script_runs%%:*}" runs="${script_runs##*:}"
        [ -f "$ab/$script.py" ] && step "lane_$script" "$lane_budget" "$PY" benchmarks/airbench_on_jpeg.py \
          --airbench "$ab/$script.py" --data-dir "${DLCLI_DATA:-.}" --runs "$runs" --json-out "$WORK/logs/lane_$script.out.json"
      done
    else
      echo "[gpu_suite] lane airbench: AIRBENCH_DIR/airbench94.py not found, skipped" >&2
    fi
  ) & pids+=($!)
  want gan && (
    PART_T0=$(date +%s); BUDGET=$lane_budget
    local run="$WORK/gan-mnist-run" feats=()
    [ -n "${FEATURES:-}" ] && feats=(--features "$FEATURES")
    # Ctrl-C (SIGINT) after GAN_SECONDS: the trainer stops cleanly and keeps the last finished epoch (exit 130)
    step lane_gan_mnist_train $(( gan_seconds + 30 )) bash -c 'timeout --preserve-status -s INT "$1" "${@:2}"; rc=$?; [ $rc = 130 ] && rc=0; exit $rc' \
      _ "$gan_seconds" "$PY" -m dlcli train gan-mnist --device "$DEV" --epochs 1000 --out "$run" "${gan_sets[@]}"
    step lane_gan_mnist_eval 90 "$PY" -m dlcli eval "$run" --device "$DEV" --json "${feats[@]}"
    step lane_gan_mnist_sample 30 "$PY" -m dlcli sample "$run" --n 64 --seed 0 --out "$OUT_DIR/gan-mnist-samples.png"
  ) & pids+=($!)
  [ "${#pids[@]}" -gt 0 ] && wait "${pids[@]}"

  PART_T0=$(date +%s); BUDGET=$tail_budget
  local tail=" ${TAIL:-dcgan throughput} "
  if [[ "$tail" == *" dcgan "* ]] && [ -n "${EXAMPLES_DCGAN:-}" ] && [ -f "${EXAMPLES_DCGAN}" ]; then
    step dcgan_vs_examples 75 "$PY" benchmarks/gan_dcgan_vs_examples.py --examples-main "$EXAMPLES_DCGAN" \
      --device "$DEV" --data-dir "${DLCLI_DATA:-.}" "${dcgan[@]}" --json-out "$WORK/logs/dcgan_vs_examples.out.json"
  fi
  [[ "$tail" == *" throughput "* ]] && step throughput_resnet18_solo 40 "$PY" benchmarks/cifar_throughput.py \
    --recipe resnet18-cifar10 --device "$DEV" --json "${data_args[@]}" "${thr[@]}"
  [[ "$tail" == *" deepfool "* ]] && run_attack lenet-modern mnist
  [[ "$tail" == *" deepfool_cifar "* ]] && run_attack resnet20-cifar10 cifar
  if [[ "$tail" == *" dcgan_fld "* ]]; then
    local fld_feats=() fld_sets=(--fld-epochs 5)
    [ -n "${FEATURES:-}" ] && fld_feats=(--features "$FEATURES")
    [ "$DRY" = 1 ] && fld_sets=(--fld-epochs 1 --set data.args.train_size=128 --set task_args.eval_samples=100)
    step dcgan_time_to_fld 150 "$PY" benchmarks/gan_dcgan_vs_examples.py --skip-throughput "${fld_sets[@]}" \
      --fld-targets 10 5 2 1 "${fld_feats[@]}" --device "$DEV" --data-dir "${DLCLI_DATA:-.}" \
      --json-out "$WORK/logs/dcgan_time_to_fld.out.json"
    "$PY" - "$WORK/logs/dcgan_time_to_fld.out.json" "$OUT_DIR/dcgan-mnist-samples.png" <<'PYEOF' || true
import glob, json, shutil, sys  # the last sample grid of that run, to look at
run = json.load(open(sys.argv[1]))["time_to_fld"]["run_dir"]
grids = sorted(glob.glob(run + "/samples/*.png"))
if grids:
    shutil.copy(grids[-1], sys.argv[2])
PYEOF
  fi
  [[ "$tail" == *" resnet50_compile "* ]] && [ "$DRY" != 1 ] && step bench_resnet50_bf16_cl_compile 150 "$PY" -m dlcli \
    bench resnet50 --device cuda --mode train --precision bf16 --channels-last --compile --batch-size 256 --json
  if [[ "$tail" == *" graphs_bench "* ]] && [ "$DRY" != 1 ]; then  # eager against CUDA graphs, training steps
    local m
    for m in resnet20 resnet56; do
      local g=("$PY" -m dlcli bench "$m" --device cuda --mode train --precision bf16 --channels-last --warmup 30
               --steps 200 --json)
      step "bench_${m}_eager" 60 "${g[@]}"
      step "bench_${m}_graphs" 120 "${g[@]}" --compile-mode reduce-overhead
    done
  fi
  if [[ "$tail" == *" cifar_graphs "* ]] && [ "$DRY" != 1 ]; then  # inductor takes minutes on a CI CPU
    local r
    for r in ${GRAPHS_RECIPES:-resnet56-cifar10 resnet20-cifar10}; do  # each timed to its own expectation
      # shellcheck disable=SC2046
      step "cifar_graphs_${r%-cifar10}" 480 $(tta "graphs-$r" --recipe "$r" --set compile=reduce-overhead)
    done
  fi
  # The runs' small files, for evaluation and attacks on another machine
  (cd "$WORK" && find . -maxdepth 2 \( -name summary.json -o -name metrics.jsonl -o -name config.yaml \
     -o \( -name best.pt -size -8M \) \) -path './*-run/*' -print0 | tar czf "$OUT_DIR/runs.tar.gz" --null -T -)
}

case "$PART" in
  lanes) run_lanes ;;
  mnist) run_mnist ;;
  cifar) CIFAR_SET=1 run_cifar ;;
  cifar2) CIFAR_SET=2 run_cifar ;;
  all) run_mnist; CIFAR_SET=1 run_cifar; CIFAR_SET=2 run_cifar ;;
  precision) run_precision ;;
  scaling) run_scaling ;;
esac
summarize final
echo
cat "$OUT_DIR/results.md"
# Exit 0 when every step that ran finished (skips are reported, not failures).
! grep -q '"status": "\(failed\|timeout\)"' "$STEPS"
