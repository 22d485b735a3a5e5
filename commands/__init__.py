"""The CLI's commands, one module per group; `cli.py` assembles them into the Typer app."""
