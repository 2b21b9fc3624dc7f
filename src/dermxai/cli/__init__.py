"""The ``dermxai`` command line: one typer app (``base``), its commands grouped by job in the modules here.

The front ends' and explanations' commands live beside their code (``app/commands.py``,
``explain/commands.py``) and are registered here, all under one error policy (``base.clear_errors``).
"""

from __future__ import annotations

from dermxai.app import commands as front_ends
from dermxai.cli.base import app, clear_errors
from dermxai.explain import commands as explain_commands

# Each module registers its commands on import; this order is the order of `dermxai --help`.
# isort: split
from dermxai.cli import training  # noqa: E402, F401

# isort: split
from dermxai.cli import evaluation  # noqa: E402, F401

# isort: split
from dermxai.cli import data  # noqa: E402, F401

app.command("predict")(clear_errors(front_ends.predict_command))
app.command("abstention")(clear_errors(front_ends.abstention_command))
app.command("app")(clear_errors(front_ends.app_command))
app.command("serve")(clear_errors(front_ends.serve_command))
app.command("explain")(clear_errors(explain_commands.explain_command))
app.command("explain-compare", cls=explain_commands.ManyValues)(clear_errors(explain_commands.explain_compare_command))
app.command("explain-score")(clear_errors(explain_commands.explain_score_command))

__all__ = ["app"]
