"""A small synchronous client for the Forgeline HTTP API (used by the CLI and scripts)."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """A problem+json answer (or a transport failure) turned into one readable message."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []

    def __str__(self) -> str:
        lines = [f"HTTP {self.status}: {self.detail}" if self.status else self.detail]
        for error in self.errors:
            location = ".".join(str(part) for part in error.get("loc", []))
            lines.append(f"  {location}: {error.get('msg', '')}")
        return "\n".join(lines)


class ForgelineClient:
    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 30.0) -> None:
        headers = {"User-Agent": "forgeline-cli"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> ForgelineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"Cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500]}
            raise ApiError(
                response.status_code,
                str(problem.get("detail") or response.reason_phrase),
                problem.get("errors"),
            )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, json=body)

    def paginate(self, path: str, *, limit: int = 100, **params: Any) -> list[dict[str, Any]]:
        """Every item of a keyset-paginated list, following next_cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items
