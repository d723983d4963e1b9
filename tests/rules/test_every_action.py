"""Every rule action the schema knows has a helper in the Python client (shared/rules.py), a builder in the
JavaScript client (shared/js/src/rules.cjs) and an entry in docs/api.md's table of actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from appserver.rules.actions import ACTION_NAMES

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_every_action_has_helpers_and_a_docs_entry(action: str) -> None:
    assert f'"type": "{action}"' in (ROOT / "shared" / "rules.py").read_text(), f"no Python helper makes {action!r}"
    assert f'type: "{action}"' in (ROOT / "shared" / "js" / "src" / "rules.cjs").read_text(), (
        f"no JavaScript builder makes {action!r}")
    assert f"| `{action}`" in (ROOT / "docs" / "api.md").read_text(), f"docs/api.md has no entry for {action!r}"


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_every_action_is_one_registry_entry_with_its_schema(action: str) -> None:
    """Its Struct is tagged with its name and is a member of the union a rule's action is validated against."""
    from appserver.rules.actions import ACTIONS, AnyAction
    from appserver.rules.schema import tag_of

    kind = ACTIONS[action]
    assert tag_of(kind.schema) == action
    assert kind.schema in AnyAction.__args__
