"""A small HTTP client of the hpo server for people and scripts: create a study, follow it.

`Connection` is the plumbing every client of the server shares (the worker's protocol client
in trainer/client.py is one too): the bearer token, JSON bodies that may hold NaN, and
retries. Transient trouble (connection refused or reset, 502/503/504) is retried with
exponential backoff, honouring `Retry-After`, for up to `retry_seconds`; then
`ServerUnreachable` is raised. Any other error answer raises `ApiError` with the server's
`detail`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import httpx

from hpo.config import RETRY_SECONDS

RETRY_STATUS = {502, 503, 504}


class ServerUnreachable(Exception):
    """The server did not answer within the retry window."""


class ApiError(Exception):
    """The server answered with an error status; `detail` is its `detail` field."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {format_detail(detail)}")
        self.status = status
        self.detail = detail


def format_detail(detail: Any) -> str:
    """A server `detail` as text: validation errors become `field.path: reason` lines."""
    if isinstance(detail, list):
        lines = []
        for err in detail:
            if isinstance(err, dict):
                loc = [str(p) for p in err.get("loc", []) if p != "body"]
                lines.append(f"{'.'.join(loc) or 'spec'}: {err.get('msg', err)}")
            else:
                lines.append(str(err))
        return "\n".join(lines)
    return str(detail)


def _detail_of(response: httpx.Response) -> Any:
    """The `detail` of an error answer, or its text when it is not the API's JSON."""
    try:
        return response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text


class Connection:
    """One server's HTTP session: its address, the token, retries, and errors as ApiError."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        timeout: float = 30.0,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        self.retry_seconds = retry_seconds

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """The decoded JSON answer (None for an empty one); `body` is sent as JSON."""
        if body is not None:
            # json.dumps, not httpx's encoder: a NaN metric must still reach the server
            # (its parser accepts NaN and Infinity) instead of failing the report here.
            kwargs["content"] = json.dumps(body).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        response = self.retrying(lambda: self._http.request(method, path, **kwargs))
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail_of(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def json_object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """`call` for an answer that is a JSON object."""
        answer: dict[str, Any] = self.call(method, path, **kwargs)
        return answer

    def json_list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        """`call` for an answer that is a JSON list of objects."""
        answer: list[dict[str, Any]] = self.call(method, path, **kwargs)
        return answer

    def download(self, path: str, headers: dict[str, str]) -> bytes:
        """The raw bytes of a GET answer."""
        response = self.retrying(lambda: self._http.get(path, headers=headers))
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        return response.content

    def save(self, path: str, out: BinaryIO) -> int:
        """Stream a GET answer's body into `out` as it arrives; returns the bytes written."""

        def send() -> httpx.Response:
            response = self._http.send(self._http.build_request("GET", path), stream=True)
            if response.status_code in RETRY_STATUS or response.status_code >= 400:
                response.read()  # a small error body; closes the response
            return response

        response = self.retrying(send)
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail_of(response))
        size = 0
        try:
            for chunk in response.iter_bytes():
                out.write(chunk)
                size += len(chunk)
        finally:
            response.close()
        return size

    def retrying(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        """`send()`'s response, retried while the server is unreachable or overloaded."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                response = send()
                if response.status_code not in RETRY_STATUS:
                    return response
                wait = float(response.headers.get("Retry-After", delay))
                problem = f"server answered {response.status_code}"
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                wait, problem = delay, f"{type(exc).__name__}: {exc}"
            if time.monotonic() + wait > deadline:
                raise ServerUnreachable(f"cannot reach the hpo server at {self.server} ({problem})")
            time.sleep(wait * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 5.0)


class Client(Connection):
    """What `hpo submit`, `hpo demo` and a script need of the REST API. Answers are the
    server's JSON as documented in DESIGN.md."""

    def health(self) -> dict[str, Any]:
        return self.json_object("GET", "/healthz")

    def create_study(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.json_object("POST", "/api/v1/studies", body=spec)

    def study(self, study_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/api/v1/studies/{study_id}")

    def studies(self) -> list[dict[str, Any]]:
        return self.json_list("GET", "/api/v1/studies")

    def trials(self, study_id: int, limit: int = 100, after: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self.json_object("GET", f"/api/v1/studies/{study_id}/trials", params=params)

    def trial(self, trial_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/api/v1/trials/{trial_id}")

    def stop_study(self, study_id: int) -> dict[str, Any]:
        return self.json_object("POST", f"/api/v1/studies/{study_id}/stop")

    def workers(self) -> list[dict[str, Any]]:
        return self.json_list("GET", "/api/v1/workers")

    def find_study(self, id_or_name: int | str) -> dict[str, Any]:
        """The study with this id (an int or a string of digits) or else this name.
        Raises ApiError 404 when there is none."""
        if isinstance(id_or_name, int) or str(id_or_name).isdigit():
            return self.study(int(id_or_name))
        for study in self.studies():
            if study["name"] == id_or_name:
                return study
        raise ApiError(404, f"no study named '{id_or_name}'")

    def export(self, study_id: int, fmt: str, out: BinaryIO) -> int:
        """Write the study's trials as `csv` or `jsonl` into `out`; returns the bytes written."""
        return self.save(f"/api/v1/studies/{study_id}/trials.{fmt}", out)
