"""The remote CLI's client on its own: where its token comes from (SPAWNER_TOKEN, the config file
and its permissions), and following a batch by polling when a server refuses the event stream."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spawner import remote

URL = "https://spawner.example.com"


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    monkeypatch.delenv("SPAWNER_TOKEN", raising=False)
    monkeypatch.setenv("SPAWNER_CONFIG", str(path))
    return path


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    path.chmod(mode)


def test_the_token_comes_from_the_servers_entry(config):
    write(config, f'[servers."{URL}/"]\ntoken = "spn_file"\n[servers."http://other"]\ntoken = "spn_other"\n')
    assert remote.token_for(URL) == ("spn_file", str(config))
    assert remote.token_for(URL.upper() + "/") == ("spn_file", str(config))
    assert remote.token_for("http://third") == ("", "")


def test_the_environment_wins(config, monkeypatch):
    write(config, f'[servers."{URL}"]\ntoken = "spn_file"\n', mode=0o644)  # not even read
    monkeypatch.setenv("SPAWNER_TOKEN", "spn_env")
    assert remote.token_for(URL) == ("spn_env", "SPAWNER_TOKEN")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640, 0o620])
def test_a_file_others_may_read_or_change_is_refused(config, mode):
    write(config, f'[servers."{URL}"]\ntoken = "spn_file"\n', mode=mode)
    with pytest.raises(remote.RemoteError, match=f"others may read or change it .*chmod 600 {config}"):
        remote.token_for(URL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("servers = [", "not valid TOML"),
        ('servers = "x"', "must be a table"),
        (f'[servers."{URL}"]\nname = "no token"\n', "has no token"),
    ],
)
def test_a_bad_file_says_what_is_wrong(config, text, message):
    write(config, text)
    with pytest.raises(remote.RemoteError, match=message):
        remote.token_for(URL)


def test_a_missing_file_named_by_spawner_config_is_an_error(config, monkeypatch, tmp_path):
    with pytest.raises(remote.RemoteError, match="does not exist"):
        remote.token_for(URL)
    monkeypatch.delenv("SPAWNER_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert remote.config_path() == tmp_path / "xdg" / "spawner" / "config.toml"
    assert remote.token_for(URL) == ("", "")  # the default place, absent: no token, no error


def test_read_events_parses_server_sent_events():
    lines = ["retry: 2000", "", ": keep-alive", "", "id: 7", "event: run.running", 'data: {"a":', "data: 1}", "", "x"]
    events = list(remote.read_events(lines))
    assert [(e.id, e.name, e.data) for e in events] == [(7, "run.running", '{"a":\n1}')]


class OldServer(BaseHTTPRequestHandler):
    """A server without the event stream: its batch runs, then ends, as three polls see it."""

    polls = 0
    asked: list[str] = []

    def do_GET(self):  # noqa: N802  (http.server's name)
        OldServer.asked.append(self.path)
        if self.path.endswith("/events"):
            return self.answer(404, {"detail": "no API endpoint at " + self.path}, "application/problem+json")
        OldServer.polls += 1
        status = "running" if OldServer.polls < 3 else "succeeded"
        run = {"id": 1, "key": "a", "status": status, "attempts": 1}
        return self.answer(200, {"id": 5, "name": "old", "status": status, "runs": [run]}, "application/json")

    def answer(self, code: int, body: dict, media: str):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_refused_stream_falls_back_to_polling(monkeypatch):
    monkeypatch.setattr(remote, "POLL_FIRST_SECONDS", 0.05)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), OldServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client = remote.Remote(f"http://127.0.0.1:{httpd.server_address[1]}", "spn_x")
    try:
        seen = []
        done = client.follow(5, on_change=lambda d: seen.append(d["status"]))
    finally:
        client.close()
        httpd.shutdown()
        thread.join(timeout=10)
    assert done["status"] == "succeeded" and seen == ["running", "succeeded"]
    assert OldServer.asked[0] == "/api/batches/5/events" and OldServer.asked.count("/api/batches/5") == 3


def test_a_change_without_a_key_is_not_sent_again_once_it_reached_the_server(monkeypatch):
    """A template's launch whose answer is lost may have launched a batch: never twice. A launch
    with its Idempotency-Key, a read, or a request that never connected are tried again."""
    import httpx

    monkeypatch.setattr(remote.time, "sleep", lambda _s: None)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, request.headers.get("Idempotency-Key")))
        if len(calls) % 2:  # every first try: the server took it, the answer never came
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(201, json={"id": 7})

    server = remote.Remote(URL, "spn_x")
    server.client = httpx.Client(base_url=URL + "/api", transport=httpx.MockTransport(handler))
    with pytest.raises(remote.RemoteError, match="it may have been done; look before trying again"):
        server.post("/templates/3/launch", {"variables": {}})
    assert calls == [("POST", "/api/templates/3/launch", None)]
    calls.clear()
    assert server.launch("name: x") == {"id": 7}  # keyed: the second try is the same launch
    assert [c[2] for c in calls] == [calls[0][2]] * 2 and calls[0][2].startswith("spawn-")
    calls.clear()
    assert server.get("/batches/7") == {"id": 7}
    assert len(calls) == 2

    def refused(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"ok": True})

    calls.clear()
    server.client = httpx.Client(base_url=URL + "/api", transport=httpx.MockTransport(refused))
    assert server.post("/batches/7/cancel") == {"ok": True}  # it never reached the server: sent again
