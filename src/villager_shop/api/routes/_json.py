"""Answer with JSON text PostgreSQL built (no parse/serialize round trip in Python)."""

from __future__ import annotations

from fastapi import Response


def raw_json(body: bytes, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status_code, media_type="application/json", headers=headers)
