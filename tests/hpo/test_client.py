"""hpo.client against a real HTTP server that answers what the test scripts: retries, errors,
NaN in a body, the token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hpo.client import ApiError, Client, ServerUnreachable
from trainer.client import WorkerClient


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next (status, headers, body) of `answers` and records
    (method, path, headers, body) of every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, headers, answer = self.server.answers.pop(0)
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[Scripted]:
    httpd = Scripted()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_an_overloaded_server_is_retried_as_it_asks(server: Scripted) -> None:
    server.answers = [
        (503, {"Retry-After": "0"}, {"detail": "busy"}),
        (502, {"Retry-After": "0"}, {"detail": "proxy"}),
        (200, {}, {"status": "ok"}),
    ]
    client = Client(server.url + "/", token="user-token", retry_seconds=10)
    assert client.health() == {"status": "ok"}
    assert [(m, p) for m, p, _, _ in server.seen] == [("GET", "/healthz")] * 3
    assert server.seen[0][2]["Authorization"] == "Bearer user-token"
    client.close()


def test_an_error_answer_carries_the_servers_detail(server: Scripted) -> None:
    detail = [{"loc": ["body", "space", "lr", "high"], "msg": "must be greater than low"}]
    server.answers = [(422, {}, {"detail": detail})]
    client = Client(server.url)
    with pytest.raises(ApiError) as raised:
        client.create_study({"name": "x"})
    assert raised.value.status == 422
    assert str(raised.value) == "422: space.lr.high: must be greater than low"
    client.close()


def test_a_server_that_keeps_refusing_is_unreachable_after_the_retry_window(
    server: Scripted,
) -> None:
    server.answers = [(503, {"Retry-After": "0.3"}, {"detail": "busy"})] * 10
    client = Client(server.url, retry_seconds=0.5)
    with pytest.raises(ServerUnreachable, match="server answered 503"):
        client.study(1)
    client.close()


def test_a_report_with_nan_reaches_the_server_and_its_decision_comes_back_typed(
    server: Scripted,
) -> None:
    server.answers = [(200, {}, {"decision": "prune"})]
    client = WorkerClient(server.url)
    decision = client.report(3, 7, "lease-token", 2, {"val_loss": float("nan"), "lr": 0.1})
    assert decision.ends_training() and decision.value == "prune"
    method, path, _, body = server.seen[0]
    assert (method, path) == ("POST", "/api/v1/workers/3/trials/7/report")
    assert body == b'{"token": "lease-token", "epoch": 2, "metrics": {"val_loss": NaN, "lr": 0.1}}'
    client.close()
