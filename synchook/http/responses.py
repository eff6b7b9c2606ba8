from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


def ok(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"data": data}, status_code=status, headers=headers)


def page(items: list[Any], next_cursor: str | None, *, status: int = 200) -> JSONResponse:
    return JSONResponse({"data": items, "next_cursor": next_cursor}, status_code=status)


def error_body(code: str, message: str, request_id: str, *, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if field is not None:
        error["field"] = field
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, request_id, field=field), status_code=status, headers=headers)
