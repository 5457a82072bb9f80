"""The daemon's HTTP API (SPEC 6.2, 6.4) as replay and load read it.

Lists are newest first with a `next` cursor; a run only cares about what
arrived after it started, so every reader takes a watermark (the newest
`seq`/`id` before the run) and stops paging once it passes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp

PAGE = 1000


class ApiError(Exception):
    pass


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=60)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with Api(...)`")
        return self._session

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with self.session.get(self.url + path, params=query) as resp:
            if resp.status != 200:
                raise ApiError(f"GET {path}: {resp.status} {(await resp.text())[:200]}")
            return await resp.json()

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def since(self, path: str, key: str, mark: int, **params: Any) -> AsyncIterator[Any]:
        after: str | None = None
        while True:
            page = await self.get(path, limit=PAGE, after=after, **params)
            for item in page["items"]:
                if int(item[key]) <= mark:
                    return
                yield item
            after = page.get("next")
            if not after:
                return

    async def newest(self, path: str, key: str) -> int:
        page = await self.get(path, limit=1)
        return int(page["items"][0][key]) if page["items"] else 0

    async def marks(self, quarantine: bool = True) -> dict[str, int]:
        """Watermarks of alarms, incidents and (admin only) quarantine."""
        out = {
            "alarms": await self.newest("/api/v1/alarms", "seq"),
            "incidents": await self.newest("/api/v1/incidents", "id"),
        }
        if quarantine:
            # Not an admin token: no quarantine watermark, its checks are skipped.
            with contextlib.suppress(ApiError):
                out["quarantine"] = await self.newest("/api/v1/quarantine", "seq")
        return out

    async def alarms_since(self, mark: int) -> list[Any]:
        return [a async for a in self.since("/api/v1/alarms", "seq", mark)]

    async def incidents_since(self, mark: int) -> list[Any]:
        return [i async for i in self.since("/api/v1/incidents", "id", mark)]

    async def quarantine_since(self, mark: int) -> list[Any]:
        return [q async for q in self.since("/api/v1/quarantine", "seq", mark)]

    async def incident(self, incident: int) -> Any:
        return await self.get(f"/api/v1/incidents/{incident}")

    async def set_clock(self, when: datetime) -> None:
        status, body = await self.post("/api/v1/clock", {"set": when.isoformat()})
        if status != 200:
            raise ApiError(f"POST /api/v1/clock: {status} {body}")
