"""What the offline world's commands share with objbatch's (without importing it): --verbose, and every
error as one line, `name: error: what; what to do`, with a traceback only under --verbose."""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Any, Callable

import click


def one_line_errors(fn: Callable) -> Callable:
    """Wrap a command body: --verbose, one-line errors (exit 1), Ctrl-C as one line (exit 130)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        name = click.get_current_context().info_name or "mistral-emulator"
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except click.ClickException as exc:
            _fail(name, exc.format_message(), verbose, exc.exit_code)  # 2 for a usage error
        except KeyboardInterrupt:
            _fail(name, "interrupted", verbose, 130)
        except Exception as exc:  # anything unexpected still gets one readable line
            _fail(name, f"{type(exc).__name__}: {exc} (rerun with --verbose for details)", verbose)

    return click.option("--verbose", "-v", is_flag=True, help="Show a traceback when something fails.")(wrapper)


def _fail(name: str, message: str, verbose: bool, code: int = 1) -> None:
    if verbose:
        click.echo(traceback.format_exc().rstrip(), err=True)
    click.echo(f"{name}: error: {message}", err=True)
    sys.exit(code)
