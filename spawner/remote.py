"""A client of another Spawner's REST API, for `manage.py spawn --server URL`. Only HTTP: nothing
here touches this machine's database.

The token: SPAWNER_TOKEN, else the server's entry in the config file (`$SPAWNER_CONFIG`, else
`$XDG_CONFIG_HOME/spawner/config.toml`, else `~/.config/spawner/config.toml`):

    [servers."https://spawner.example.com"]
    token = "spn_…"

A config file that others than its owner may read or write is refused, as ssh refuses such a key.
"""

from __future__ import annotations

import json
import os
import stat
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TERMINAL = ("succeeded", "partial", "failed", "cancelled")
STREAM_SILENCE_SECONDS = 60.0  # no byte (not even a keep-alive) for this long: the stream is resumed
POLL_FIRST_SECONDS = 0.5  # following a batch: the first look, then slower while nothing changes
POLL_MAX_SECONDS = 5.0
SEND_ATTEMPTS = 4  # a launch is sent again (same Idempotency-Key) when the connection fails
TIMEOUT_SECONDS = 30.0


class RemoteError(Exception):
    """What the server refused, as its problem details say (`errors`: a spec's field errors)."""

    def __init__(self, status: int, detail: str, errors: list | None = None):
        self.status = status
        self.detail = detail
        self.errors = errors or []
        super().__init__(f"{status}: {detail}")


def config_path() -> Path:
    """Where the token file is: $SPAWNER_CONFIG, else the XDG config directory's spawner/config.toml."""
    if explicit := os.environ.get("SPAWNER_CONFIG", "").strip():
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base) / "spawner" / "config.toml"


def _server_key(url: str) -> str:
    return url.strip().rstrip("/").lower()


def token_for(server: str) -> tuple[str, str]:
    """The token for this server and where it came from: SPAWNER_TOKEN wins, then the config
    file's `[servers."URL"]` entry. ('', '') when neither has one; RemoteError for a config file
    that cannot be trusted or read."""
    if token := os.environ.get("SPAWNER_TOKEN", "").strip():
        return token, "SPAWNER_TOKEN"
    path = config_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        if os.environ.get("SPAWNER_CONFIG", "").strip():
            raise RemoteError(0, f"SPAWNER_CONFIG names {path}, which does not exist") from None
        return "", ""
    except OSError as exc:
        raise RemoteError(0, f"cannot read the config file {path}: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RemoteError(0, f"the config file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise RemoteError(
            0,
            f"the config file {path} holds API tokens but others may read or change it "
            f"(mode {stat.filemode(info.st_mode)}): run `chmod 600 {path}`; it is not used until then",
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise RemoteError(0, f"the config file {path} belongs to another user: it is not used")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RemoteError(0, f"cannot read the config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RemoteError(0, f"the config file {path} is not valid TOML: {exc}") from None
    servers = data.get("servers", {})
    if not isinstance(servers, dict):
        raise RemoteError(0, f'{path}: `servers` must be a table of [servers."URL"] entries')
    wanted = _server_key(server)
    for url, entry in servers.items():
        if _server_key(url) != wanted:
            continue
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise RemoteError(0, f'{path}: [servers."{url}"] has no token = "spn_…"')
        return token.strip(), str(path)
    return "", ""


@dataclass
class Remote:
    server: str
    token: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            raise RemoteError(0, f"--server must be an http:// or https:// URL, not {self.server!r}")
        self.client = httpx.Client(
            base_url=self.server + "/api",
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def _answer(self, response: httpx.Response):
        if response.is_success:
            return response.json()
        try:
            body = response.json()
        except ValueError:
            body = {}
        detail = body.get("detail") if isinstance(body, dict) else None
        raise RemoteError(response.status_code, detail or response.reason_phrase, body.get("errors") or [])

    def _send(self, method: str, path: str, **kwargs):
        """One request; a failed connection or a 429/503 is tried again (with its Retry-After). A
        change without an Idempotency-Key is sent again only if it never reached the server: once
        sent, a lost answer may hide a batch launched (a template's launch, a re-run)."""
        once = method not in ("GET", "HEAD") and "Idempotency-Key" not in (kwargs.get("headers") or {})
        for attempt in range(SEND_ATTEMPTS):
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if once and sent:
                    why = f"{method} {path} on {self.server} got no answer ({exc})"
                    raise RemoteError(0, f"{why}: it may have been done; look before trying again") from None
                if attempt == SEND_ATTEMPTS - 1:
                    raise RemoteError(0, f"cannot reach {self.server}: {exc}") from None
                time.sleep(2**attempt)
                continue
            if response.status_code in (429, 503) and attempt < SEND_ATTEMPTS - 1:
                time.sleep(_retry_after(response, default=2**attempt))
                continue
            return self._answer(response)
        raise AssertionError("unreachable")

    def get(self, path: str, **params):
        return self._send("GET", path, params=params)

    def post(self, path: str, body=None, params: dict | None = None):
        return self._send("POST", path, json=body, params=params or {})

    def plan(self, text: str, *, sequential: bool = False) -> dict:
        return self._send(
            "POST",
            "/batches/plan",
            params={"sequential": sequential},
            content=text.encode(),
            headers={"Content-Type": "application/yaml"},
        )

    def launch(self, text: str, *, sequential: bool = False, confirm_cost: bool = False) -> dict:
        """Launch once: a resend after a lost answer carries the same Idempotency-Key."""
        headers = {"Content-Type": "application/yaml", "Idempotency-Key": f"spawn-{uuid.uuid4()}"}
        params = {"sequential": "true"} if sequential else {}
        if confirm_cost:
            params["confirm_cost"] = "true"
        return self._send("POST", "/batches", params=params, content=text.encode(), headers=headers)

    def follow(self, batch_id: int, on_change=None, terminal=TERMINAL) -> dict:
        """Follow the batch until it ends, through its event stream; poll only if the server refuses it."""
        try:
            return self.follow_stream(batch_id, on_change)
        except StreamRefused:
            return self.poll(batch_id, on_change, terminal)

    def follow_stream(self, batch_id: int, on_change=None) -> dict:
        """Read `GET /batches/{id}/events` (Server-Sent Events): a snapshot, then each event applied to
        it; a dropped stream is resumed with Last-Event-ID. StreamRefused: follow another way."""
        detail, last_id, failures = None, None, 0
        path = f"/batches/{batch_id}/events"
        timeout = httpx.Timeout(TIMEOUT_SECONDS, read=STREAM_SILENCE_SECONDS)
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            progressed = False
            try:
                with self.client.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code in (401, 403):
                        response.read()
                        self._answer(response)
                    media = response.headers.get("Content-Type", "")
                    if response.status_code != 200 or not media.startswith("text/event-stream"):
                        raise StreamRefused(f"{response.status_code} {media}")
                    for event in read_events(response.iter_lines()):
                        progressed = True
                        if event.id is not None:
                            last_id = event.id
                        if event.name == "end":
                            return self.get(f"/batches/{batch_id}")
                        data = json.loads(event.data) if event.data else {}
                        if event.name == "snapshot":
                            detail = data
                        elif detail is None or not apply_event(detail, data):
                            continue
                        if on_change:
                            on_change(detail)
            except httpx.TransportError:
                pass  # dropped, or silent past STREAM_SILENCE_SECONDS (no keep-alive): resume it
            failures = 0 if progressed else failures + 1
            if failures >= SEND_ATTEMPTS:
                raise StreamRefused(f"the event stream of batch #{batch_id} keeps closing")
            if detail is None and last_id is None and progressed:
                raise StreamRefused("the event stream sent no snapshot")
            time.sleep(min(2**failures - 1, POLL_MAX_SECONDS))

    def poll(self, batch_id: int, on_change=None, terminal=TERMINAL) -> dict:
        """Poll until the batch ends: often at first, up to every POLL_MAX_SECONDS while nothing changes."""
        delay, seen = POLL_FIRST_SECONDS, None
        while True:
            detail = self.get(f"/batches/{batch_id}")
            state = (detail["status"], tuple((r["status"], r["attempts"]) for r in detail["runs"]))
            if state != seen:
                seen, delay = state, POLL_FIRST_SECONDS
                if on_change:
                    on_change(detail)
            else:
                delay = min(delay * 1.5, POLL_MAX_SECONDS)
            if detail["status"] in terminal:
                return detail
            time.sleep(delay)


class StreamRefused(Exception):
    """The server does not stream this batch's events (an older server, a proxy in between)."""


@dataclass
class Event:
    id: int | None
    name: str
    data: str


def read_events(lines):
    """Server-Sent Events from a stream's lines (comments skipped; a blank line ends an event)."""
    name, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data or name != "message":
                yield Event(event_id, name, "\n".join(data))
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field_name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field_name == "event":
            name = value
        elif field_name == "data":
            data.append(value)
        elif field_name == "id" and value.isdigit():
            event_id = int(value)


def apply_event(detail: dict, event: dict) -> bool:
    """A logged event on the batch as last seen: a run's or the batch's new status (and attempt).
    True if that changed what is shown."""
    kind, status = event.get("kind", ""), event.get("status", "")
    if not status:
        return False
    if kind.startswith("batch."):
        changed = detail["status"] != status
        detail["status"] = status
        return changed
    if not kind.startswith("run."):
        return False
    for run in detail["runs"]:
        if run["id"] == event.get("run"):
            before = (run["status"], run["attempts"])
            run["status"] = status
            run["attempts"] = max(run["attempts"] or 0, event.get("attempt") or 0)
            return (run["status"], run["attempts"]) != before
    return False


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.0), 60.0)
    except ValueError:
        return default
