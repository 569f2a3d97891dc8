"""The HTTP client of the hpo server for people, notebooks and scripts (`hpo.Client`).

`Connection` is the plumbing every client of the server shares (the worker's protocol client
in trainer/client.py is one too): the bearer token, JSON bodies that may hold NaN, and
retries. Transient trouble (connection refused or reset, 502/503/504) is retried with
exponential backoff, honouring `Retry-After`, for up to `retry_seconds`; then
`ServerUnreachable` is raised. Any other error answer raises `ApiError` with the server's
`detail`.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx

from hpo.config import RETRY_SECONDS

if TYPE_CHECKING:
    from hpo.study import Study

RETRY_STATUS = {502, 503, 504}
SPEC_SUFFIXES = {".yaml", ".yml", ".json"}


class ServerUnreachable(Exception):
    """The server did not answer within the retry window."""


class ApiError(Exception):
    """The server answered with an error status. `detail` is its `detail` field; `field`
    (`"space.lr.high"`, None when the error is not about one field) and `reason` are its
    first error's, and `errors` lists every `(field, reason)`."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {format_detail(detail)}")
        self.status = status
        self.detail = detail
        self.errors = field_errors(detail)
        self.field, self.reason = self.errors[0] if self.errors else (None, str(detail))


def field_errors(detail: Any) -> list[tuple[str | None, str]]:
    """`(field, reason)` of each error in a server `detail` (a message: one, with no field)."""
    if not isinstance(detail, list):
        return [(None, str(detail))]
    errors: list[tuple[str | None, str]] = []
    for err in detail:
        if isinstance(err, dict):
            loc = [str(p) for p in err.get("loc", []) if p not in ("body", "query", "path")]
            errors.append((".".join(loc) or None, str(err.get("msg", err))))
        else:
            errors.append((None, str(err)))
    return errors


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
        """`send()`'s response, retried while the server is unreachable or overloaded, for
        `retry_seconds` from the first try: read at every retry, so a call already retrying
        gives up sooner when it is lowered meanwhile (a worker that is leaving)."""
        started = time.monotonic()
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
            if time.monotonic() + wait > started + self.retry_seconds:
                raise ServerUnreachable(f"cannot reach the hpo server at {self.server} ({problem})")
            time.sleep(wait * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 5.0)


class Client(Connection):
    """The REST API for people, notebooks and scripts: `Client(url, token=None)`.

    `create_study` and `study` return a `hpo.study.Study`; the `*_json` calls return the
    server's JSON as documented in DESIGN.md. Every error answer raises `ApiError` with the
    server's `status`, `field` and `reason`; an unreachable server `ServerUnreachable`."""

    def health(self) -> dict[str, Any]:
        return self.json_object("GET", "/healthz")

    def create_study(self, spec: dict[str, Any] | str | Path) -> Study:
        """Create a study from a spec: a mapping, a path to a YAML or JSON file, or the text of
        one. Raises ApiError (409: the name is taken; 422: `field` names what is invalid)."""
        from hpo.study import Study

        if isinstance(spec, dict):
            data = self.json_object("POST", "/api/v1/studies", body=spec)
        else:
            text = _spec_text(spec)
            data = self.json_object(
                "POST",
                "/api/v1/studies",
                content=text.encode(),
                headers={"Content-Type": "application/yaml"},  # JSON is YAML too
            )
        return Study(self, data)

    def study(self, id_or_name: int | str) -> Study:
        """The study with this id (an int, or a string of digits) or else this name.
        Raises ApiError 404 when there is none."""
        from hpo.study import Study

        if isinstance(id_or_name, int) or str(id_or_name).isdigit():
            return Study(self, self.study_json(int(id_or_name)))
        for study in self.studies():
            if study.name == id_or_name:
                return study
        raise ApiError(404, f"no study named '{id_or_name}'")

    def studies(self) -> list[Study]:
        """Every study, newest first."""
        from hpo.study import Study

        return [Study(self, data) for data in self.json_list("GET", "/api/v1/studies")]

    def study_json(self, study_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/api/v1/studies/{study_id}")

    def trials_page(
        self, study_id: int, limit: int = 100, after: int | None = None
    ) -> dict[str, Any]:
        """One page of trials, `{items, next}`; pass `next` as `after` for the next page."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self.json_object("GET", f"/api/v1/studies/{study_id}/trials", params=params)

    def trial_json(self, trial_id: int) -> dict[str, Any]:
        return self.json_object("GET", f"/api/v1/trials/{trial_id}")

    def model_bytes(self, trial_id: int) -> bytes:
        """The trial's kept model file (`hpo.load_model` reads it). Raises ApiError 404 with
        the reason when none is kept."""
        out = io.BytesIO()
        self.save(f"/api/v1/trials/{trial_id}/model", out)
        return out.getvalue()

    def workers(self) -> list[dict[str, Any]]:
        return self.json_list("GET", "/api/v1/workers")

    def export(self, study_id: int, fmt: str, out: BinaryIO) -> int:
        """Write the study's trials as `csv` or `jsonl` into `out`; returns the bytes written."""
        return self.save(f"/api/v1/studies/{study_id}/trials.{fmt}", out)


def _spec_text(spec: str | Path) -> str:
    """The text of a spec given as a file path or as the text itself."""
    if isinstance(spec, Path) or ("\n" not in spec and Path(spec).suffix in SPEC_SUFFIXES):
        try:
            return Path(spec).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read the spec {spec}: {exc.strerror or exc}") from exc
    return spec
