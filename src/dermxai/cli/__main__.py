"""``python -m dermxai.cli``."""

from dermxai.cli import app

app()
