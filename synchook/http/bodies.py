"""Request bodies: size-capped, strict JSON, validated into pydantic models with field-named errors."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from synchook.errors import PayloadTooLarge, ValidationFailed

ModelT = TypeVar("ModelT", bound=BaseModel)

_MAX_DEPTH = 32
# pydantic prepends these to the text of a ValueError/AssertionError raised in a validator.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")
# JSON may spell characters that are not storable text: NUL (PostgreSQL text refuses it) and unpaired
# UTF-16 surrogates (no UTF-8 encoding exists). Both only ever arrive as JSON \u escapes.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise PayloadTooLarge(f"Request body exceeds {max_bytes} bytes")
        except ValueError as exc:
            raise ValidationFailed("Content-Length header is not a number") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes, *, allow_empty: bool) -> Any:
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationFailed("body: a JSON object is required", field="body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed("body: not valid UTF-8", field="body") from exc
    if _nesting_depth(text) > _MAX_DEPTH:
        raise ValidationFailed(f"body: JSON nested deeper than {_MAX_DEPTH} levels", field="body")
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ValidationFailed(f"body: malformed JSON ({exc})", field="body") from exc
    if _UNSTORABLE_ESCAPE.search(text):
        where = _unstorable_at(payload, ())
        if where is not None:
            field = ".".join(where) or "body"
            raise ValidationFailed(f"{field}: contains a NUL character or an unpaired UTF-16 surrogate", field=field)
    return payload


def _unstorable_at(value: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
    # Depth is bounded by the _MAX_DEPTH pre-scan, so recursion here is safe.
    if isinstance(value, str):
        return None if _UNSTORABLE.search(value) is None else path
    if isinstance(value, dict):
        for key, item in value.items():
            if _UNSTORABLE.search(key) is not None:
                return path
            found = _unstorable_at(item, (*path, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable_at(item, (*path, str(index)))
            if found is not None:
                return found
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _nesting_depth(text: str) -> int:
    # Cheap pre-scan so a hostile deeply nested body never reaches the recursive parser.
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def validate(model: type[ModelT], payload: Any) -> ModelT:
    if not isinstance(payload, dict):
        raise ValidationFailed("body: must be a JSON object", field="body")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def error_message(error: ErrorDetails) -> str:
    """One pydantic error as a user reads it: our validators' text without pydantic's "Value error, " prefix."""
    if error["type"] == "extra_forbidden":
        return "unknown field"
    message = error["msg"]
    for prefix in _PYDANTIC_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def validation_failed(exc: ValidationError) -> ValidationFailed:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return ValidationFailed(f"{field}: {error_message(first)}", field=field)


async def read_model(request: Request, model: type[ModelT], *, max_bytes: int, allow_empty: bool = False) -> ModelT:
    raw = await read_body(request, max_bytes=max_bytes)
    return validate(model, parse_json(raw, allow_empty=allow_empty))
