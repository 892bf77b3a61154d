"""The turn, step by step, against the embedded Postgres with a scripted model."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from carrier_core import Character, InvalidMessage, Runtime, run_turn
from carrier_core.config import Settings
from carrier_core.decision import Decision, render_decision
from carrier_core.embed import embed_pending
from carrier_core.memory import MemoryKind
from carrier_core.models import (
    Embeddings,
    HashEmbedding,
    ModelError,
    ModelSet,
    ScriptedModel,
    offline_models,
)
from carrier_core.store.base import NotFound
from carrier_core.store.store import Store
from carrier_core.turn.act import act
from carrier_core.turn.decide import SAFE_REPLY, decide
from carrier_core.turn.evaluate import evaluate
from carrier_core.turn.ingest import MessageConflict, ingest
from carrier_core.turn.run import run_room
from carrier_core.turn.schedule import next_turn
from carrier_core.world import entity_id_for
from tests.conftest import make_runtime

NO_FACTS = json.dumps({"facts": [], "relationships": []})


def xml(*actions: str, text: str = "") -> str:
    return render_decision(Decision(thought="t", actions=list(actions), text=text))


def message(agent_id: uuid.UUID, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "room": "lobby",
        "sender": "u1",
        "sender_name": "Sam",
        "text": text,
        **extra,
    }


def count(store: Store, sql: str, *params: object) -> int:
    with store._pool.connection() as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


@pytest.fixture
def agent(scripted_runtime: Runtime, ada: Character) -> uuid.UUID:
    return scripted_runtime.register_agent(ada)


# -- ingest -------------------------------------------------------------------


def test_ingest_stores_the_sender_room_message_and_turn(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    store = scripted_runtime.store
    ingested = ingest(scripted_runtime, message(agent, "hello", world="acme"))
    assert ingested.created
    memory = store.memory(ingested.message_id)
    assert memory.content.text == "hello"
    assert memory.kind is MemoryKind.MESSAGE
    assert [e.name for e in store.participants(memory.room_id)] == ["Sam"]  # type: ignore[arg-type]
    assert store.room(memory.room_id).name == "lobby"  # type: ignore[arg-type]
    assert store.turn(ingested.turn_id).status == "queued"
    assert [s.step for s in store.turn_steps(ingested.turn_id)] == ["ingest"]


def test_the_same_client_message_id_twice_gives_one_memory_and_one_reply(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="hi once"))
    first = run_turn(scripted_runtime, message(agent, "hi", client_message_id="c-1"))
    again = run_turn(scripted_runtime, message(agent, "hi", client_message_id="c-1"))
    assert first.reply_texts == ["hi once"] and not first.duplicate
    assert again.duplicate and again.turn_id == first.turn_id
    assert again.reply_texts == ["hi once"]
    assert len(scripted.requests) == 1
    store = scripted_runtime.store
    assert count(store, "SELECT count(*) FROM memories WHERE content->>'text' = 'hi'") == 1
    assert count(store, "SELECT count(*) FROM turns") == 1


def test_the_same_client_message_id_on_another_text_is_refused_and_stores_nothing(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="hi once"))
    first = run_turn(scripted_runtime, message(agent, "hi", client_message_id="c-1"))
    with pytest.raises(MessageConflict) as refused:
        ingest(scripted_runtime, message(agent, "bye", client_message_id="c-1", sender_name="S"))
    assert str(refused.value) == (
        "client_message_id 'c-1' is already the id of a message from this sender"
        " that differs in its text"
    )
    assert isinstance(refused.value, InvalidMessage)  # a queue drops it: retrying cannot help
    store = scripted_runtime.store
    assert count(store, "SELECT count(*) FROM memories WHERE content->>'text' = 'bye'") == 0
    assert count(store, "SELECT count(*) FROM turns") == 1
    room_id = store.memory(first.message_id).room_id
    assert [e.name for e in store.participants(room_id)] == ["Sam"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"text": ""}, "text: Value error, must not be empty"),
        ({"text": "   \n"}, "text: Value error, must not be empty"),
        ({"text": "x" * 8001}, "text: 8001 characters, the limit is 8000"),
        ({"room": ""}, "room: String should have at least 1 character"),
        ({"sender": None}, "sender: Input should be a valid string"),
        ({"agent_id": "not-a-uuid"}, "agent_id: Input should be a valid UUID"),
        ({"room_kind": "party"}, "room_kind: Input should be 'dm' or 'group'"),
    ],
)
def test_bad_messages_are_refused_naming_the_field_and_store_nothing(
    scripted_runtime: Runtime, agent: uuid.UUID, change: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidMessage) as error:
        run_turn(scripted_runtime, {**message(agent, "hello"), **change})
    assert expected in str(error.value)
    assert count(scripted_runtime.store, "SELECT count(*) FROM memories WHERE kind='message'") == 0


def test_a_message_for_an_unknown_agent_is_refused(scripted_runtime: Runtime) -> None:
    with pytest.raises(NotFound, match="no agent with id"):
        run_turn(scripted_runtime, message(uuid.uuid4(), "hello"))


# -- decide -------------------------------------------------------------------


def test_decide_prompt_carries_character_conversation_facts_and_actions(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="noted"), xml("REPLY", text="sure"))
    run_turn(scripted_runtime, message(agent, "I like sailing"))
    run_turn(scripted_runtime, message(agent, "what should we do this weekend?"))
    prompt = scripted.requests[-1].prompt
    assert "You are Ada" in prompt
    assert "Sam: I like sailing\nAda: noted\nSam: what should we do this weekend?" in prompt
    assert "- REPLY:" in prompt and "- IGNORE:" in prompt
    assert "<response>" in prompt
    assert scripted.requests[-1].system.startswith("You are Ada, a patient")


@pytest.mark.parametrize(
    "raw",
    [
        '```json\n{"thought": "x", "actions": "REPLY", "text": "from json"}\n```',
        "Let me think.\n<response><text>from json</text></response>",
        "<response><actions>NONE</actions><text>from json</text>",
    ],
)
def test_decide_reads_json_xml_fences_and_missing_fields(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID, raw: str
) -> None:
    scripted.add(raw)
    result = run_turn(scripted_runtime, message(agent, "hi"))
    assert result.status == "done"
    assert result.reply_texts == ["from json"]


def test_unparsable_model_output_keeps_the_turn_alive_and_records_the_error(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add("I'd rather not use your format.")
    result = run_turn(scripted_runtime, message(agent, "hi"))
    assert result.status == "done"
    assert result.reply_texts == [SAFE_REPLY]
    decide_step = next(
        s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step == "decide"
    )
    assert decide_step.status == "error"
    assert "no JSON object or XML fields found" in decide_step.detail["error"]
    assert "I'd rather not use your format." in decide_step.detail["error"]


def test_in_a_group_the_agent_may_stay_silent(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("IGNORE"))
    result = run_turn(scripted_runtime, message(agent, "lunch?", room_kind="group"))
    assert result.status == "done"
    assert result.replies == []
    assert "Decide whether Ada should answer" in scripted.requests[0].prompt
    assert len(scripted.requests) == 1  # should-respond folded into the one decide call


def test_in_a_dm_the_agent_always_answers(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("IGNORE"), "a reply written on request")
    result = run_turn(scripted_runtime, message(agent, "hello?"))
    assert result.reply_texts == ["a reply written on request"]
    assert [r.task for r in scripted.requests] == ["decide", "reply"]


def test_a_failing_model_fails_the_turn_with_its_reason_and_keeps_the_message(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(ModelError("provider outage: 503"))
    result = run_turn(scripted_runtime, message(agent, "are you there?"))
    assert result.status == "failed"
    assert result.error == "decide: ModelError: provider outage: 503"
    assert scripted_runtime.store.memory(result.message_id).content.text == "are you there?"


# -- act ----------------------------------------------------------------------


def test_act_runs_one_action_and_a_retry_stores_nothing_twice(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="only once"))
    ingested = ingest(scripted_runtime, message(agent, "hi"))
    decided = decide(scripted_runtime, ingested.turn_id)
    assert decided.decision.actions == ["REPLY"] and decided.respond
    first = act(scripted_runtime, ingested.turn_id, 0)
    retry = act(scripted_runtime, ingested.turn_id, 0)
    assert first.reply_ids == retry.reply_ids and len(first.reply_ids) == 1
    with pytest.raises(IndexError, match="there is no action 1"):
        act(scripted_runtime, ingested.turn_id, 1)


def test_an_unknown_action_is_skipped_and_recorded(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", "LAUNCH_ROCKET", text="ok"))
    result = run_turn(scripted_runtime, message(agent, "hi"))
    assert result.reply_texts == ["ok"]
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["act:LAUNCH_ROCKET"].status == "skipped"
    assert steps["act:LAUNCH_ROCKET"].detail["error"] == "no action named 'LAUNCH_ROCKET'"


def test_a_reply_over_max_reply_chars_is_cut_and_the_cut_recorded_on_its_step(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    # A model that runs on: 2 MB of reply, asked for by REPLY when the decision has no text.
    runaway = "blah " * 400_000
    scripted.add(xml("REPLY"), runaway, xml("REPLY", text="short"))
    result = run_turn(scripted_runtime, message(agent, "talk to me"))
    [reply] = result.replies
    assert scripted_runtime.settings.max_reply_chars == 8000
    assert reply.content.text == runaway.strip()[:8000]
    # What is embedded is the stored text, not the 2 MB.
    [vector] = HashEmbedding().embed([reply.content.text]).vectors
    embedded = "SELECT count(*) FROM memories WHERE id = %s AND embedding = %s::vector"
    assert count(scripted_runtime.store, embedded, reply.id, str(vector)) == 1
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["act:REPLY"].status == "ok"
    assert steps["act:REPLY"].detail["replies_cut"] == [
        {"reply": 0, "chars": len(runaway.strip()), "kept": 8000}
    ]
    # A reply within the limit is stored whole, and no cut is recorded.
    short = run_turn(scripted_runtime, message(agent, "and now?"))
    assert short.reply_texts == ["short"]
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(short.turn_id)}
    assert "replies_cut" not in steps["act:REPLY"].detail


def test_max_reply_chars_is_a_setting(
    store: Store, scripted: ScriptedModel, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARRIER_MAX_REPLY_CHARS", "12")
    runtime = make_runtime(
        store, ModelSet(small=scripted, large=scripted, embedding=HashEmbedding())
    )
    scripted.add(xml("REPLY", text="Twelve chars, then some more"))
    result = run_turn(runtime, message(runtime.register_agent(ada), "hi"))
    assert result.reply_texts == ["Twelve chars"]


def test_continue_asks_for_another_decide_step_bounded_by_max_steps(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    from carrier_core.models import HashEmbedding, ModelSet
    from tests.conftest import make_runtime

    runtime = make_runtime(
        store, ModelSet(small=scripted, large=scripted, embedding=HashEmbedding()), max_steps=2
    )
    agent = runtime.register_agent(ada)
    scripted.add(
        xml("REPLY", "CONTINUE", text="part one"), xml("REPLY", "CONTINUE", text="part two")
    )
    result = run_turn(runtime, message(agent, "tell me a story"))
    assert result.reply_texts == ["part one", "part two"]
    assert [r.task for r in scripted.requests] == ["decide", "decide"]
    steps = [s.step for s in store.turn_steps(result.turn_id)]
    assert steps.count("decide") == 2
    # On the last allowed step CONTINUE's validate declines.
    assert [s.status for s in store.turn_steps(result.turn_id) if s.step == "act:CONTINUE"] == [
        "ok",
        "skipped",
    ]
    assert store.turn(result.turn_id).steps_taken == 2

    # -- evaluate and embed -------------------------------------------------------
    # A step number outside 1..max_steps (only a hand-made state machine input has one) is
    # refused naming the range, before anything is read or stored.
    for step in (0, 3):
        with pytest.raises(ValueError, match=r"decide step \d: .* here 1 to 2"):
            decide(runtime, result.turn_id, step)
    assert [s.step for s in store.turn_steps(result.turn_id)].count("decide") == 2


def test_reflection_runs_on_its_cadence_and_stores_facts_and_relationships(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    reflection = json.dumps(
        {
            "facts": [{"claim": "Sam likes sailing", "about": "Sam"}, {"claim": "  "}, "junk"],
            "relationships": [
                {"source": "Sam", "target": "Ada", "tags": ["friend"]},
                {"source": "Nobody", "target": "Ada"},
            ],
        }
    )
    scripted.add(xml("REPLY", text="a"), xml("REPLY", text="b"), xml("REPLY", text="c"), reflection)
    tasks_after = []
    for text in ["one", "I like sailing", "three"]:
        run_turn(scripted_runtime, message(agent, text))
        tasks_after.append([r.task for r in scripted.requests])
    # The default interval is 3 incoming messages: no reflection before the third.
    assert tasks_after[1] == ["decide", "decide"]
    assert tasks_after[2][-1] == "reflect"
    store = scripted_runtime.store
    sam = entity_id_for(agent, "api", "u1")
    assert [f.content.text for f in store.facts_about(agent, sam)] == ["Sam likes sailing"]
    [relationship] = store.relationships(agent)
    assert (relationship.source_entity_id, relationship.target_entity_id) == (sam, agent)
    assert relationship.tags == ["friend"]


def test_a_failed_reflection_is_recorded_and_the_turn_still_finishes(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(
        xml("REPLY", text="a"),
        xml("REPLY", text="b"),
        xml("REPLY", text="c"),
        "no json here at all",
    )
    results = [run_turn(scripted_runtime, message(agent, t)) for t in ["one", "two", "three"]]
    assert [r.status for r in results] == ["done"] * 3
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(results[-1].turn_id)}
    assert steps["evaluate:reflection"].status == "error"
    assert (
        "reflection: no JSON object or XML fields" in steps["evaluate:reflection"].detail["error"]
    )


def test_after_a_turn_every_memory_has_an_embedding(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="hello back"))
    run_turn(scripted_runtime, message(agent, "hello"))
    store = scripted_runtime.store
    assert count(store, "SELECT count(*) FROM memories WHERE embedding IS NULL") == 0
    assert count(store, "SELECT count(*) FROM memories WHERE kind = 'message'") == 2


def test_embed_pending_works_in_batches(scripted_runtime: Runtime, agent: uuid.UUID) -> None:
    store = scripted_runtime.store
    for n in range(5):
        ingest(scripted_runtime, message(agent, f"message {n}"))
    scripted_runtime.settings.embed_batch_size = 2
    assert embed_pending(scripted_runtime, agent, max_batches=2) == 4
    assert embed_pending(scripted_runtime, agent) == 1
    assert count(store, "SELECT count(*) FROM memories WHERE embedding IS NULL") == 0


def test_evaluate_can_be_forced_when_a_chat_ends(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="hi"), NO_FACTS)
    result = run_turn(scripted_runtime, message(agent, "my name is Sam"))
    assert [r.task for r in scripted.requests] == ["decide"]
    assert evaluate(scripted_runtime, result.turn_id, force=True) == ["reflection"]
    assert [r.task for r in scripted.requests] == ["decide", "reflect"]
    # Nothing new since: a second forced reflection makes no model call.
    evaluate(scripted_runtime, result.turn_id, force=True)
    assert len(scripted.requests) == 2


@pytest.mark.parametrize(
    ("answer", "replies"),
    [
        (xml("NONE"), ["written on request"]),
        (xml("STOP"), ["written on request"]),  # a simile of IGNORE
        (xml("LAUNCH_ROCKET"), ["written on request"]),  # unknown: nobody would act
        (xml("REPLY", "RESPOND", text="once"), ["once"]),  # a simile of REPLY, not twice
    ],
)
def test_in_a_dm_every_decision_ends_in_an_answer(
    scripted_runtime: Runtime,
    scripted: ScriptedModel,
    agent: uuid.UUID,
    answer: str,
    replies: list[str],
) -> None:
    scripted.add(answer, "written on request")
    result = run_turn(scripted_runtime, message(agent, "hello"))
    assert result.reply_texts == replies


def test_in_a_group_a_simile_of_ignore_is_silence(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("NO_RESPONSE"))
    result = run_turn(scripted_runtime, message(agent, "lunch?", room_kind="group"))
    assert result.status == "done" and result.replies == []
    assert scripted_runtime.store.turn(result.turn_id).decision["actions"] == ["IGNORE"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"text": "hi\x00there"}, "text: Value error, must not contain NUL characters"),
        ({"text": "hi \ud800"}, "text: Value error, must be valid Unicode"),
        ({"room": "a\x00b"}, "room: Value error, must not contain NUL characters"),
        ({"clientMessageId": "x"}, "clientMessageId: Extra inputs are not permitted"),
        ({"attachments": [{"name": "a\x00"}]}, "attachments: Value error, must not contain NUL"),
    ],
)
def test_text_postgres_cannot_store_is_refused_before_anything_is_written(
    scripted_runtime: Runtime, agent: uuid.UUID, change: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidMessage) as error:
        run_turn(scripted_runtime, {**message(agent, "hello"), **change})
    assert expected in str(error.value)
    assert count(scripted_runtime.store, "SELECT count(*) FROM rooms") == 0


def test_a_room_takes_the_kind_of_its_latest_message_and_people_their_latest_name(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="hi"), xml("IGNORE"))
    first = run_turn(scripted_runtime, message(agent, "hello"))
    later = run_turn(
        scripted_runtime, message(agent, "hello all", room_kind="group", sender_name="Samantha")
    )
    store = scripted_runtime.store
    room = store.room(store.turn(later.turn_id).room_id)
    assert room.id == store.turn(first.turn_id).room_id
    assert room.kind == "group" and later.replies == []
    assert [e.names for e in store.participants(room.id)] == [["Samantha", "Sam"]]


def test_reflection_reads_tags_as_lists_and_skips_facts_about_strangers(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    reflection = json.dumps(
        {
            "facts": [
                {"claim": "Alice lives in Paris", "about": "Alice"},
                {"claim": "Sam plays chess"},
            ],
            "relationships": [{"source": "Sam", "target": "Ada", "tags": "friend"}],
        }
    )
    scripted.add(xml("REPLY", text="ok"), reflection)
    result = run_turn(scripted_runtime, message(agent, "my friend Alice lives in Paris"))
    evaluate(scripted_runtime, result.turn_id, force=True)
    store = scripted_runtime.store
    sam = entity_id_for(agent, "api", "u1")
    assert [f.content.text for f in store.facts_about(agent, sam)] == ["Sam plays chess"]
    assert store.relationships(agent)[0].tags == ["friend"]


def test_a_reflection_of_the_wrong_shape_is_named_and_not_retried_every_turn(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="ok"), json.dumps({"facts": 5}))
    result = run_turn(scripted_runtime, message(agent, "hello"))
    assert evaluate(scripted_runtime, result.turn_id, force=True) == []
    steps = [s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.status == "error"]
    assert (
        steps[-1].detail["error"]
        == "ReflectionError: reflection: 'facts' should be a list, got int"
    )
    # The messages count as read: a later forced reflection has nothing to do.
    assert evaluate(scripted_runtime, result.turn_id, force=True) == ["reflection"]
    assert [r.task for r in scripted.requests] == ["decide", "reflect"]


class _BrokenEmbedding:
    name = "broken"
    dimensions = 384

    def __init__(self) -> None:
        self.working = True
        self.inner = HashEmbedding()

    def embed(self, texts: Sequence[str]) -> Embeddings:
        if not self.working:
            raise ModelError("embedding service down")
        return self.inner.embed(texts)


def test_an_embedding_outage_after_the_decision_does_not_cost_the_reply(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    embedder = _BrokenEmbedding()
    runtime = make_runtime(store, ModelSet(small=scripted, large=scripted, embedding=embedder))
    agent = runtime.register_agent(ada)
    turn_id = ingest(runtime, message(agent, "hello")).turn_id
    scripted.add(xml("REPLY", text="hi"))
    decide(runtime, turn_id)
    embedder.working = False
    act(runtime, turn_id, 0)
    [reply] = store.turn_memories(turn_id, MemoryKind.MESSAGE)
    assert reply.content.text == "hi"
    [act_step] = [s for s in store.turn_steps(turn_id) if s.step == "act:REPLY"]
    assert act_step.status == "ok"
    # Stored without its embedding, which the embed step makes after the turn.
    assert "embedding_calls" not in act_step.detail
    assert reply.id in {m.id for m in store.unembedded(agent, 10)}

    from carrier_core.turn.run import _embed

    _embed(runtime, turn_id, agent)
    [embed_step] = [s for s in store.turn_steps(turn_id) if s.step == "embed"]
    assert embed_step.status == "error"
    assert embed_step.detail["error"] == "ModelError: embedding service down"
    embedder.working = True
    assert embed_pending(runtime, agent) == 1  # the reply waited and is embedded now


def test_the_reply_is_embedded_after_the_turn_with_its_ledger_row(
    runtime: Runtime, ada: Character
) -> None:
    """One embedding call before the reply (the message, for recall); the reply's comes
    after, in the embed step, whose ledger row is written with the embeddings."""
    agent = runtime.register_agent(ada)
    result = run_turn(runtime, message(agent, "I like sailing"))
    steps = runtime.store.turn_steps(result.turn_id)
    before_reply = [s for s in steps if s.step == "decide" or s.step.startswith("act:")]
    assert sum(int(s.detail.get("embedding_calls", 0)) for s in before_reply) == 1
    assert runtime.store.unembedded(agent, 10) == []
    with runtime.store.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM model_calls WHERE agent_id = %s AND step = 'embed'",
            (agent,),
        ).fetchone()
    assert row is not None and row["n"] >= 1


def test_a_turn_without_reflection_sends_a_bounded_number_of_statements(
    database_url: str, ada: Character
) -> None:
    """Counted, not timed: every statement a turn sends, BEGIN/COMMIT included (ingest,
    the runner, decide with its providers and its simple reply, evaluate, finish with the
    runner's next turn, embed), without the result's reads: 9, one read and one write per
    step. On a store of its own, so that no other test's work left running is counted."""
    store = Store.open(Settings(database_url=database_url))
    try:
        runtime = make_runtime(store, offline_models(), reflection_interval=1000)
        agent = runtime.register_agent(ada)
        for text in ("hello there", "I like sailing"):
            run_turn(runtime, message(agent, text))
        before = store.round_trips.count
        ingested = ingest(runtime, message(agent, "tell me more about engines"), take_expired=True)
        assert ingested.runner is not None
        run_room(runtime, ingested.runner)
        sent = store.round_trips.count - before
        assert store.turn(ingested.turn_id).status == "done"
        assert sent == 9, sent
    finally:
        store.close()


def test_a_connection_just_made_is_handed_out_without_a_check(database_url: str) -> None:
    """A pooled connection is checked before use only when it sat idle or the database has
    been failing: one the pool has just made is trusted. (Its first use cost a check, so a
    turn that happened to take a fresh connection sent a statement more.)"""
    store = Store.open(Settings(database_url=database_url, pool_size=3))
    try:
        before = store.round_trips.count
        with store.connection() as a, store.connection() as b, store.connection() as c:
            for conn in (a, b, c):
                conn.execute("SELECT 1")
        assert store.round_trips.count - before == 3
    finally:
        store.close()


def test_the_turn_s_end_and_the_runner_s_next_turn_commit_without_waiting_for_the_disk(
    store: Store, ada: Character
) -> None:
    """The message accepted, the reply stored and the embeddings wait for the write-ahead
    log to reach disk; the turn's end and the runner's next turn do not (migration 0015).
    Each write runs in a transaction of its own here, and the transaction's commit mode is
    read before it commits; none of it outlives its transaction."""
    runtime = make_runtime(store, offline_models(), reflection_interval=1000)
    agent = runtime.register_agent(ada)

    def commit_mode(write: Any) -> str:
        with store.atomic():
            write()
            with store.connection() as conn:
                row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None
        return str(row["synchronous_commit"])

    found: dict[str, Any] = {}
    modes = {
        "accept": commit_mode(
            lambda: found.update(ingested=ingest(runtime, message(agent, "hi"), take_expired=True))
        ),
        "next": commit_mode(
            lambda: found.update(turn=next_turn(runtime, found["ingested"].runner))
        ),
        "decide": commit_mode(lambda: decide(runtime, found["turn"].turn_id, 1)),
        "finish": commit_mode(lambda: store.end_turn(found["turn"].turn_id)),
        "embed": commit_mode(lambda: embed_pending(runtime, agent)),
        "next, none left": commit_mode(
            lambda: found.update(last=next_turn(runtime, found["ingested"].runner))
        ),
    }
    assert modes == {
        "accept": "on",
        "next": "off",
        "decide": "on",
        "finish": "off",
        "embed": "on",
        "next, none left": "off",
    }
    assert found["last"] is None and store.turn(found["turn"].turn_id).status == "done"
    assert store.unembedded(agent, 10) == []
    with store.connection() as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    assert row is not None and row["synchronous_commit"] == "on"


def test_a_simple_reply_is_said_by_the_decide_step_itself(store: Store, ada: Character) -> None:
    """REPLY alone, with its text, runs inside the decide step and is stored with the
    decision: no act step follows, the history keeps its act row, and the decide step run
    again (a retried invocation) gives what the first run said without saying it twice."""
    runtime = make_runtime(store, offline_models(), reflection_interval=1000)
    agent = runtime.register_agent(ada)
    ingested = ingest(runtime, message(agent, "hello there"), take_expired=True)
    assert ingested.runner is not None
    turn = next_turn(runtime, ingested.runner)
    assert turn is not None
    decided = decide(runtime, turn.turn_id, 1)
    assert decided.chosen == ["REPLY"] and decided.to_run == []
    assert decided.acted is not None and len(decided.acted.reply_ids) == 1
    assert decide(runtime, turn.turn_id, 1).acted == decided.acted
    said = store.turn_memories(turn.turn_id, MemoryKind.MESSAGE)
    assert [m.id for m in said] == decided.acted.reply_ids
    steps = [(s.step, s.key, s.status) for s in store.turn_steps(turn.turn_id)]
    assert [s for s in steps if s[0] != "ingest"] == [
        ("decide", "decide:1", "ok"),
        ("act:REPLY", "act:1:0", "ok"),
    ]
