"""End users of one tenant stay apart when someone else speaks in their rooms: a task's
sender or a tenant's operator in an end user's room is that end user's own
(`carrier_core.world.sender_key`), so what the agent learns of them there (facts, names,
relationships) is never shown in another end user's rooms, and an end user whose token
names the same sender reaches neither."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi.testclient import TestClient

from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.models import HashEmbedding, ModelRequest, ModelSet, ScriptedModel
from carrier_core.store.store import Store
from carrier_core.tasks import create_task, run_due_tasks
from carrier_core.turn.ingest import Ingested
from carrier_core.turn.run import run_room, run_turn
from carrier_core.world import entity_id_for, room_id_for
from tests.conftest import TenantKey, make_runtime, run_inline
from tests.jwks import Issuer
from tests.test_turn import xml

ALICE, BOB = "user:alice:chat", "user:bob:chat"

#: What the reflection evaluator learns in Alice's room about the task worker's sender.
LEARNED = {
    "thought": "Alice told the check-in she took her medication.",
    "facts": [{"claim": "remind checks that Alice took her HIV medication", "about": "remind"}],
    "relationships": [{"source": "Alice", "target": "remind", "tags": ["hiv-care"]}],
    "names": [{"about": "remind", "name": "Alice's HIV nurse"}],
}


def reflecting_runtime(store: Store, **settings: object) -> tuple[Runtime, ScriptedModel]:
    """Replies "ok" to everything and reflects on every turn, learning `LEARNED`."""

    def answer(request: ModelRequest) -> str:
        return json.dumps(LEARNED) if request.task == "reflect" else xml("REPLY", text="ok")

    scripted = ScriptedModel([answer] * 100)
    models = ModelSet(small=scripted, large=scripted, embedding=HashEmbedding())
    return make_runtime(store, models, reflection_interval=1, **settings), scripted


def run_tasks(runtime: Runtime) -> None:
    def submit(ingested: Ingested) -> None:
        if ingested.runner is not None:
            run_room(runtime, ingested.runner)

    run_due_tasks(runtime, submit)


def test_what_is_learned_of_a_task_in_one_end_users_room_stays_out_of_anothers(
    store: Store,
) -> None:
    runtime, scripted = reflecting_runtime(store)
    cy = runtime.register_agent(Character(name="Cy", plugins=["tests.task_plugin:plugin"]))
    for room, who in ((ALICE, "alice"), (BOB, "bob"), ("ops", "nurse")):
        run_turn(runtime, {"agent_id": cy, "room": room, "sender": who, "text": "hi"})
    # The plugin checks in with Alice, who answers; her room's reflection learns LEARNED.
    create_task(
        runtime, cy, "remind", room_id=room_id_for(cy, "api", ALICE), metadata={"text": "Check-in."}
    )
    run_tasks(runtime)
    run_turn(runtime, {"agent_id": cy, "room": ALICE, "sender": "alice", "text": "Took my meds"})

    scripted.requests.clear()
    create_task(
        runtime, cy, "remind", room_id=room_id_for(cy, "api", BOB), metadata={"text": "Check-in."}
    )
    run_tasks(runtime)

    [bobs] = [r.prompt for r in scripted.requests if r.task != "reflect" and BOB in r.prompt]
    assert "Alice" not in bobs and "HIV" not in bobs and "hiv-care" not in bobs
    # The task's sender is someone of each end user's own; in the tenant's rooms it is
    # the one sender it always was, and an end user in their own rooms is themself.
    create_task(
        runtime, cy, "remind", room_id=room_id_for(cy, "api", "ops"), metadata={"text": "Check-in."}
    )
    run_tasks(runtime)
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT r.name AS room, m.content->>'text' AS text, m.entity_id FROM memories m"
            " JOIN rooms r ON r.id = m.room_id"
            " WHERE m.kind = 'message' AND m.content->>'text' IN ('Check-in.', 'Took my meds')"
        ).fetchall()
    senders = {(row["room"], row["text"]): row["entity_id"] for row in rows}
    assert senders == {
        (ALICE, "Check-in."): entity_id_for(cy, "api", "user:alice:task:remind"),
        (BOB, "Check-in."): entity_id_for(cy, "api", "user:bob:task:remind"),
        ("ops", "Check-in."): entity_id_for(cy, "api", "task:remind"),
        (ALICE, "Took my meds"): entity_id_for(cy, "api", "alice"),
    }


def test_an_end_user_whose_token_names_a_task_sender_is_not_that_task(
    store: Store, issuer: Issuer, make_tenant: Callable[[str], TenantKey]
) -> None:
    runtime, scripted = reflecting_runtime(
        store,
        jwt_jwks_url=issuer.url,
        jwt_issuer="https://issuer.example",
        jwt_audience="carrier",
    )
    tenant = make_tenant("acme")

    def token_of(subject: str) -> dict[str, str]:
        token = issuer.token({"sub": subject, "tenant_id": str(tenant.tenant_id)})
        return {"Authorization": f"Bearer {token}"}

    cy = runtime.register_agent(
        Character(name="Cy", plugins=["tests.task_plugin:plugin"]), tenant.tenant_id
    )
    with TestClient(create_app(lambda: runtime, run_inline(runtime))) as client:
        chat = f"/v1/agents/{cy}/rooms/chat/messages"
        assert client.post(chat, json={"text": "hi"}, headers=token_of("alice")).status_code == 202
        create_task(
            runtime,
            cy,
            "remind",
            room_id=room_id_for(cy, "api", ALICE),
            metadata={"text": "Check-in."},
        )
        run_tasks(runtime)
        with store.connection() as conn:
            [task_turn] = conn.execute(
                "SELECT t.id FROM turns t JOIN memories m ON m.id = t.message_id"
                " WHERE m.content->>'text' = 'Check-in.'"
            ).fetchall()

        # A tenant's operator posting as "alice" in the tenant's own room is not her: the
        # turn is not hers to read.
        ops = client.post(
            f"/v1/agents/{cy}/rooms/ops/messages",
            json={"text": "hi", "sender": "alice"},
            headers=tenant.headers,
        )
        assert ops.status_code == 202
        assert (
            client.get(f"/v1/turns/{ops.json()['turn_id']}", headers=token_of("alice")).status_code
            == 404
        )

        mallory = token_of("task:remind")
        assert client.get(f"/v1/turns/{task_turn['id']}", headers=mallory).status_code == 404
        assert client.get(f"/v1/turns/{task_turn['id']}", headers=tenant.headers).status_code == 200
        scripted.requests.clear()
        asked = client.post(
            f"/v1/agents/{cy}/rooms/x/messages", json={"text": "What do you know?"}, headers=mallory
        )
        assert asked.status_code == 202
        [prompt] = [r.prompt for r in scripted.requests if r.task != "reflect"]
        assert "HIV" not in prompt and "Alice" not in prompt


def test_an_end_user_sees_where_their_turn_sent_by_their_own_room_keys(
    store: Store, issuer: Issuer, make_tenant: Callable[[str], TenantKey]
) -> None:
    def answer(request: ModelRequest) -> str:
        if request.task == "send_message":
            wanted = {"target": "notes", "targetType": "room", "text": "Buy milk."}
            return json.dumps({"messages": [wanted]})
        if request.task == "reflect":
            return json.dumps({"thought": "", "facts": [], "relationships": [], "names": []})
        return (
            xml("SEND_MESSAGE") if "Note: buy milk" in request.prompt else xml("REPLY", text="ok")
        )

    scripted = ScriptedModel([answer] * 20)
    runtime = make_runtime(
        store,
        ModelSet(small=scripted, large=scripted, embedding=HashEmbedding()),
        jwt_jwks_url=issuer.url,
        jwt_issuer="https://issuer.example",
        jwt_audience="carrier",
    )
    tenant = make_tenant("acme")
    token = issuer.token({"sub": "bob", "tenant_id": str(tenant.tenant_id)})
    bob = {"Authorization": f"Bearer {token}"}
    cy = runtime.register_agent(Character(name="Cy"), tenant.tenant_id)
    with TestClient(create_app(lambda: runtime, run_inline(runtime))) as client:
        rooms = f"/v1/agents/{cy}/rooms"
        hi = {"text": "hi", "room_kind": "group"}
        assert client.post(f"{rooms}/notes/messages", json=hi, headers=bob).status_code == 202
        posted = client.post(f"{rooms}/chat/messages", json={"text": "Note: buy milk"}, headers=bob)
        assert posted.status_code == 202, posted.text
        turn = f"/v1/turns/{posted.json()['turn_id']}"

        assert [s["room"] for s in client.get(turn, headers=bob).json()["sent"]] == ["notes"]
        # The tenant's key names the room by its stored key, as everywhere else.
        seen = client.get(turn, headers=tenant.headers).json()["sent"]
        assert [s["room"] for s in seen] == ["user:bob:notes"]
