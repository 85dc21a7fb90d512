"""mistral-emulator: a local, faithful server of the Mistral Files and Batch API (docs/mistral-batch-api.md
says what it must get right), with a deterministic stand-in model and reproducible fault injection.

Routing by resource: files.py (Files API), jobs.py (Batch API and chat completions), control.py (the
emulator's own endpoints); state.py keeps files and jobs across restarts; faults.py decides what goes wrong.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import click

from . import __version__, control, faults, files, jobs
from .cli import one_line_errors
from .errors import ApiError
from .state import State, pace_problem

ROUTES: list[tuple[str, str, Callable]] = [
    ("POST", r"/v1/files", files.upload),
    ("GET", r"/v1/files", files.list_files),
    ("GET", r"/v1/files/([^/]+)", files.retrieve),
    ("DELETE", r"/v1/files/([^/]+)", files.delete),
    ("GET", r"/v1/files/([^/]+)/content", files.download),
    ("GET", r"/v1/files/([^/]+)/url", files.signed_url),
    ("POST", r"/v1/batch/jobs", jobs.create),
    ("GET", r"/v1/batch/jobs", jobs.list_jobs),
    ("GET", r"/v1/batch/jobs/([^/]+)", jobs.get),
    ("DELETE", r"/v1/batch/jobs/([^/]+)", jobs.delete),
    ("POST", r"/v1/batch/jobs/([^/]+)/cancel", jobs.cancel),
    ("POST", r"/v1/chat/completions", jobs.chat),
]


def loopback(host: str) -> str:
    """The emulator is for this machine only."""
    try:
        ok = host == "localhost" or ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise click.BadParameter(f"{host!r} is not a loopback address; use 127.0.0.1", param_hint="--host")
    return host


def pace_option(text: str | None) -> dict:
    """--pace: a JSON object of known pace settings, each a number of at least 0."""
    try:
        pace = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg})", param_hint="--pace") from None
    problem = pace_problem(pace)
    if problem:
        raise click.BadParameter(problem, param_hint="--pace")
    return pace


class Api:
    """Authorization, HTTP faults and routing over the state; one request at a time."""

    def __init__(self, state: State, api_key: str | None, base_url: str = ""):
        self.state, self.api_key, self.base_url = state, api_key, base_url

    def handle(self, method: str, path: str, query: dict, headers: Any, body: bytes) -> tuple[int, Any, dict]:
        with self.state.lock:
            self._authorize(headers)  # the control endpoints too: they change what every client is told
            if path.startswith("/_emulator/"):
                return 200, control.handle(self.state, method, path, body), {}
            fault = faults.http_fault(self.state.faults, self.state.record, method, path)
            if fault:
                self.state.save()
                raise fault
            for verb, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, path)
                if match and method == verb:
                    answer = handler(self, query, body, headers, *match.groups())
                    if handler is jobs.create and self.state.faults.get("lost_creates", 0) > 0:
                        self.state.faults["lost_creates"] -= 1  # the job exists; its creator never hears so
                        self.state.save()
                        raise ApiError(500, {"object": "error", "message": "Internal server error",
                                             "type": "internal_error", "param": None, "code": "3001"})
                    return 200, answer, {}
            if any(re.fullmatch(pattern, path) for _, pattern, _ in ROUTES):
                raise ApiError(405, {"detail": "Method Not Allowed"})
            raise ApiError(404, {"detail": "Not Found"})

    def _authorize(self, headers: Any) -> None:
        auth = headers.get("Authorization") or ""
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not key or (self.api_key is not None and key != self.api_key):
            raise ApiError(401, {"object": "error", "message": "Unauthorized", "type": "invalid_request_error",
                                 "param": None, "code": "1000"})


def make_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload, headers = api.handle(method, url.path.rstrip("/") or "/",
                                                      parse_qs(url.query, keep_blank_values=True), self.headers, body)
            except ApiError as exc:
                status, payload, headers = exc.status, exc.body, exc.headers
            except Exception as exc:  # a bug in the emulator must still answer like a server would
                status, payload, headers = 500, {"detail": f"emulator error: {type(exc).__name__}: {exc}"}, {}
            self._send(status, payload, headers)

        def _send(self, status: int, payload: Any, headers: dict) -> None:
            raw = isinstance(payload, bytes)
            data = payload if raw else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the first lines of stdout are for the person or program that started it

    return Handler


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Example:
  $ mistral-emulator --state-dir /tmp/emu --port 8765 &
  export MISTRAL_SERVER_URL=http://127.0.0.1:8765
  export MISTRAL_API_KEY=local
  (paste the two lines, then run objbatch's commands against it)

\b
Environment: none read.

\b
Exit codes: 0 stopped (Ctrl-C or SIGTERM), 1 could not start (port in use, state folder unusable),
2 usage error.""")
@click.option("--host", default="127.0.0.1", show_default=True, callback=lambda _c, _p, value: loopback(value),
              help="Loopback address to bind (127.x.x.x or localhost); nothing else is served.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 picks a free one.")
@click.option("--state-dir", required=True, type=click.Path(file_okay=False), help="Where files and jobs persist.")
@click.option("--api-key", default=None,
              help="Accept only this key, on every endpoint (the /_emulator/ controls too). Without it the "
                   "emulator accepts ANY non-empty key: anyone who can reach the port can use it.")
@click.option("--faults", "fault_option", default=None,
              help="Fault preset (none, real, chaos), a JSON file, or JSON text.")
@click.option("--seed", default=None, type=int, help="Seed for reproducible faults.")
@click.option("--pace", default=None, help="JSON overriding queue_seconds, seconds_per_request, min_run_seconds, "
                                           "max_run_seconds, cancel_seconds, seconds_per_hour, hold_at.")
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@one_line_errors
def main(host: str, port: int, state_dir: str, api_key: str | None, fault_option: str | None, seed: int | None,
         pace: str | None) -> None:
    """Serve the Mistral Files and Batch API locally. Prints, first, the lines that point objbatch at it."""
    fault_config = faults.parse_option(fault_option)
    if seed is not None:
        fault_config["seed"] = seed
    pace_config = pace_option(pace)
    try:
        state = State(Path(state_dir), fault_config, pace_config)
        api = Api(state, api_key)
        server = ThreadingHTTPServer((host, port), make_handler(api))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(f"cannot start: port {port} on {host} is in use (another emulator?); choose "
                                       "another --port, or --port 0 for a free one") from None
        raise click.ClickException(f"cannot start on {host}:{port} with state folder {state_dir}: "
                                   f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    server.daemon_threads = True
    api.base_url = f"http://{host}:{server.server_address[1]}"
    print(f"export MISTRAL_SERVER_URL={api.base_url}\nexport MISTRAL_API_KEY={api_key or 'local'}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
