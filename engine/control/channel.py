"""The authenticated local channel between `ats control` and a running engine.

Server: an HTTP server bound to a loopback address, in a background thread. One endpoint,
`POST /v1/command`, with the header `Authorization: Bearer <token>` and the JSON body
`{"command": ["set-max-risk", "0.5"], "who": "alice"}`. The token must equal the environment
variable `ATS_CONTROL_TOKEN` of the engine (compared with `hmac.compare_digest`); the server
refuses to start without one, or with one shorter than `MIN_TOKEN_CHARS`. Answers are JSON:
200 with the result and the control state, 400 for a malformed request or command, 401 without
the right token, 404/405 for other paths and methods. Every request, refused ones included, is
journaled by the `Controller` (who, wall-clock and event time, command, result) without the
token, which appears in no log line, error, answer or repr.

Client: `send_command(url, words, who, token)` with the standard library; a connection error
names the URL only.
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engine.control.commands import CommandError, command_from_json
from engine.control.controller import Controller

log = logging.getLogger(__name__)
TOKEN_ENV = "ATS_CONTROL_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_BODY_BYTES = 16 * 1024
MAX_WHO_CHARS = 64
COMMAND_PATH = "/v1/command"


class ControlChannelError(RuntimeError):
    """The channel cannot start, or a client request could not be delivered."""


def token_from_env(env: str = TOKEN_ENV) -> str:
    """The shared token, from the environment only; refuses a missing or short one."""
    token = os.environ.get(env, "")
    if not token:
        raise ControlChannelError(f"environment variable {env} is not set: the control channel "
                                  "needs a token (e.g. `export ATS_CONTROL_TOKEN=$(openssl rand "
                                  "-hex 24)`)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ControlChannelError(f"{env} is shorter than {MIN_TOKEN_CHARS} characters")
    return token


def default_who() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def check_who(who: Any) -> str:
    """The operator's name as the journal keeps it: printable, at most MAX_WHO_CHARS."""
    if not isinstance(who, str) or not who.strip():
        raise CommandError("request field 'who' must be a non-empty string")
    who = who.strip()
    if len(who) > MAX_WHO_CHARS or not who.isprintable():
        raise CommandError(f"request field 'who' must be printable and at most {MAX_WHO_CHARS} "
                           "characters")
    return who


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: _ControlHttpServer  # HTTP/1.0: one request per connection
    timeout = 10.0  # seconds a client may take to send its request

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control channel %s: " + format, self.client_address[0], *args)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, sort_keys=True, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, who: str, command: str, argument: str, detail: str) -> None:
        self.server.controller.refuse(who, command, argument, detail)
        self._answer(status, {"result": "refused", "error": detail})

    def _read_body(self) -> tuple[dict[str, Any] | None, str]:
        """The JSON body (None and a reason when it is missing, too large or malformed)."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None, "missing or invalid Content-Length"
        if length < 0 or length > MAX_BODY_BYTES:
            return None, f"body must be at most {MAX_BODY_BYTES} bytes"
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return None, "body is not JSON"
        if not isinstance(body, dict):
            return None, "body must be a JSON object"
        return body, ""

    def do_POST(self) -> None:
        if self.path != COMMAND_PATH:
            self._refuse(404, "", "", "", f"unknown path; POST {COMMAND_PATH}")
            return
        body, problem = self._read_body()
        claimed = body.get("who") if body else None
        who = claimed.strip()[:MAX_WHO_CHARS] if isinstance(claimed, str) else ""
        words = body.get("command") if body else None
        verb = str(words[0])[:40] if isinstance(words, list) and words else ""
        authorized, why = self.server.authorize(self.headers.get("Authorization"))
        if not authorized:
            self._refuse(401, who, verb, "", why)
            return
        if body is None:
            self._refuse(400, who, verb, "", problem)
            return
        try:
            who = check_who(body.get("who"))
            command = command_from_json(body)
        except CommandError as error:
            self._refuse(400, who, verb, "", str(error))
            return
        try:
            answer = self.server.controller.execute(command, who)
        except Exception as error:  # e.g. the state file cannot be written: fail loudly
            log.error("control command %s failed: %s: %s", command.verb, type(error).__name__,
                      error)
            self._answer(500, {"result": "failed", "error": f"{type(error).__name__}: {error}"})
            return
        self._answer(200, answer)

    def do_GET(self) -> None:
        self._refuse(405, "", "", "", f"method GET not allowed; POST {COMMAND_PATH}")

    do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815


class _ControlHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], controller: Controller, token: str) -> None:
        super().__init__(address, _Handler)
        self.controller = controller
        self._expected = token.encode()

    def __repr__(self) -> str:
        return f"_ControlHttpServer({self.server_address!r})"

    def authorize(self, header: str | None) -> tuple[bool, str]:
        if not header:
            return False, "missing token (Authorization: Bearer ...)"
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return False, "malformed Authorization header; expected 'Bearer <token>'"
        if not hmac.compare_digest(given.strip().encode(), self._expected):
            return False, "wrong token"
        return True, ""


class ControlServer:
    """The channel's server side: `start()` binds and serves in daemon threads; `stop()` ends it.
    Also refreshes the controller every `refresh_s` so exit requests settle."""

    def __init__(self, controller: Controller, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, refresh_s: float = 1.0) -> None:
        if not _loopback(host):
            raise ControlChannelError(f"control host {host!r} is not a loopback address; the "
                                      "channel is local only")
        self.controller = controller
        self.host = host
        self.port = port
        self.refresh_s = refresh_s
        self._token = token if token is not None else token_from_env()
        if len(self._token) < MIN_TOKEN_CHARS:
            raise ControlChannelError(f"control token shorter than {MIN_TOKEN_CHARS} characters")
        self._server: _ControlHttpServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"ControlServer(host={self.host!r}, port={self.port})"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ControlServer:
        self._server = _ControlHttpServer((self.host, self.port), self.controller, self._token)
        self.port = int(self._server.server_address[1])
        serve = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                 name="ats-control-channel", daemon=True)
        refresh = threading.Thread(target=self._refresh_loop, name="ats-control-refresh",
                                   daemon=True)
        self._threads = [serve, refresh]
        for thread in self._threads:
            thread.start()
        log.info("control channel listening on %s", self.url)
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.controller.refresh()
            except Exception as error:  # keep the channel up; the error is logged
                log.error("control refresh failed: %s: %s", type(error).__name__, error)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(5)
        self._threads = []

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def send_command(url: str, words: list[str], who: str, token: str,
                 timeout_s: float = 10.0) -> tuple[int, dict[str, Any]]:
    """POST one command; returns (HTTP status, JSON answer). Raises ControlChannelError when no
    engine answers at `url`."""
    body = json.dumps({"command": words, "who": who}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + COMMAND_PATH, data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), _json_answer(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), _json_answer(error.read())
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ControlChannelError(f"no engine control channel answering at {url} "
                                  f"({reason})") from None


def _json_answer(data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError:
        return {"result": "failed", "error": "the engine's answer is not JSON"}
    return answer if isinstance(answer, dict) else {"result": "failed", "error": "bad answer"}
