"""``dlcli eval`` of a classifier: its numbers must equal a direct computation from the checkpoint's weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dlcli.tasks.classify_eval import classification_metrics, confusion_matrix, worst_mistakes


# ------------------------------------------------------------------------------- predict under CUDA graphs


class _ReplayedGraph(torch.nn.Module):
    """What a model compiled with CUDA graphs returns: every call writes its logits into the same memory."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(12, 3)
        self.register_buffer("static_out", torch.zeros(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.static_out[:len(x)]
        out.copy_(self.linear(x.flatten(1)))
        return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_keeps_every_batch_when_the_model_replays_cuda_graphs(precision):
    """``compile: reduce-overhead`` replays a CUDA graph whose output memory the next replay overwrites:
    predict's logits must still be each batch's own (checked against one sample at a time, no graphs)."""
    from dlcli.classifier import predict
    from dlcli.runtime import Runtime

    torch.manual_seed(0)
    model, x = _ReplayedGraph(), torch.randint(0, 256, (10, 3, 2, 2), dtype=torch.uint8)
    rt = Runtime.create("cpu", precision, compile="reduce-overhead")  # graphs only on CUDA; the mode is what counts
    assert rt.cuda_graphs
    got = predict(model, x, rt, batch_size=4)
    with rt.autocast():
        one_by_one = torch.cat([model.linear(x[i:i + 1].float().div(255).flatten(1)).float() for i in range(10)])
    torch.testing.assert_close(got, one_by_one)


# ------------------------------------------------------------------------------- metrics, known answers


def test_confusion_matrix_rows_are_true_classes_columns_predictions():
    target = torch.tensor([0, 0, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(pred, target, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_metrics_of_hand_made_logits():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.5]])
    target = torch.tensor([0, 1, 2, 2])  # the third sample is wrong (predicted 1)
    m = classification_metrics(logits, target)
    assert m["metrics"]["accuracy"] == 0.75 and m["metrics"]["errors"] == 1 and m["metrics"]["samples"] == 4
    # cross-entropy by hand: -log softmax of the true class, averaged
    by_hand = [-(2 - math.log(math.e**2 + 2)), -(1 - math.log(math.e + 2)), -(0 - math.log(math.e**3 + 2)),
               -(0.5 - math.log(math.exp(0.5) + 2))]
    assert m["metrics"]["loss"] == pytest.approx(sum(by_hand) / 4, rel=1e-6)
    assert "top5_accuracy" not in m["metrics"]  # only 3 classes
    assert m["per_class_accuracy"].tolist() == [1.0, 1.0, 0.5]
    assert m["support"].tolist() == [1, 1, 2]


def test_top5_counts_a_hit_anywhere_in_the_five_largest_logits():
    logits = torch.arange(10.0).repeat(3, 1)  # class 9 is the top-1, classes 5..9 the top-5
    m = classification_metrics(logits, torch.tensor([9, 5, 4]))
    assert m["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert m["metrics"]["top5_accuracy"] == pytest.approx(2 / 3)


def test_worst_mistakes_are_wrong_and_sorted_by_confidence():
    logits = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 4.0], [3.0, 0.0]])
    target = torch.tensor([1, 1, 0, 0])  # samples 0 and 2 are wrong; sample 0 is the more confident one
    got = worst_mistakes(logits, target, count=5)
    assert [m["index"] for m in got] == [0, 2]
    assert got[0]["predicted"] == 0 and got[0]["true"] == 1
    assert got[0]["confidence"] == pytest.approx(torch.softmax(logits[0], 0)[0].item())
    assert worst_mistakes(logits, target, count=1)[0]["index"] == 0


# ------------------------------------------------------------------------- the real command, real MNIST


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    """A briefly trained LeNet-5 (2,048 images, 16 steps): imperfect, so that it makes mistakes to show."""
    from dlcli.cli import main

    run = tmp_path_factory.mktemp("eval") / "run"
    try:
        main(["train", "lenet", "--epochs", "1", "--set", "data.args.train_size=2048", "--set",
              "data.args.val_size=1000", "--device", "cpu", "--out", str(run), "--data-dir", str(data_dir),
              "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    return run


def _direct_logits(run: Path, split: str, data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits computed without dlcli's eval code: a plain lenet5, the saved weights, normalisation by hand."""
    from torchvision.datasets import MNIST

    from dlcli.models.lenet import lenet5

    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    net = lenet5(variant=ckpt["recipe"]["model"]["args"]["variant"])
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["model"].items() if k.startswith("net.")})
    net.eval()
    if split == "test":
        ds = MNIST(str(data), train=False)
        x, y = ds.data, ds.targets
    else:  # the validation images: the first val_size of the recipe's seeded permutation of the 60k
        ds = MNIST(str(data), train=True)
        args, seed = ckpt["recipe"]["data"]["args"], ckpt["recipe"]["seed"]
        idx = torch.randperm(len(ds.data), generator=torch.Generator().manual_seed(10_000 + seed))[: args["val_size"]]
        x, y = ds.data[idx], ds.targets[idx]
    mean, std = 0.1307, 0.3081  # MNIST's pixel mean and standard deviation (torchvision's MNIST example)
    assert ckpt["data_meta"]["mean"] == [mean] and ckpt["data_meta"]["std"] == [std]  # what the model was fed
    with torch.no_grad():
        logits = net((x.unsqueeze(1).float() / 255 - mean) / std)
    return logits, y


def test_eval_numbers_agree_with_a_direct_computation(cli, data_dir, run_dir):
    res = cli("eval", str(run_dir), "--json", "--data-dir", str(data_dir), "--device", "cpu")
    assert res.code == 0, res.err
    got = res.json()
    logits, y = _direct_logits(run_dir, "test", data_dir)
    pred = logits.argmax(1)
    m = got["metrics"]
    assert m["samples"] == 10_000
    assert m["errors"] == int((pred != y).sum()) > 0
    assert m["accuracy"] == pytest.approx(int((pred == y).sum()) / 10_000, abs=1e-12)
    assert m["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-4)
    top5 = sum(int(t in row) for t, row in zip(y.tolist(), logits.topk(5, 1).indices.tolist()))
    assert m["top5_accuracy"] == pytest.approx(top5 / 10_000, abs=1e-12)

    counts = [[0] * 10 for _ in range(10)]
    for t, p in zip(y.tolist(), pred.tolist()):
        counts[t][p] += 1
    assert got["confusion_matrix"] == counts
    names = got["class_names"]
    for c in range(10):
        assert got["per_class_accuracy"][names[c]] == pytest.approx(counts[c][c] / sum(counts[c]))

    tables = {t["title"]: t for t in got["tables"]}
    matrix = next(t for title, t in tables.items() if title.startswith("confusion matrix"))
    assert [row[1:] for row in matrix["rows"]] == counts  # the table shows the same counts

    mistakes = got["most_confident_mistakes"]
    probs = logits.softmax(1)
    assert mistakes and all(names.index(mm["true"]) == int(y[mm["index"]]) != int(pred[mm["index"]])
                            for mm in mistakes)
    confidences = [mm["confidence"] for mm in mistakes]
    assert confidences == sorted(confidences, reverse=True)
    wrong = (pred != y).nonzero().flatten()
    assert confidences[0] == pytest.approx(float(probs[wrong].max()), rel=1e-4)  # the most confident error

    (fig,) = got["figures"]
    assert Path(fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(fig).parent == run_dir / "eval-test"


def test_eval_on_the_validation_split(cli, data_dir, run_dir):
    res = cli("eval", str(run_dir), "--split", "val", "--json", "--data-dir", str(data_dir), "--device", "cpu")
    assert res.code == 0, res.err
    got = res.json()
    logits, y = _direct_logits(run_dir, "val", data_dir)
    assert got["metrics"]["samples"] == 1000
    assert got["metrics"]["accuracy"] == pytest.approx(int((logits.argmax(1) == y).sum()) / 1000, abs=1e-12)


def test_eval_report_shows_tables_and_the_figure(cli, data_dir, run_dir):
    res = cli("eval", str(run_dir), "--data-dir", str(data_dir), "--device", "cpu", "--out", str(run_dir / "report"))
    assert res.code == 0, res.err
    out = res.out
    assert "per-class accuracy" in out and "confusion matrix" in out and "top5_accuracy" in out
    assert f"figure: {run_dir / 'report' / 'misclassified.png'}" in out
    assert (run_dir / "report" / "misclassified.png").is_file()
