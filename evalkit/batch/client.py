"""The Batch API's calls: upload a file, create, read, find and cancel a batch, download.

Why a client of its own: these are a few slow calls minutes apart, not the hot path, so they
go through httpx's plain client (multipart upload, streamed download) with the retry policy
of a request (`execution.retry`: 429 with its Retry-After, 5xx, dropped connections). What
fails for good is a `ProviderError` with the server's message, the key scrubbed from it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from evalkit.execution.retry import with_retries
from evalkit.providers import ProviderError
from evalkit.providers.failures import http_error, transport_error
from evalkit.providers.scrub import Scrubber

T = TypeVar("T")
COMPLETION_WINDOW = "24h"  # the only window the API offers


class BatchClient:
    """The Batch API of one base URL and key."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        headers: Sequence[tuple[str, str]] = (),
        query: str = "",
        secrets: Sequence[str] = (),
        max_attempts: int = 8,
        retry_initial_s: float = 0.5,
        timeout_s: float = 600.0,
    ) -> None:
        sent = dict(headers)
        if api_key and api_key.strip():
            sent["authorization"] = f"Bearer {api_key.strip()}"
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=sent,
            params=httpx.QueryParams(query),
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0)),
            trust_env=True,
        )
        self._scrub = Scrubber(api_key, secrets)
        self._attempts = max_attempts
        self._initial_s = retry_initial_s

    async def aclose(self) -> None:
        await self._http.aclose()

    async def upload(self, path: Path) -> str:
        """The id of `path` uploaded with purpose `batch`."""

        async def send() -> httpx.Response:
            with path.open("rb") as data:
                files = {"file": (path.name, data, "application/jsonl")}
                return await self._http.post("files", data={"purpose": "batch"}, files=files)

        return str((await self._json(send))["id"])

    async def create(self, file_id: str, endpoint: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": COMPLETION_WINDOW,
            "metadata": metadata,
        }
        return await self._json(lambda: self._http.post("batches", json=body))

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self._json(lambda: self._http.get(f"batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._json(lambda: self._http.post(f"batches/{batch_id}/cancel"))

    async def find(self, file_id: str) -> dict[str, Any] | None:
        """The batch made from `file_id`, if one was (a run killed between creating a batch
        and writing its id down finds it here instead of paying for it twice)."""
        after: str | None = None
        while True:
            params = {"limit": "100", **({"after": after} if after else {})}
            page = await self._json(functools.partial(self._http.get, "batches", params=params))
            batches = page.get("data") or []
            for batch in batches:
                if isinstance(batch, dict) and batch.get("input_file_id") == file_id:
                    return batch
            if not page.get("has_more") or not batches:
                return None
            after = str(batches[-1].get("id"))

    async def download(self, file_id: str, path: Path) -> None:
        """A file's content into `path` (written whole, or not at all)."""

        async def fetch() -> None:
            partial = path.with_suffix(".part")
            async with self._http.stream("GET", f"files/{file_id}/content") as response:
                if response.status_code != 200:
                    raise http_error(response.status_code, await response.aread(), response.headers)
                with partial.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
            partial.replace(path)

        await self._call(fetch)

    async def _json(self, send: Callable[[], Awaitable[httpx.Response]]) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            response = await send()
            if response.status_code != 200:
                raise http_error(response.status_code, response.content, response.headers)
            try:
                payload = response.json()
            except ValueError:
                raise ProviderError(
                    "bad_response", "the Batch API answered with no JSON", retryable=True
                ) from None
            if not isinstance(payload, dict):
                raise ProviderError(
                    "bad_response", f"unexpected answer: {json.dumps(payload)[:200]}"
                )
            return payload

        return await self._call(call)

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                return await call()
            except (httpx.TransportError, OSError) as exc:
                raise transport_error(exc) from None

        outcome, _ = await with_retries(attempt, self._attempts, self._initial_s)
        if isinstance(outcome, ProviderError):
            raise self._scrub.error(outcome)
        return outcome
