"""A client of another Spawner's REST API, for `manage.py spawn --server URL` (the token from
SPAWNER_TOKEN). Only HTTP: nothing here touches this machine's database."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import httpx

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
        """One request; a failed connection or a 429/503 is tried again (with its Retry-After)."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
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

    def post(self, path: str, body=None):
        return self._send("POST", path, json=body)

    def plan(self, text: str, *, sequential: bool = False) -> dict:
        return self._send(
            "POST",
            "/batches/plan",
            params={"sequential": sequential},
            content=text.encode(),
            headers={"Content-Type": "application/yaml"},
        )

    def launch(self, text: str, *, sequential: bool = False) -> dict:
        """Launch once: a resend after a lost answer carries the same Idempotency-Key."""
        headers = {"Content-Type": "application/yaml", "Idempotency-Key": f"spawn-{uuid.uuid4()}"}
        params = {"sequential": "true"} if sequential else {}
        return self._send("POST", "/batches", params=params, content=text.encode(), headers=headers)

    def follow(self, batch_id: int, on_change=None, terminal=("succeeded", "partial", "failed", "cancelled")) -> dict:
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


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.0), 60.0)
    except ValueError:
        return default
