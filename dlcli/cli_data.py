"""``dlcli data``: where dlcli looks for each real data set (and torchvision's ImageNet weights) and what it
finds there; ``--download`` fetches them ahead of time. Parse, call ``dlcli.data_status``, report.
``dlcli.cli`` calls :func:`register`. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dlcli.options import DataDirOpt, JsonOpt

EPILOG = """Examples:

* `dlcli data` (MNIST, Fashion-MNIST, CIFAR-10 and the ImageNet weights of alexnet, resnet18 and resnet50:
  found or not, where, and which recipes use them)
* `dlcli data --download` on a machine with internet (a cluster's login node) fetches what is missing; then
  `DLCLI_DATA=THAT_FOLDER dlcli train lenet` on the nodes without it
* `dlcli data cifar10 --download --data-dir /shared/datasets` (CIFAR-10's original python batches, 163 MB, even
  where image folders of it are there)
* `dlcli data --json | jq -r '.data_sets[] | select(.state != "found") | .name'`
"""


def data(
    names: Annotated[Optional[list[str]], typer.Argument(
        help="mnist | fashion-mnist | cifar10 | alexnet-imagenet | resnet18-imagenet | resnet50-imagenet "
             "[default: all].", show_default=False)] = None,
    download: Annotated[bool, typer.Option(
        "--download", help="Fetch those of the named (default: all) that are not found: data into the data root, "
                           "as a run would; weights into the torch hub cache. Offline, one line saying which "
                           "files to put where.")] = False,
    data_dir: DataDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show where each real data set is looked for (--data-dir, else $DLCLI_DATA, else ~/.cache/dlcli), and the
    ImageNet weights in the torch hub cache, and what is there; with --download, fetch what is not found first."""
    from dlcli import report
    from dlcli.data_status import check_names, fetch, inspect, needs_fetch
    from dlcli.errors import DlcliError

    wanted = check_names(list(names or []))
    fetched, failed = [], []
    result = inspect(wanted, data_dir)
    if download:
        for row in result["data_sets"]:
            if needs_fetch(row, named=bool(names)):
                report.err.print(f"fetching {row['name']} ...", markup=False, highlight=False)
                try:
                    fetch(row["name"], data_dir)
                    fetched.append(row["name"])
                except Exception as e:  # the others are still tried; the table then shows what is there
                    failed.append(str(e) if isinstance(e, DlcliError) else f"{row['name']}: {type(e).__name__}: {e}")
    if fetched or failed:  # inspected again only when something changed (inspecting hashes every file)
        result = inspect(wanted, data_dir)
    result["fetched"], result["failed"] = fetched, failed
    if json:
        report.print_json(result)
    else:
        rows = [[r["name"], r["state"], r["detail"], ", ".join(r["recipes"]) or "-"] for r in result["data_sets"]]
        report.out.print(report.table(f"data under {result['data_root']} (from {result['from']}); weights in the "
                                      "torch hub cache", ["data set", "state", "what is there", "used by"], rows))
        if any(r["state"] != "found" for r in result["data_sets"]) and not download:
            report.out.print("fetch what is missing with `dlcli data --download` (needs internet), or put the files "
                             "where the table says (data: point --data-dir or DLCLI_DATA at their folder; weights: "
                             "TORCH_HOME moves the torch hub cache)", markup=False, highlight=False)
    if failed:
        more = f" (and {len(failed) - 1} more: see --json)" if len(failed) > 1 else ""
        raise DlcliError(failed[0] + more)


def register(app: typer.Typer) -> None:
    """Add ``data`` to the dlcli Typer app."""
    app.command("data", epilog=EPILOG)(data)
