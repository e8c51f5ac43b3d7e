"""The interface through which the node records security-relevant actions."""

from __future__ import annotations

from typing import Any, Protocol


class AuditSink(Protocol):
    async def record(
        self, *, action: str, actor: str, target: str, details: dict[str, Any]
    ) -> None:
        """Append one record; raises if it could not be written."""
