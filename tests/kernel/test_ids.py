"""Ids are prefixed ULIDs: 26 Crockford base-32 characters, the first ten the creation time in ms."""

from __future__ import annotations

from synchook.ids import _CROCKFORD, looks_like_id, new_id, ulid


def _decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def test_the_time_part_matches_the_ulid_specifications_example() -> None:
    # https://github.com/ulid/spec: 1469918176385 ms is written 01ARYZ6S41.
    assert ulid(1469918176385)[:10] == "01ARYZ6S41"


def test_an_id_decodes_back_to_its_time_and_eighty_random_bits() -> None:
    for ms in (0, 1, 1469918176385, 2**48 - 1):
        text = ulid(ms)
        assert len(text) == 26 and set(text) <= set(_CROCKFORD)
        assert _decode(text) >> 80 == ms
    randoms = {_decode(ulid(0)) for _ in range(200)}
    assert len(randoms) == 200 and max(randoms) < 2**80
    assert any(r >> 76 for r in randoms), "the random part's top bits are used"


def test_ids_sort_by_creation_time() -> None:
    stamps = [1_700_000_000_000 + step for step in (0, 1, 31, 32, 1023, 1024, 10**6)]
    texts = [ulid(ms) for ms in stamps]
    assert texts == sorted(texts)


def test_new_ids_have_their_prefix_and_pass_the_shape_check() -> None:
    made = new_id("dlv")
    assert made.startswith("dlv_") and looks_like_id(made, "dlv")
    assert not looks_like_id(made, "evt")
    assert not looks_like_id("dlv_" + made[4:].replace(made[5], "U", 1), "dlv")  # U is not Crockford
