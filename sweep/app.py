"""CLI room, the app: the `quantsweep` command and what its subcommands share. The commands themselves live in
sweep/cli.py (sweeps, workers and clusters) and sweep/results_cli.py (results); sweep.cli imports both."""
from __future__ import annotations

import typer
from rich.console import Console

import workers.metrics  # noqa: F401  (registers the metrics' columns: every table the CLI reads or writes has them)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Which quantization of which speech model is best on which hardware: sweeps, results, clusters.")
console = Console(stderr=True)  # progress and messages; stdout carries the tables
DEFAULT_RESULTS = "runs"
