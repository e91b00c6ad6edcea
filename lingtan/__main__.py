"""`python -m lingtan` is the `lingtan` command."""

from lingtan.cli import app

app()
