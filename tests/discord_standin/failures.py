"""Failures a test injects (``StandIn.fail_next``): the next matching requests are answered with them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .records import Call


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int


class Failures:
    def __init__(self) -> None:
        self._pending: list[_Failure] = []

    def add(self, method: str, path_pattern: str, *, status: int, body: Any, times: int, retry_after: float) -> None:
        if body is None:
            body = {"message": f"{status}: injected failure", "code": 0}
            if status == 429:
                body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        headers = {"Via": "1.1 google", "Retry-After": str(retry_after)} if status == 429 else {}
        self._pending.append(_Failure(method.upper(), re.compile(path_pattern), status, body, headers, times))

    def take(self, call: Call) -> tuple[tuple[int, Any], dict[str, str]] | None:
        for failure in self._pending:
            if failure.method == call.method and failure.pattern.search(call.path):
                failure.times -= 1
                if failure.times <= 0:
                    self._pending.remove(failure)
                return (failure.status, failure.body), failure.headers
        return None
