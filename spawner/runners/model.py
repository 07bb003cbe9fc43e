"""Run a model agent: one streamed call to an OpenAI-compatible chat-completions endpoint.

No process: the call runs in a thread of the worker that supervises the attempt, behind the same
interface as a process (`wait(timeout)` -> exit code or None, `stop(grace)`; `pgid` is None, which
the reaper and the hand-back skip). The answer streams into the attempt's log as it arrives, so
the live output works unchanged. When the call ends:

- the result file holds the run's result: the parsed answer with a JSON schema, else
  ``{"summary": answer}``;
- ``<key>.<n>.usage.json`` beside the log holds the tokens the API reported (read by the usage
  recording);
- exit code 0; an HTTP error, a cut stream or a timeout exit 1 with `error` saying which; an
  HTTP 429 exits 75 with `rate_limited` set and `retry_after` the advised delay (Retry-After);
  a stop (cancel, timeout) closes the stream: the server sees the connection go.

Works with hosted APIs, vLLM, Ollama (``/v1``), llama.cpp's server: anything that speaks
``POST {base_url}/chat/completions`` with ``stream: true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx

from spawner.core import ratelimit
from spawner.runners.base import Invocation, ModelCall, RunnerError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_RATE_LIMITED = 75  # EX_TEMPFAIL
EXIT_STOPPED = -15  # as if SIGTERM ended a process
ERROR_BODY_CHARS = 600


def usage_path(log_path: Path) -> Path:
    """Where a model attempt leaves its usage: `<key>.<n>.usage.json` beside its log."""
    return log_path.with_name(log_path.name.removesuffix(".log") + ".usage.json")


def model_call_for(agent_type, env: dict[str, str], *, connect_timeout: float, read_timeout: float) -> ModelCall:
    """The call an agent type of kind `model` makes; its API key from `env` (the secrets read at spawn)."""
    if not agent_type.base_url or not agent_type.model:
        raise RunnerError("the model agent type needs a base URL and a model")
    key = ""
    if agent_type.api_key_secret:
        key = env.get(agent_type.api_key_secret) or os.environ.get(agent_type.api_key_secret, "")
        if not key:
            raise RunnerError(f"secret not set in the server's environment: {agent_type.api_key_secret}")
    return ModelCall(
        base_url=agent_type.base_url,
        model=agent_type.model,
        api_key=key,
        system_prompt=agent_type.system_prompt or "",
        temperature=agent_type.temperature,
        max_tokens=agent_type.max_tokens,
        response_schema=agent_type.response_schema or None,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def request_body(call: ModelCall, prompt: str) -> dict:
    messages = [{"role": "system", "content": call.system_prompt}] if call.system_prompt else []
    messages.append({"role": "user", "content": prompt})
    body: dict = {
        "model": call.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if call.temperature is not None:
        body["temperature"] = call.temperature
    if call.max_tokens:
        body["max_tokens"] = call.max_tokens
    if call.response_schema:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "result", "schema": call.response_schema, "strict": True},
        }
    return body


def usage_record(usage: dict, model: str) -> dict:
    """The API's usage in Spawner's shape. OpenAI counts cached prompt tokens inside `prompt_tokens`:
    they are moved to `cache_read_tokens`, so no token is counted twice."""
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_tokens": cached,
        "cache_write_tokens": 0,
        "cost_usd": None,
        "models": [model],
        "turns": 1,
        "source": "api",
    }


def parse_structured(answer: str) -> tuple[dict | list | None, str]:
    """The answer as JSON (a fenced ```json block is unwrapped): (value, error)."""
    text = answer.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, f"the answer is not JSON for the schema: {exc}"
    if not isinstance(value, dict | list):
        return None, "the answer is JSON but not an object or a list"
    return value, ""


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class StartedCall:
    """A model call in flight, supervised like a process."""

    pid = None
    pgid = None

    def __init__(self, invocation: Invocation):
        self.invocation = invocation
        self.call: ModelCall = invocation.model
        self.code: int | None = None
        self.error = ""
        self.rate_limited = False
        self.retry_after: float | None = None
        self._done = threading.Event()
        self._stopping = threading.Event()
        self._socket: socket.socket | None = None
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"model-{invocation.key}", daemon=True)

    def start(self) -> StartedCall:
        self._thread.start()
        return self

    # --- the interface the supervisor uses ---

    def poll(self) -> int | None:
        return self.code if self._done.is_set() else None

    def wait(self, timeout: float) -> int | None:
        self._done.wait(max(0.0, timeout))
        return self.poll()

    def stop(self, grace: float) -> int | None:
        """Close the stream (the server sees the connection go) and wait up to `grace` for the thread."""
        if not self._done.is_set():
            self._stopping.set()
            self._close_connection()
        self._thread.join(max(0.0, grace))
        return self.poll()

    # --- the call ---

    def _close_connection(self) -> None:
        with self._lock:
            sock, response = self._socket, self._response
        if sock is not None:  # wakes a read blocked in another thread, unlike close()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def _end(self, code: int, error: str = "") -> None:
        self.code, self.error = code, error
        self._done.set()

    def _run(self) -> None:
        inv = self.invocation
        try:
            with open(inv.log_path, "ab", buffering=0) as log:
                code, error = self._stream(log)
                if error:
                    log.write(f"\nspawner: {error}\n".encode())
        except Exception as exc:  # noqa: BLE001 - the attempt fails visibly, never the worker
            code, error = EXIT_FAILED, f"model call failed: {type(exc).__name__}: {exc}"
        if self._stopping.is_set() and code != EXIT_OK:
            code, error = EXIT_STOPPED, "stopped: the stream was closed"
        self._end(code, error)

    def _stream(self, log) -> tuple[int, str]:
        call = self.call
        url = call.base_url.rstrip("/") + "/chat/completions"
        headers = {"Accept": "text/event-stream"}
        if call.api_key:
            headers["Authorization"] = f"Bearer {call.api_key}"
        timeout = httpx.Timeout(
            connect=call.connect_timeout, read=call.read_timeout, write=call.read_timeout, pool=call.connect_timeout
        )
        answer: list[str] = []
        usage = None
        finish = None
        done = False
        with httpx.Client(timeout=timeout, follow_redirects=False, verify=_tls(url)) as client:
            try:
                with client.stream("POST", url, json=request_body(call, self.invocation.prompt), headers=headers) as r:
                    with self._lock:
                        self._response = r
                        stream = r.extensions.get("network_stream")
                        self._socket = stream.get_extra_info("socket") if stream is not None else None
                    if self._stopping.is_set():
                        return EXIT_STOPPED, "stopped"
                    if r.status_code >= 400:
                        return self._http_error(r)
                    for line in r.iter_lines():
                        if self._stopping.is_set():
                            return EXIT_STOPPED, "stopped"
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        try:
                            chunk = json.loads(data)
                        except ValueError:
                            return EXIT_FAILED, f"the stream sent something that is not JSON: {data[:200]!r}"
                        if isinstance(chunk, dict) and chunk.get("error"):
                            return EXIT_FAILED, f"the model API reported an error mid-stream: {_message(chunk)}"
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        for choice in chunk.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content")
                            if piece:
                                answer.append(piece)
                                log.write(piece.encode())
                            finish = choice.get("finish_reason") or finish
            except httpx.ConnectError as exc:
                return EXIT_FAILED, f"cannot connect to the model API at {call.base_url}: {exc}"
            except httpx.ConnectTimeout:
                return EXIT_FAILED, f"connecting to the model API at {call.base_url} timed out"
            except httpx.ReadTimeout:
                return EXIT_FAILED, f"the model API sent nothing for {call.read_timeout:g} s"
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if self._stopping.is_set():
                    return EXIT_STOPPED, "stopped"
                text = "".join(answer)
                return EXIT_FAILED, f"the stream was cut after {len(text)} characters of the answer ({exc})"
        text = "".join(answer)
        if not done and finish is None:
            return EXIT_FAILED, f"the stream was cut after {len(text)} characters of the answer (no [DONE])"
        if usage:
            _write_json(usage_path(self.invocation.log_path), usage_record(usage, call.model))
        if call.response_schema:
            value, error = parse_structured(text)
            if error:
                return EXIT_FAILED, error + (" (the answer hit max_tokens)" if finish == "length" else "")
        else:
            value = {"summary": text}
        _write_json(self.invocation.result_path, value)
        log.write(b"\n")
        return EXIT_OK, ""

    def _http_error(self, r: httpx.Response) -> tuple[int, str]:
        body = r.read()[:ERROR_BODY_CHARS].decode("utf-8", "replace")
        try:
            detail = _message(json.loads(body))
        except ValueError:
            detail = body.strip()
        if r.status_code == 429:
            self.rate_limited = True
            ms = r.headers.get("retry-after-ms")
            if ms and ms.replace(".", "", 1).isdigit():
                self.retry_after = float(ms) / 1000
            else:
                self.retry_after = ratelimit.retry_after_seconds(r.headers.get("retry-after"), time.time())
            return EXIT_RATE_LIMITED, (
                f"rate limited: the model API answered HTTP 429 (retry after {self.retry_after:g} s)"
                + (f": {detail}" if detail else "")
            )
        return EXIT_FAILED, f"the model API answered HTTP {r.status_code}" + (f": {detail}" if detail else "")


_ssl_context = None
_ssl_lock = threading.Lock()


def _tls(url: str):
    """Plain HTTP has nothing to verify (and loading the CA bundle costs ~50 ms a call); HTTPS shares
    one verifying context per worker process."""
    global _ssl_context
    if not url.startswith("https:"):
        return False
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def _message(payload) -> str:
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)[:ERROR_BODY_CHARS]
        if error:
            return str(error)[:ERROR_BODY_CHARS]
        return str(payload.get("message") or payload)[:ERROR_BODY_CHARS]
    return str(payload)[:ERROR_BODY_CHARS]


class ModelRunner:
    def start(self, invocation: Invocation) -> StartedCall:
        if invocation.model is None:
            raise RunnerError("a model agent needs its model call")
        invocation.log_path.parent.mkdir(parents=True, exist_ok=True)
        invocation.result_path.unlink(missing_ok=True)
        usage_path(invocation.log_path).unlink(missing_ok=True)
        return StartedCall(invocation).start()
