"""The shared parts of the command line: the typer apps, the consoles, shared options, one error policy."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Annotated

import typer
from rich.console import Console

from dermxai import __version__
from dermxai.data.errors import DatasetError

app = typer.Typer(help="Honest skin-lesion classification on HAM10000.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: split, audit, cache, duplicates, download.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(soft_wrap=True)  # messages keep paths whole; tables still fit the terminal
errors = Console(stderr=True, soft_wrap=True)

DEFAULT_HASH_DISTANCE = 0  # = dermxai.data.splits.DEFAULT_HASH_DISTANCE (a test checks), not imported: pandas is slow


def clear_errors(command: Callable) -> Callable:
    """The error policy of every command: expected failures (bad data or arguments, missing files or weights,
    failed downloads: ``DatasetError``, ``ValueError``, ``OSError``) become one red line and exit code 2.

    ``train`` adds one case: an interrupted run (non-finite loss, disk full) exits 1 and names the checkpoint
    to resume from.
    """

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (DatasetError, ValueError, OSError) as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None

    return run


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    """dermxai: classify dermoscopic images into the seven HAM10000 diagnoses, honestly evaluated."""
    if version:
        console.print(f"dermxai {__version__}")
        raise typer.Exit()


def _command_line(ctx: typer.Context) -> str:
    """The command as typed, rebuilt from the options that differ from their defaults (for provenance)."""
    words = ["dermxai", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value == param.default or value is None:
            continue
        flag = param.opts[0]
        if isinstance(value, bool):
            words.append(flag if value else (param.secondary_opts or [flag])[0])
        elif isinstance(value, (list, tuple)):
            words += [str(v) for v in value]
        else:
            words += [flag, str(value)]
    return " ".join(words)
