"""deepslim's command line: parse -> config -> library call -> print.

Heavy libraries (torch, onnxruntime, openvino, tensorrt) are imported inside the
commands, so ``deepslim --help`` starts fast.
"""

from __future__ import annotations

from typing import Annotated

import typer
from typer._click.exceptions import UsageError as _UsageError
from typer.core import TyperGroup

from commands import compress, demo, deploy, models
from commands import auto as auto_cmd
from commands import run as run_cmd
from deepslim.errors import DeepSlimError


class _Group(TyperGroup):
    """Turns a DeepSlimError into one line on stderr and exit code 2 (``--debug``: the traceback)."""

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except DeepSlimError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            _fail(str(exc), exc.exit_code)
        except _UsageError as exc:  # a mistyped option or value: one line too, not a usage panel
            path = exc.ctx.command_path if exc.ctx else "deepslim"
            _fail(f"{exc.format_message()} (see '{path} --help')", exc.exit_code)


def _fail(message: str, code: int) -> None:
    typer.echo("error: " + " ".join(message.split()), err=True)
    raise typer.Exit(code)


app = typer.Typer(name="deepslim", cls=_Group, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode="rich",
                  help="Compress trained PyTorch models, export them, and benchmark every artifact.")


def _version(value: bool) -> None:
    if value:
        from deepslim import __version__
        typer.echo(f"deepslim {__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of errors.")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    ctx.obj = {"debug": debug}


# --- commands (each lives in commands/; heavy imports happen inside them) ----------------------

app.command()(models.train)
app.command("eval")(models.evaluate)
app.command("export")(deploy.export_cmd)
app.command()(deploy.bench)
app.add_typer(compress.compress_app, name="compress")
app.command()(models.info)
app.command()(models.archs)
app.command()(demo.demo)
app.command()(run_cmd.run)
app.command()(auto_cmd.auto)


if __name__ == "__main__":
    app()
