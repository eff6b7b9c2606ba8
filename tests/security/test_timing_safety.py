"""Secret comparisons are constant-time or hash lookups: checked in the code, not by a (flaky) stopwatch.

- API keys: the presented key is hashed (SHA-256) and looked up by hash; no byte of a stored key is compared
  in Python, so response time says nothing about how much of a guess was right.
- Signatures: webhooks.verify compares HMACs with hmac.compare_digest, over every candidate (no early exit).
- Everything else holding secrets: no ``==``/``!=`` on a secret-looking name anywhere.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import httpx
import pytest

import synchook.auth.service as auth_service
from synchook.context import AppContext
from synchook.http.guard import authorize
from tests.factories import make_tenant
from webhooks.signing import sign
from webhooks.verify import WebhookVerificationError, verify

ROOT = Path(__file__).resolve().parents[2]
SECRET_HANDLING = [
    "synchook/auth/service.py",
    "synchook/crypto.py",
    "synchook/http/guard.py",
    "webhooks/verify.py",
    "webhooks/signing.py",
    "subscriptions/keys.py",
    "subscriptions/service.py",
    "sync_trigger/push/inbound.py",  # channel tokens and Graph clientStates (CONTRACT §7)
    "sync_trigger/push/routes.py",
]
SECRET_NAME = re.compile(r"(secret|signature|digest|token|raw_key|password|mac\b|^key$|expected|given)", re.I)


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [*_names(node.value), node.attr]
    if isinstance(node, ast.Call):
        return _names(node.func)
    if isinstance(node, ast.Subscript):
        return _names(node.value)
    return []


def _is_sql_column(node: ast.AST) -> bool:
    # Model.column == value builds a WHERE clause: the database compares (an index lookup), not Python.
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id[:1].isupper()


def plain_comparisons_of_secrets(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(_is_sql_column(o) for o in operands):
            continue
        if any(isinstance(o, ast.Constant) or (isinstance(o, ast.Name) and o.id.isupper()) for o in operands):
            continue  # comparing against a literal or a CONSTANT (a prefix, a type name) leaks nothing secret
        names = [n for o in operands for n in _names(o)]
        if any(n not in {"len"} and SECRET_NAME.search(n) for n in names) and names[:1] != ["len"]:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("module", SECRET_HANDLING)
def test_no_plain_equality_on_secrets(module: str) -> None:
    assert plain_comparisons_of_secrets(ROOT / module) == []


def test_the_scanner_catches_a_plain_comparison(tmp_path: Path) -> None:
    bad = ROOT / "tests" / "security" / "_scanner_probe.py"
    try:
        bad.write_text("def check(expected_signature, given):\n    return expected_signature == given\n")
        assert plain_comparisons_of_secrets(bad) != []
    finally:
        bad.unlink()


def test_api_keys_are_looked_up_by_hash() -> None:
    # One equality on the stored hash, in SQL (a statement built once, the hash bound per request); the API's key
    # cache (synchook.auth.cache) is keyed by the same hash, never by the key.
    assert "return hash_key(token)" in inspect.getsource(auth_service.bearer_key_hash)
    assert '{"key_hash": key_hash}' in inspect.getsource(auth_service.look_up_key)
    guard = inspect.getsource(authorize)
    assert 'key_hash = bearer_key_hash(request.headers.get("authorization"))' in guard
    assert "ctx.keys.get(key_hash)" in guard
    assert str(auth_service._KEY_LOOKUP.whereclause) == "api_keys.key_hash = :key_hash"
    assert auth_service.hash_key("wbk_x") == auth_service.hash_key("wbk_x") != "wbk_x"
    assert len(auth_service.hash_key("wbk_x")) == 64  # SHA-256 hex: the stored form, never the key


def test_signatures_are_compared_with_compare_digest() -> None:
    # webhooks/__init__ re-exports the function verify, which shadows the module of the same name.
    source = inspect.getsource(importlib.import_module("webhooks.verify")._match_hmac)
    assert "hmac.compare_digest" in source
    assert "any(results)" in source  # every candidate compared before deciding: no early exit


async def test_a_key_differing_only_in_its_last_character_is_rejected(
    app_ctx: AppContext, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(app_ctx)
    assert (await client.get("/v1/webhooks/subscriptions", headers=tenant.headers)).status_code == 200
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for other in [c for c in alphabet if c != tenant.key[-1]][:8]:
        near = tenant.key[:-1] + other
        response = await client.get("/v1/webhooks/subscriptions", headers={"Authorization": f"Bearer {near}"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_key"


def test_a_signature_differing_only_in_its_last_byte_is_rejected() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"type": "webhook.test"}'
    header = sign(msg_id="evt_1", timestamp=1_700_000_000, body=body, secrets=[secret])
    headers = {"webhook-id": "evt_1", "webhook-timestamp": "1700000000", "webhook-signature": header}
    assert verify(body, headers, secret, now=1_700_000_000)["type"] == "webhook.test"
    import base64

    raw = bytearray(base64.b64decode(header.split(",", 1)[1]))
    raw[-1] ^= 1
    forged = "v1," + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(WebhookVerificationError):
        verify(body, {**headers, "webhook-signature": forged}, secret, now=1_700_000_000)
