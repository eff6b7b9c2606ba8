"""`.env.example` documents every setting the code reads, with its default, and agrees with CONTRACT §3."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from synchook.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / ".env.example"
# CI checks the product out beside shared/ (../shared); a local worktree may not have it.
CONTRACT = REPO.parent / "shared" / "CONTRACT.md"

# Read with os.environ outside the settings model.
READ_OUTSIDE_THE_MODEL = {"SYNCHOOK_REDIS_SERVER"}  # synchook/queue.py: the redis-server `dev` embeds

# In the contract's table but not built yet: push notifications come with a later issue (CONTRACT §7).
# Remove a name here when its setting lands in the model (and document it in .env.example).
NOT_YET_IMPLEMENTED: set[str] = set()

_ASSIGNMENT = re.compile(r"^(#\s*)?(SYNCHOOK_[A-Z0-9_]+)=(.*)$")


@dataclass(frozen=True)
class Documented:
    value: str
    commented_out: bool  # `# SYNCHOOK_X=`: unset by default
    explained: bool  # a comment above it says what it means


def env_example() -> dict[str, Documented]:
    documented: dict[str, Documented] = {}
    explained = False
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match is not None:
            name = match.group(2)
            assert name not in documented, f"{name} is documented twice"
            documented[name] = Documented(match.group(3), match.group(1) is not None, explained)
        elif line.startswith("#"):
            explained = True
        elif not line.strip():
            explained = False
    return documented


def model_variables() -> dict[str, str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper(): name for name in Settings.model_fields}


def contract_variables() -> set[str]:
    text = CONTRACT.read_text()
    section = text.split("## 3. Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `SYNCHOOK_"):
            names.update(re.findall(r"SYNCHOOK_[A-Z0-9_]+", row.split("|")[1]))
    return names


def test_every_setting_the_code_reads_is_documented() -> None:
    missing = sorted((set(model_variables()) | READ_OUTSIDE_THE_MODEL) - set(env_example()))
    assert missing == [], f".env.example lacks {missing}"


def test_every_documented_variable_is_read_by_the_code() -> None:
    stale = sorted(set(env_example()) - set(model_variables()) - READ_OUTSIDE_THE_MODEL)
    assert stale == [], f".env.example documents variables nothing reads: {stale}"


def test_each_variable_has_a_one_line_meaning() -> None:
    unexplained = sorted(name for name, doc in env_example().items() if not doc.explained)
    assert unexplained == [], f"no comment explains {unexplained}"


@pytest.mark.parametrize("variable", sorted(model_variables()))
def test_the_documented_value_is_the_default(variable: str) -> None:
    field = model_variables()[variable]
    documented = env_example()[variable]
    default = Settings.model_fields[field].default
    if documented.commented_out:
        # An example value behind `#`: the setting itself is unset by default.
        assert default is None, f"{variable} defaults to {default!r}; show it uncommented"
        return
    # Validated the way the environment's string would be, so "0,5,300" matches the tuple default.
    parsed = getattr(Settings.model_validate({field: documented.value}), field)
    assert parsed == default, f"{variable}={documented.value} but the default is {default!r}"


def _contract_or_skip() -> set[str]:
    if not CONTRACT.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must provide the contract at {CONTRACT}")
        pytest.skip("the contract (../shared/CONTRACT.md) is not beside this checkout")
    return contract_variables()


def test_every_contract_variable_is_built_and_documented_or_listed_as_not_yet() -> None:
    contract = _contract_or_skip()
    assert len(contract) >= 20  # the table was read, not skipped over
    built = set(model_variables())
    unbuilt = sorted(contract - built - NOT_YET_IMPLEMENTED)
    assert unbuilt == [], f"the contract names {unbuilt}, which the settings model lacks"
    undocumented = sorted((contract & built) - set(env_example()))
    assert undocumented == [], f".env.example lacks the contract's {undocumented}"


def test_the_not_yet_implemented_list_is_current() -> None:
    contract = _contract_or_skip()
    landed = sorted(NOT_YET_IMPLEMENTED & set(model_variables()))
    assert landed == [], f"{landed} are in the settings model now: remove them from NOT_YET_IMPLEMENTED"
    gone = sorted(NOT_YET_IMPLEMENTED - contract)
    assert gone == [], f"{gone} are no longer in the contract"
