"""Options shared by several commands, as ``Annotated`` aliases (one definition, one help text)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dlcli.config import check_seed, recipe_names


def complete_recipe(incomplete: str) -> list[str]:
    return [n for n in recipe_names() if n.startswith(incomplete)]


def seed_callback(value: int | None) -> int | None:
    """Every ``--seed`` option's check (``callback=seed_callback``): the recipes' seed range, before any work."""
    check_seed(value)
    return value


RecipeArg = Annotated[str, typer.Argument(help="Recipe name (see `dlcli list`) or path of a YAML file.",
                                          autocompletion=complete_recipe, show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU).")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="Data root (else $DLCLI_DATA, else ~/.cache/dlcli).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else there.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed, 0 to 2**32 - 1.",
                                                callback=seed_callback)]
PrecisionOpt = Annotated[Optional[str], typer.Option(
    "--precision", help="auto | fp32 | bf16 | fp16 | tf32 (auto: bf16 where the hardware runs it natively, else fp32; "
                         "fp16/tf32 need CUDA).")]
