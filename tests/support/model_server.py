"""A scripted model server for the real coding-agent CLIs (standard library only).

It speaks, on 127.0.0.1 and a random port:

- the Anthropic Messages API as Claude Code calls it through ``ANTHROPIC_BASE_URL``:
  ``POST /v1/messages`` streamed as server-sent events (``message_start``,
  ``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta`` with usage,
  ``message_stop``) exactly in the shape the real API streams, ``stream: false`` as one
  JSON message, and ``POST /v1/messages/count_tokens``;
- the OpenAI Responses API as Codex calls it with a custom provider
  (``model_providers.NAME.base_url = <url>/v1``, ``wire_api = "responses"``):
  ``POST /v1/responses`` streamed as ``response.created``, ``response.output_item.added``,
  ``response.output_text.delta``, ``response.output_item.done`` (messages and
  ``function_call`` items), ``response.completed`` with usage; ``GET /v1/models``;
- the OpenAI chat-completions API as Spawner's model agents (and vLLM, Ollama, llama.cpp
  clients) call it: ``POST /v1/chat/completions``, ``stream: true`` as ``chat.completion.chunk``
  events then ``data: [DONE]`` (a last chunk with usage when ``stream_options.include_usage``),
  else one ``chat.completion``. What it answers is scripted with ``server.chat(...)``: an answer
  streamed token by token (``server.token_delay`` seconds apart), an HTTP error, a 429 with
  Retry-After, or a stream cut after some tokens; ``server.chat_disconnects`` counts the streams
  whose client went away before the end (a cancel);
- the Gemini API as Gemini CLI calls it through ``GOOGLE_GEMINI_BASE_URL`` (API-key auth):
  ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` streamed as unnamed ``data:``
  events, each a ``GenerateContentResponse`` (text parts, then ``functionCall`` parts, the last one
  with ``finishReason`` and ``usageMetadata``), ``:generateContent`` as one such response (its
  model router and other side requests: those offering no tools), and ``:countTokens``.

``server.rate_limit(api, times=...)`` makes the next requests to an API (``"anthropic"``:
``/v1/messages``; ``"openai"``: ``/v1/responses``; ``"gemini"``: ``:generateContent`` and
``:streamGenerateContent``) answer 429 with a ``Retry-After`` header and
that API's error body, as the real APIs do when a key is over its limit; ``server.rate_limited``
counts the 429s sent. ``server.api_error(api, status)`` answers another error status the same way.

Anything else the CLIs ask for at start-up gets a small, harmless JSON answer (and is
recorded, so a test can see it).

A test scripts what the model answers: ``server.script(turns, when="text in the prompt")``.
Each turn is ``text("...")``, ``tools(call, ...)`` (``claude_write``, ``claude_edit``,
``claude_bash``, ``codex_shell``, ``codex_patch``, ``gemini_write``, ``gemini_replace``, or any
``call(name, input)``), or a function of the request that returns a turn. The turn a
request gets is the number of assistant turns already in its conversation, so several agents
can talk to one server at once and each follows its own script; once a script is used up, the
last turn repeats (a text answer ends the agent's loop). Requests the CLI makes on the side
(titles, topic checks: no tools offered) get ``side_answer`` instead, so they never consume
the script. Every request is kept in ``server.requests``.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MODEL = "claude-sonnet-4-5"
CODEX_MODEL = "gpt-5-codex"
GEMINI_MODEL = "gemini-2.5-pro"
DUMMY_KEY = "sk-test-not-a-real-key"


# --- what a test scripts ------------------------------------------------------------------


@dataclass
class Call:
    name: str
    input: dict[str, Any]
    kind: str = "function"  # function | custom (a freeform tool: input is one string in `input["input"]`)


@dataclass
class Turn:
    text: str = ""
    calls: list[Call] = field(default_factory=list)


def text(answer: str) -> Turn:
    return Turn(text=answer)


def tools(*calls: Call, say: str = "") -> Turn:
    return Turn(text=say, calls=list(calls))


def call(name: str, input: dict[str, Any]) -> Call:  # noqa: A002 - the API's own word
    return Call(name, input)


def claude_write(path: str, content: str) -> Call:
    return Call("Write", {"file_path": path, "content": content})


def claude_edit(path: str, old: str, new: str) -> Call:
    return Call("Edit", {"file_path": path, "old_string": old, "new_string": new, "replace_all": False})


def claude_bash(command: str) -> Call:
    return Call("Bash", {"command": command, "description": "scripted"})


def codex_shell(command: str, workdir: str | None = None) -> Call:
    """Codex's shell tool, in whichever form this Codex offers (resolved against the request)."""
    args: dict[str, Any] = {"command": command}
    if workdir:
        args["workdir"] = workdir
    return Call("$shell", args)


def codex_patch(patch: str) -> Call:
    """Codex's apply_patch tool (freeform or JSON, resolved against the request)."""
    return Call("$apply_patch", {"input": patch})


def gemini_write(path: str, content: str) -> Call:
    return Call("write_file", {"file_path": path, "content": content})


def gemini_replace(path: str, old: str, new: str) -> Call:
    return Call("replace", {"file_path": path, "instruction": "scripted", "old_string": old, "new_string": new})


@dataclass
class ChatReply:
    """What `POST /v1/chat/completions` answers, for requests whose user message contains `when`."""

    answer: str = "ok"
    when: str = ""
    status: int = 200  # an error status answers {"error": {...}} instead
    retry_after: str | None = None  # the Retry-After header (with status 429)
    cut_after: int | None = None  # close the connection after this many tokens, without [DONE]
    times: int | None = None  # answer this many requests, then give way to the next match
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens; default: counted
    cached_tokens: int = 0


@dataclass
class ApiError:
    """An error answer (a 429 unless told) for the requests to one API (see ModelServer.rate_limit)."""

    api: str  # "anthropic" | "openai" | "gemini"
    times: int | None = None  # this many requests, then answers resume; None: every one
    retry_after: str | None = "3"
    status: int = 429
    message: str = ""  # the error's message; empty: the API's usual one


RATE_LIMIT_MESSAGE = "This request would exceed the rate limit for your organization. Please try again later."


# What the Gemini API sends with a per-minute quota's 429 (google.rpc.Status with its details).
GEMINI_QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count"


def gemini_error(status: int, message: str, details: list | None = None) -> dict:
    names = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
    status_name = names.get(status, "INTERNAL")
    return {"error": {"code": status, "message": message, "status": status_name, "details": details or []}}


def rate_limit_body(api: str, message: str = "", retry_after: str | None = None) -> dict:
    """The error body each real API sends with its 429."""
    if api == "gemini":
        # With a message of its own: the bare status the API also answers (no quota, no retry delay).
        if message:
            return gemini_error(429, message)
        delay = f"{retry_after or 3}s"
        text = (
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
            f"* Quota exceeded for metric: {GEMINI_QUOTA_METRIC}, limit: 1000000\nPlease retry in {delay}."
        )
        violation = {
            "quotaMetric": GEMINI_QUOTA_METRIC,
            "quotaId": "GenerateContentPaidTierInputTokensPerModelPerMinute",
            "quotaDimensions": {"location": "global", "model": GEMINI_MODEL},
            "quotaValue": "1000000",
        }
        return gemini_error(
            429,
            text,
            [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
            ],
        )
    if api == "anthropic":
        return {"type": "error", "error": {"type": "rate_limit_error", "message": message or RATE_LIMIT_MESSAGE}}
    return {
        "error": {
            "message": message or f"Rate limit reached for requests. {RATE_LIMIT_MESSAGE}",
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


def error_body(api: str, status: int, message: str = "", retry_after: str | None = None) -> dict:
    """The error body each real API sends with this status."""
    if status == 429:
        return rate_limit_body(api, message, retry_after)
    if api == "gemini":
        return gemini_error(status, message or f"scripted {status}")
    if api == "anthropic":
        return {"type": "error", "error": {"type": "api_error", "message": f"scripted {status}"}}
    return {"error": {"message": f"scripted {status}", "type": "server_error", "param": None, "code": None}}


def chat_tokens(answer: str) -> list[str]:
    """The answer as the stream sends it: a word (with its leading space) per chunk."""
    return re.findall(r"\s*\S+|\s+", answer) or [""]


# --- the server ---------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def api(self) -> str:
        if self.path.startswith("/v1/messages"):
            return "anthropic"
        if self.path.endswith("/responses"):
            return "openai"
        if self.path.endswith("/chat/completions"):
            return "chat"
        if self.path.endswith((":generateContent", ":streamGenerateContent")):
            return "gemini"
        return "other"

    def prompt_text(self) -> str:
        """All user-side text of the conversation (prompts, tool results), to assert on."""
        return "\n".join(_texts(self.body))

    def system_text(self) -> str:
        body = self.body if isinstance(self.body, dict) else {}
        return "\n".join(
            _texts(body.get("system")) + _texts(body.get("instructions")) + _texts(body.get("systemInstruction"))
        )

    def result_file(self) -> str:
        """The result file the Claude Code preset names in the system prompt (what a model would read)."""
        found = re.search(r"result file \(SPAWNER_RESULT_FILE\) is (\S+?):? ", self.system_text())
        if not found:
            raise AssertionError("the system prompt names no result file")
        return found.group(1)

    def first_user_text(self) -> str:
        body = self.body if isinstance(self.body, dict) else {}
        if self.api == "anthropic":
            for m in body.get("messages") or []:
                if m.get("role") == "user":
                    return "\n".join(_texts(m.get("content")))
        if self.api == "openai":
            items = body.get("input")
            if isinstance(items, str):
                return items
            return "\n".join(
                "\n".join(_texts(i.get("content")))
                for i in items or []
                if isinstance(i, dict) and i.get("role") == "user"
            )
        if self.api == "gemini":
            # Gemini CLI sends its session context, then the prompt, as two user contents.
            return "\n".join(
                part["text"]
                for c in body.get("contents") or []
                if c.get("role") == "user"
                for part in c.get("parts") or []
                if isinstance(part.get("text"), str)
            )
        return ""


# Where the APIs keep text: Anthropic's and OpenAI's keys, then Gemini's (contents, parts, and
# a function's response: its output or error).
_TEXT_KEYS = (
    "text",
    "content",
    "input",
    "output",
    "messages",
    "contents",
    "parts",
    "functionResponse",
    "response",
    "error",
)


def _texts(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [t for n in node for t in _texts(n)]
    if isinstance(node, dict):
        out = []
        for key in _TEXT_KEYS:
            if key in node and not (key == "input" and node.get("type") == "tool_use"):
                out += _texts(node[key])
        return out
    return []


class ModelServer:
    def __init__(self):
        self.requests: list[Request] = []
        self.scripts: list[tuple[str, list[Turn]]] = []
        self.side_answer = "ok"
        self.chat_replies: list[ChatReply] = []
        self.token_delay = 0.0  # seconds between two streamed chat tokens
        self.chat_disconnects = 0  # chat streams whose client left before the end
        self.chat_streams_open = 0
        self.api_errors: list[ApiError] = []
        self.rate_limited = 0  # 429s sent by rate_limit()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="model-server", daemon=True)

    # lifecycle
    def start(self) -> ModelServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    # scripting
    def script(self, turns: list[Turn], when: str = "") -> None:
        """The answers for conversations whose first user message contains `when` (all, if empty).
        Later scripts are matched first."""
        with self.lock:
            self.scripts.insert(0, (when, list(turns)))

    def chat(self, answer: str = "ok", when: str = "", **options) -> ChatReply:
        """Script `POST /v1/chat/completions` (see ChatReply); later replies are matched first."""
        reply = ChatReply(answer=answer, when=when, **options)
        with self.lock:
            self.chat_replies.insert(0, reply)
        return reply

    def rate_limit(
        self, api: str, times: int | None = None, retry_after: str | None = "3", message: str = ""
    ) -> ApiError:
        """Answer the next `times` requests to `api` ("anthropic" or "openai") with a 429."""
        return self.api_error(api, 429, times, retry_after, message)

    def api_error(
        self, api: str, status: int, times: int | None = None, retry_after: str | None = None, message: str = ""
    ) -> ApiError:
        """Answer the next `times` requests to `api` with this error status and the API's error body."""
        error = ApiError(api, times, retry_after, status, message)
        with self.lock:
            self.api_errors.insert(0, error)
        return error

    def api_error_for(self, request: Request) -> ApiError | None:
        with self.lock:
            for error in self.api_errors:
                if error.api == request.api and (error.times is None or error.times > 0):
                    if error.times is not None:
                        error.times -= 1
                    self.rate_limited += error.status == 429
                    return error
        return None

    def chat_reply_for(self, request: Request) -> ChatReply:
        messages = (request.body or {}).get("messages") or [] if isinstance(request.body, dict) else []
        user = " ".join(str(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user")
        with self.lock:
            for reply in self.chat_replies:
                if reply.when in user and (reply.times is None or reply.times > 0):
                    if reply.times is not None:
                        reply.times -= 1
                    return reply
        return ChatReply(answer="(no script for this conversation)")

    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.api == "chat"]

    def agent_requests(self, api: str | None = None) -> list[Request]:
        """The requests of agent loops (tools offered), in order received."""
        return [r for r in self.requests if _offers_tools(r) and (api is None or r.api == api)]

    def gemini_turn_for(self, request: Request) -> Turn:
        """As turn_for; a side request that asks for JSON (Gemini CLI's model router) gets the
        router's answer: a simple task, so the router picks its flash model."""
        body = request.body if isinstance(request.body, dict) else {}
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
        if not _offers_tools(request) and "complexity_score" in (schema.get("properties") or {}):
            return text(json.dumps({"complexity_reasoning": "Scripted: a simple task.", "complexity_score": 10}))
        return self.turn_for(request)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def turn_for(self, request: Request) -> Turn:
        if not _offers_tools(request):
            return text(self.side_answer)
        first = request.first_user_text()
        with self.lock:
            turns = next((t for when, t in self.scripts if when in first), None)
        if not turns:
            return text("(no script for this conversation)")
        done = _assistant_turns(request)
        turn = turns[min(done, len(turns) - 1)]
        return turn(request) if callable(turn) else turn


def _offers_tools(request: Request) -> bool:
    return isinstance(request.body, dict) and bool(request.body.get("tools"))


def _assistant_turns(request: Request) -> int:
    body = request.body
    if request.api == "gemini":
        return sum(1 for c in body.get("contents") or [] if c.get("role") == "model")
    if request.api == "anthropic":
        return sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")
    items = body.get("input") or []
    if isinstance(items, str):
        return 0
    # A turn of the model is a run of items it produced (messages, calls, reasoning) between inputs.
    turns, in_model = 0, False
    for item in items:
        produced = isinstance(item, dict) and (
            item.get("role") == "assistant"
            or item.get("type") in ("function_call", "custom_tool_call", "reasoning", "local_shell_call")
        )
        if produced and not in_model:
            turns += 1
        in_model = produced
    return turns


# --- HTTP -----------------------------------------------------------------------------------


def _handler(server: ModelServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _read(self) -> Request:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding") == "gzip":
                with contextlib.suppress(OSError):
                    raw = gzip.decompress(raw)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Request(self.command, urlsplit(self.path).path, headers, body)
            with server.lock:
                server.requests.append(request)
            return request

        def do_GET(self):
            request = self._read()
            if request.path.endswith("/models"):
                self._json(200, _models_list(request))
            else:
                self._json(200, {})

        def do_HEAD(self):
            self._read()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            request = self._read()
            body = request.body if isinstance(request.body, dict) else {}
            error = None if request.path.startswith("/v1/messages/count_tokens") else server.api_error_for(request)
            if error is not None:
                extra = {"Retry-After": error.retry_after} if error.retry_after is not None else {}
                self._json(error.status, error_body(error.api, error.status, error.message, error.retry_after), extra)
            elif request.path.startswith("/v1/messages/count_tokens"):
                self._json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
            elif request.path.startswith("/v1/messages"):
                turn = server.turn_for(request)
                if body.get("stream"):
                    self._sse(_anthropic_events(server, request, turn))
                else:
                    self._json(200, _anthropic_message(server, request, turn))
            elif request.path.endswith("/responses"):
                self._sse(_responses_events(server, request, server.turn_for(request)), named=True)
            elif request.path.endswith("/chat/completions"):
                self._chat(request, body)
            elif request.path.endswith(":countTokens"):
                self._json(200, {"totalTokens": max(1, len(json.dumps(body)) // 4)})
            elif request.api == "gemini":
                responses = _gemini_responses(server, request, server.gemini_turn_for(request))
                if request.path.endswith(":streamGenerateContent"):
                    self._sse(((None, r) for r in responses), named=False)
                else:
                    self._json(200, _gemini_merged(list(responses)))
            else:
                self._json(200, {})

        def _chat(self, request: Request, body: dict) -> None:
            reply = server.chat_reply_for(request)
            if reply.status >= 400:
                extra = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
                self._json(reply.status, error_body("chat", reply.status), extra)
                return
            tokens = chat_tokens(reply.answer)
            model = body.get("model") or "scripted"
            prompt = reply.usage[0] if reply.usage else max(1, len(json.dumps(body.get("messages"))) // 4)
            completion = reply.usage[1] if reply.usage else len(tokens)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
            }
            if not body.get("stream"):
                self._json(200, _chat_completion(server, model, reply.answer, usage))
                return
            chunk_id = server.next_id("chatcmpl")
            # Each token goes out at once, as real servers send them (no Nagle wait for the client's ACK).
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def send(payload) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            def chunk(delta: dict, finish=None, **more) -> dict:
                return {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    **more,
                }

            with server.lock:
                server.chat_streams_open += 1
            try:
                send(chunk({"role": "assistant", "content": ""}))
                for i, token in enumerate(tokens):
                    if reply.cut_after is not None and i >= reply.cut_after:
                        return  # the connection closes: no finish, no [DONE]
                    if server.token_delay:
                        time.sleep(server.token_delay)
                    send(chunk({"content": token}))
                send(chunk({}, "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    send({**chunk({}), "choices": [], "usage": usage})
                send("[DONE]")
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                with server.lock:
                    server.chat_disconnects += 1
            finally:
                with server.lock:
                    server.chat_streams_open -= 1

        def _json(self, status: int, payload, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", server.next_id("req"))
            self.end_headers()
            self.wfile.write(data)

        def _sse(self, events, named: bool = True) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.send_header("request-id", server.next_id("req"))
            self.end_headers()
            self.close_connection = True
            for name, payload in events:
                chunk = (f"event: {name}\n" if named else "") + f"data: {json.dumps(payload)}\n\n"
                self.wfile.write(chunk.encode())
                self.wfile.flush()

    return Handler


def _models_list(request: Request) -> dict:
    if request.path.startswith("/v1/models") and "anthropic-version" in request.headers:
        return {"data": [{"type": "model", "id": MODEL, "display_name": "Scripted"}], "has_more": False}
    return {"object": "list", "data": [{"id": CODEX_MODEL, "object": "model", "owned_by": "scripted"}], "models": []}


def _chat_completion(server: ModelServer, model: str, answer: str, usage: dict) -> dict:
    return {
        "id": server.next_id("chatcmpl"),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": usage,
    }


def _usage_numbers(request: Request, turn: Turn) -> tuple[int, int]:
    said = len(turn.text) + len(json.dumps([c.input for c in turn.calls]))
    return max(1, len(json.dumps(request.body)) // 4), max(1, said // 4)


def ev(name: str, fields: dict | None = None) -> tuple[str, dict]:
    """A server-sent event: its name, and its data (which repeats the name as `type`)."""
    return name, {"type": name, **(fields or {})}


# --- Anthropic Messages ---------------------------------------------------------------------


def _chunks(s: str, n: int = 12) -> list[str]:
    return [s[i : i + n] for i in range(0, len(s), n)] or [""]


def _anthropic_blocks(server: ModelServer, turn: Turn) -> list[dict]:
    blocks = []
    if turn.text:
        blocks.append({"type": "text", "text": turn.text})
    for c in turn.calls:
        blocks.append({"type": "tool_use", "id": server.next_id("toolu"), "name": c.name, "input": c.input})
    return blocks


def _anthropic_message(server: ModelServer, request: Request, turn: Turn) -> dict:
    tokens_in, tokens_out = _usage_numbers(request, turn)
    return {
        "id": server.next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": (request.body or {}).get("model") or MODEL,
        "content": _anthropic_blocks(server, turn),
        "stop_reason": "tool_use" if turn.calls else "end_turn",
        "stop_sequence": None,
        # As if the start of the conversation were cached: half read from the cache, a tenth written.
        "usage": {
            "input_tokens": tokens_in - tokens_in // 2 - tokens_in // 10,
            "cache_creation_input_tokens": tokens_in // 10,
            "cache_read_input_tokens": tokens_in // 2,
            "output_tokens": tokens_out,
        },
    }


def _anthropic_events(server: ModelServer, request: Request, turn: Turn):
    message = _anthropic_message(server, request, turn)
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield ev("message_start", {"message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield ev("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            if index == 0:
                yield ev("ping")
            for piece in _chunks(block["text"]):
                yield ev("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
        else:
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                },
            )
            for piece in _chunks(json.dumps(block["input"]), 40):
                yield ev(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
        yield ev("content_block_stop", {"index": index})
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield ev("message_stop")


# --- OpenAI Responses -------------------------------------------------------------------------


def _codex_tool(request: Request, c: Call) -> Call:
    """Map the placeholders `$shell` and `$apply_patch` onto the tools this Codex offers."""
    offered = {}
    for t in (request.body or {}).get("tools") or []:
        name = t.get("name") or (t.get("function") or {}).get("name") or t.get("type")
        offered[name] = t
    if c.name == "$shell":
        for name in ("shell_command", "shell", "exec_command", "local_shell"):
            if name in offered:
                command = c.input["command"]
                args: dict[str, Any]
                if name == "shell":
                    args = {"command": ["bash", "-lc", command]}
                elif name == "exec_command":
                    args = {"cmd": command}
                else:
                    args = {"command": command}
                if "workdir" in c.input:
                    args["workdir"] = c.input["workdir"]
                return Call(name, args)
        raise AssertionError(f"this codex offers no shell tool: {sorted(offered)}")
    if c.name == "$apply_patch":
        tool = offered.get("apply_patch")
        if tool is None:  # as models do then: through the shell, which Codex intercepts
            heredoc = f"apply_patch <<'PATCH'\n{c.input['input'].rstrip()}\nPATCH\n"
            return _codex_tool(request, Call("$shell", {"command": heredoc}))
        if tool.get("type") == "custom":
            return Call("apply_patch", {"input": c.input["input"]}, kind="custom")
        return Call("apply_patch", {"input": c.input["input"]})
    return c


def _responses_events(server: ModelServer, request: Request, turn: Turn):
    body = request.body if isinstance(request.body, dict) else {}
    response_id = server.next_id("resp")
    model = body.get("model") or CODEX_MODEL
    base = {
        "id": response_id,
        "object": "response",
        "created_at": 1_700_000_000,
        "model": model,
        "status": "in_progress",
        "output": [],
    }
    yield ev("response.created", {"response": base})
    yield ev("response.in_progress", {"response": base})
    items = []
    index = 0
    if turn.text:
        item_id = server.next_id("msg")
        item = {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}
        yield ev("response.output_item.added", {"output_index": index, "item": item})
        part = {"type": "output_text", "text": "", "annotations": []}
        yield ev(
            "response.content_part.added", {"item_id": item_id, "output_index": index, "content_index": 0, "part": part}
        )
        for piece in _chunks(turn.text):
            yield ev(
                "response.output_text.delta",
                {"item_id": item_id, "output_index": index, "content_index": 0, "delta": piece},
            )
        yield ev(
            "response.output_text.done",
            {"item_id": item_id, "output_index": index, "content_index": 0, "text": turn.text},
        )
        done_part = {**part, "text": turn.text}
        yield ev(
            "response.content_part.done",
            {"item_id": item_id, "output_index": index, "content_index": 0, "part": done_part},
        )
        item = {**item, "status": "completed", "content": [done_part]}
        yield ev("response.output_item.done", {"output_index": index, "item": item})
        items.append(item)
        index += 1
    for c in turn.calls:
        c = _codex_tool(request, c)
        call_id = server.next_id("call")
        if c.kind == "custom":
            item = {
                "type": "custom_tool_call",
                "id": server.next_id("ctc"),
                "call_id": call_id,
                "name": c.name,
                "input": "",
                "status": "in_progress",
            }
            yield ev("response.output_item.added", {"output_index": index, "item": item})
            yield ev(
                "response.custom_tool_call_input.delta",
                {"item_id": item["id"], "output_index": index, "delta": c.input["input"]},
            )
            item = {**item, "input": c.input["input"], "status": "completed"}
        else:
            arguments = json.dumps(c.input)
            item = {
                "type": "function_call",
                "id": server.next_id("fc"),
                "call_id": call_id,
                "name": c.name,
                "arguments": "",
                "status": "in_progress",
            }
            yield ev("response.output_item.added", {"output_index": index, "item": item})
            yield ev(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": index, "delta": arguments},
            )
            yield ev(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": arguments},
            )
            item = {**item, "arguments": arguments, "status": "completed"}
        yield ev("response.output_item.done", {"output_index": index, "item": item})
        items.append(item)
        index += 1
    tokens_in, tokens_out = _usage_numbers(request, turn)
    usage = {
        "input_tokens": tokens_in,
        "input_tokens_details": {"cached_tokens": tokens_in // 2},
        "output_tokens": tokens_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tokens_in + tokens_out,
    }
    yield ev("response.completed", {"response": {**base, "status": "completed", "output": items, "usage": usage}})


# --- Gemini API -------------------------------------------------------------------------------


def _gemini_model(request: Request) -> str:
    found = re.search(r"/models/([^/:]+):", request.path)
    return found.group(1) if found else GEMINI_MODEL


def _gemini_responses(server: ModelServer, request: Request, turn: Turn):
    """The stream of GenerateContentResponse chunks: the text in pieces, then the function calls,
    the last chunk with the finish reason and the usage: half the prompt as if read from the cache,
    and as many thinking tokens as answer tokens (counted apart from the candidates, as Gemini does)."""
    model = _gemini_model(request)
    response_id = server.next_id("gemresp")
    tokens_in, tokens_out = _usage_numbers(request, turn)
    cached = tokens_in // 2
    usage = {
        "promptTokenCount": tokens_in,
        "candidatesTokenCount": tokens_out,
        "thoughtsTokenCount": tokens_out,
        "totalTokenCount": tokens_in + 2 * tokens_out,
        "cachedContentTokenCount": cached,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens_in}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": cached}],
    }
    parts = [{"text": piece} for piece in _chunks(turn.text, 24)] if turn.text else []
    parts += [{"functionCall": {"name": c.name, "args": c.input}} for c in turn.calls]
    parts = parts or [{"text": ""}]
    for i, part in enumerate(parts):
        chunk = {
            "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
            "modelVersion": model,
            "responseId": response_id,
        }
        if i == len(parts) - 1:
            chunk["candidates"][0]["finishReason"] = "STOP"
            chunk["usageMetadata"] = usage
        else:
            chunk["usageMetadata"] = {"promptTokenCount": tokens_in, "totalTokenCount": tokens_in}
        yield chunk


def _gemini_merged(chunks: list[dict]) -> dict:
    """The chunks as `:generateContent` answers them: one response, its text parts joined."""
    parts: list[dict] = []
    for chunk in chunks:
        for part in chunk["candidates"][0]["content"]["parts"]:
            if "text" in part and parts and "text" in parts[-1]:
                parts[-1] = {"text": parts[-1]["text"] + part["text"]}
            else:
                parts.append(part)
    last = chunks[-1]
    candidate = {**last["candidates"][0], "content": {"role": "model", "parts": parts}}
    return {**last, "candidates": [candidate]}
