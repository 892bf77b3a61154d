"""What reflection learns of people is read back: the names they give, how they relate."""

from __future__ import annotations

from carrier_core import Character, run_turn
from carrier_core.bootstrap.providers import PROVIDERS
from carrier_core.store.store import Store
from carrier_core.turn.context import TurnContext
from tests.conftest import make_runtime
from tests.test_turn import message


def test_a_name_given_in_conversation_is_the_name_the_agent_uses(
    store: Store, ada: Character
) -> None:
    runtime = make_runtime(store, reflection_interval=1)
    agent = runtime.register_agent(ada)
    # The login's display name is "Sam"; the person says otherwise.
    run_turn(runtime, message(agent, "My name is Grace"))
    later = run_turn(runtime, message(agent, "Hi"))
    assert later.reply_texts == ["Hello, Grace. How are you today?"]
    # The display name still comes with every message, and still does not win.
    again = run_turn(runtime, message(agent, "Hello", sender_name="sam_login"))
    assert again.reply_texts == ["Hello, Grace. How are you today?"]


def test_the_relationships_provider_shows_what_reflection_learned(
    store: Store, ada: Character
) -> None:
    runtime = make_runtime(store, reflection_interval=1)
    agent = runtime.register_agent(ada)
    run_turn(runtime, message(agent, "My name is Grace"))
    result = run_turn(runtime, message(agent, "I like sailing"))
    ctx = TurnContext.load(runtime, result.turn_id)
    provider = next(p for p in PROVIDERS if p.name == "relationships")
    shown = provider.get(ctx)
    # The offline reflection links each speaker to the agent ("conversation").
    assert shown.text == "- Grace and Ada: conversation"
    assert shown.values == {"relationships": 1}
    # The decide step saw it too (its state keeps the provider's values).
    assert store.turn(result.turn_id).state["relationships"] == 1
