"""The HTTP client of the hpo server: the one module that knows its URLs.

Workers use the protocol methods; `hpo submit` and `hpo demo` use the study methods. Transient
trouble (connection refused or reset, 502/503/504) is retried with exponential backoff, honouring
`Retry-After`; anything else raises `ApiError` with the server's `detail`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
RETRY_STATUS = {502, 503, 504}


class ServerUnreachable(Exception):
    """The server did not answer within the retry window."""


class ApiError(Exception):
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


class Client:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        timeout: float = 30.0,
        retry_seconds: float = 60.0,
    ) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        self.retry_seconds = retry_seconds

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            # json.dumps, not httpx's encoder: a NaN metric must still reach the server
            # (its parser accepts NaN and Infinity) instead of failing the report here.
            kwargs["content"] = json.dumps(body).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        response = self._retrying(lambda: self._http.request(method, path, **kwargs))
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _retrying(self, send: Callable[[], httpx.Response]) -> httpx.Response:
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

    # -- users ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/healthz")
        return result

    def create_study(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/api/v1/studies", body=spec)
        return result

    def study(self, study_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/studies/{study_id}")
        return result

    def studies(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/studies")
        return result

    def trials(self, study_id: int, limit: int = 100, after: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        result: dict[str, Any] = self._call(
            "GET", f"/api/v1/studies/{study_id}/trials", params=params
        )
        return result

    def trial(self, trial_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/v1/trials/{trial_id}")
        return result

    def stop_study(self, study_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/api/v1/studies/{study_id}/stop")
        return result

    def workers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/workers")
        return result

    # -- workers ----------------------------------------------------------------------------

    def register(
        self, name: str, host: str, pid: int, device: str, capabilities: dict[str, list[str]]
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "host": host,
            "pid": pid,
            "device": device,
            "capabilities": capabilities,
        }
        result: dict[str, Any] = self._call("POST", "/api/v1/workers/register", body=body)
        return result

    def deregister(self, worker_id: int) -> None:
        self._call("POST", f"/api/v1/workers/{worker_id}/deregister")

    def lease(
        self, worker_id: int, count: int = 1, held: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """Up to `count` trials. `held`: the trials this worker trains now (see the server's
        LeaseRequest); a worker that leases only when idle passes []."""
        body: dict[str, Any] = {"count": count}
        if held is not None:
            body["held"] = held
        result = self._call("POST", f"/api/v1/workers/{worker_id}/lease", body=body)
        assignments: list[dict[str, Any]] = result["assignments"]
        return assignments

    def heartbeat(self, worker_id: int, leases: list[tuple[int, str]]) -> dict[int, str]:
        body = {"leases": [{"trial_id": t, "token": tok} for t, tok in leases]}
        result = self._call("POST", f"/api/v1/workers/{worker_id}/heartbeat", body=body)
        return {d["trial_id"]: d["decision"] for d in result["decisions"]}

    def _trial_call(self, worker_id: int, trial_id: int, action: str, body: dict) -> Any:
        return self._call(
            "POST", f"/api/v1/workers/{worker_id}/trials/{trial_id}/{action}", body=body
        )

    def report(
        self, worker_id: int, trial_id: int, token: str, epoch: int, metrics: dict[str, float]
    ) -> str:
        body = {"token": token, "epoch": epoch, "metrics": metrics}
        decision: str = self._trial_call(worker_id, trial_id, "report", body)["decision"]
        return decision

    def complete(
        self,
        worker_id: int,
        trial_id: int,
        token: str,
        lease: int = 0,
        held: list[int] | None = None,
    ) -> dict[str, Any]:
        """The completed trial; with `lease` above 0 its `assignments` are the worker's next
        trials, leased in the same request (`held` as for `lease`)."""
        body: dict[str, Any] = {"token": token, "lease": lease}
        if held is not None:
            body["held"] = held
        result: dict[str, Any] = self._trial_call(worker_id, trial_id, "complete", body)
        return result

    def fail(self, worker_id: int, trial_id: int, token: str, reason: str) -> dict[str, Any]:
        result: dict[str, Any] = self._trial_call(
            worker_id, trial_id, "fail", {"token": token, "reason": reason}
        )
        return result

    def save_checkpoint(
        self, worker_id: int, trial_id: int, token: str, epoch: int, blob: bytes
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PUT",
            f"/api/v1/workers/{worker_id}/trials/{trial_id}/checkpoint",
            params={"epoch": epoch},
            content=blob,
            headers={"X-Lease-Token": token, "Content-Type": "application/octet-stream"},
        )
        return result

    def load_checkpoint(
        self, worker_id: int, trial_id: int, token: str, checkpoint_id: str
    ) -> bytes:
        path = f"/api/v1/workers/{worker_id}/trials/{trial_id}/checkpoints/{checkpoint_id}"
        response = self._retrying(lambda: self._http.get(path, headers={"X-Lease-Token": token}))
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        return response.content

    def release(self, worker_id: int, trial_id: int, token: str) -> dict[str, Any]:
        result: dict[str, Any] = self._trial_call(worker_id, trial_id, "release", {"token": token})
        return result
