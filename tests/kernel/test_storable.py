"""Text from receivers and providers is made storable where it enters: NUL and lone surrogates become U+FFFD."""

from __future__ import annotations

from sync_trigger.connectors._http import _decode
from synchook.storable import storable, storable_json


def test_nul_and_lone_surrogates_become_u_fffd_and_the_rest_is_kept() -> None:
    assert storable("a\x00b\ud800c\udcffd \U0001f600 é") == "a\ufffdb\ufffdc\ufffdd \U0001f600 é"
    assert storable(None) is None


def test_every_string_of_decoded_json_is_made_storable_keys_too() -> None:
    value = {"a\x00": ["x\x00", {"k": "\ud800"}, 1, None, True]}
    assert storable_json(value) == {"a\ufffd": ["x\ufffd", {"k": "\ufffd"}, 1, None, True]}


def test_provider_json_escapes_of_nul_and_lone_surrogates_decode_storable() -> None:
    body = b'{"summary": "a\\u0000b", "name": "\\uD800x", "pair": "\\ud83d\\ude00", "path": "C:\\\\u0000"}'
    assert _decode(body) == {"summary": "a\ufffdb", "name": "\ufffdx", "pair": "\U0001f600", "path": "C:\\u0000"}
    assert _decode('{"t": "\\u0000"}'.encode("utf-16")) == {"t": "\ufffd"}
    assert _decode(b'{"t": "plain"}') == {"t": "plain"}
