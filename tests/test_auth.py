"""Auth and tenant isolation, for every route in the OpenAPI document.

The routes are read from the app itself, so a new route without an entry in the
tables below fails here until someone decides how it is called and what it owns.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.models import offline_models
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.world import LOCAL_TENANT_ID, entity_id_for, world_id_for
from tests.conftest import CHARACTERS, TenantKey, make_runtime, run_inline
from tests.jwks import Issuer

#: Routes anyone may call.
PUBLIC = {("GET", "/v1/health"), ("GET", "/v1/console-config")}
#: Routes an end user (a JWT) may call: talking, and reading what they said and were told.
END_USER = {
    ("POST", "/v1/agents/{agent}/rooms/{room}/messages"),
    ("GET", "/v1/agents/{agent}/rooms/{room}/messages"),
    ("GET", "/v1/agents/{agent}/rooms/{room}"),
    ("GET", "/v1/turns/{turn_id}"),
    # Their own turns' approvals, where the agent allows it (tests/test_approval.py).
    ("POST", "/v1/turns/{turn_id}/approval"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
}


@dataclass
class World:
    """One tenant's agent with a conversation, a memory, a key and (if routed) a webhook."""

    tenant: TenantKey
    key_id: uuid.UUID
    agent_id: str
    turn_id: str
    memory_id: str
    webhook_id: str
    document_id: str

    def params(self) -> dict[str, str]:
        return {
            "agent": self.agent_id,
            "room": "lobby",
            "turn_id": self.turn_id,
            "memory_id": self.memory_id,
            "document_id": self.document_id,
            "key_id": str(self.key_id),
            "webhook_id": self.webhook_id,
            "task_id": str(uuid.UUID(int=0)),  # no such task: the route still checks the caller
            "model": self.agent_id,  # OpenAI's name for an agent
        }


#: A file, sent as multipart/form-data (document uploads).
UPLOAD = {"file": ("probe.txt", b"A probe.", "text/plain")}


def body_for(method: str, path: str, world: World) -> Any:
    """A valid body for each route that takes one (None: no body)."""
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/v1/agents"): {"name": "Probe"},
        ("PUT", "/v1/agents/{agent}"): {"name": "Probe"},
        ("POST", "/v1/agents/{agent}/rooms/{room}/messages"): {"text": "hi", "sender": "eve"},
        ("POST", "/v1/agents/{agent}/memories/search"): {"query": "sailing"},
        ("POST", "/v1/keys"): {"name": "probe"},
        ("POST", "/v1/agents/{agent}/webhooks"): {"url": "https://hooks.example.com/hook"},
        ("POST", "/v1/agents/{agent}/documents"): UPLOAD,
        ("POST", "/v1/turns/{turn_id}/approval"): {"approve": False},
        ("POST", "/v1/chat/completions"): {
            "model": world.agent_id,
            "messages": [{"role": "user", "content": "hi"}],
        },
    }
    if method in {"GET", "DELETE"}:
        return None
    assert (method, path) in bodies, f"tests/test_auth.py: add a body for {method} {path}"
    return bodies[(method, path)]


def routes(app: Any) -> list[tuple[str, str]]:
    found = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert len(found) >= 15
    return sorted(found)


def fill(path: str, params: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in params, f"tests/test_auth.py: no value for path parameter {name}"
        return params[name]

    return re.sub(r"\{(\w+)\}", one, path)


def call(client: TestClient, method: str, path: str, world: World, **headers: str) -> Any:
    url = fill(path, world.params())
    body = body_for(method, path, world)
    if body is UPLOAD:
        return client.request(method, url, files=UPLOAD, headers=headers)
    return client.request(method, url, json=body, headers=headers)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime, run_inline(runtime))) as test_client:
        yield test_client


def build_world(
    client: TestClient, store: Store, make_tenant: Callable[[str], TenantKey], name: str
) -> World:
    tenant = make_tenant(name)
    auth = tenant.headers
    character = json.loads((CHARACTERS / "ada.json").read_text())
    agent = client.post("/v1/agents", json=character, headers=auth)
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    posted = client.post(
        f"/v1/agents/{agent_id}/rooms/lobby/messages",
        json={"text": "I like sailing", "sender": "sam"},
        headers=auth,
    ).json()
    webhook_id = str(uuid.uuid4())
    if "/v1/agents/{agent}/webhooks" in client.app.openapi()["paths"]:  # type: ignore[attr-defined]
        hook = client.post(
            f"/v1/agents/{agent_id}/webhooks",
            json={"url": "https://hooks.example.com/h"},
            headers=auth,
        )
        assert hook.status_code == 201, hook.text
        webhook_id = hook.json()["id"]
    key_id = next(k["id"] for k in client.get("/v1/keys", headers=auth).json())
    document = client.post(
        f"/v1/agents/{agent_id}/documents",
        files={"file": ("sea.md", b"The sea is wide.", "text/markdown")},
        headers=auth,
    )
    assert document.status_code == 201, document.text
    return World(
        tenant,
        uuid.UUID(key_id),
        agent_id,
        posted["turn_id"],
        posted["message_id"],
        webhook_id,
        document.json()["id"],
    )


def snapshot(client: TestClient, world: World) -> dict[str, Any]:
    """What tenant A can see of its own data."""
    auth = world.tenant.headers
    agent = client.get(f"/v1/agents/{world.agent_id}", headers=auth)
    memories = client.get(f"/v1/agents/{world.agent_id}/memories?limit=100", headers=auth)
    turn = client.get(f"/v1/turns/{world.turn_id}", headers=auth)
    assert agent.status_code == memories.status_code == turn.status_code == 200
    return {
        "character": agent.json()["character"],
        "memories": sorted(m["id"] for m in memories.json()["data"]),
        "turn": turn.json(),
        "rooms": client.get(f"/v1/agents/{world.agent_id}/rooms", headers=auth).json(),
        "documents": client.get(f"/v1/agents/{world.agent_id}/documents", headers=auth).json(),
    }


def test_every_route_but_health_needs_credentials(
    client: TestClient, store: Store, make_tenant: Callable[[str], TenantKey]
) -> None:
    world = build_world(client, store, make_tenant, "acme")
    revoked = create_key(store, world.tenant.tenant_id)
    assert store.revoke_key(world.tenant.tenant_id, revoked.key.id)
    for method, path in routes(client.app):
        if (method, path) in PUBLIC:
            assert call(client, method, path, world).status_code == 200
            continue
        for headers in (
            {},
            {"Authorization": "Bearer carrier_not-a-real-key"},
            {"Authorization": f"Bearer {revoked.secret}"},
            {"Authorization": f"Basic {world.tenant.key}"},
            {"Authorization": "Bearer not.a.jwt"},
        ):
            response = call(client, method, path, world, **headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"


def test_no_route_reaches_another_tenants_data(
    client: TestClient, store: Store, make_tenant: Callable[[str], TenantKey]
) -> None:
    a = build_world(client, store, make_tenant, "acme")
    b = make_tenant("globex")
    before = snapshot(client, a)
    for method, path in routes(client.app):
        response = call(client, method, path, a, **b.headers)
        names_a_resource = "{" in path or path == "/v1/chat/completions"
        if names_a_resource:
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] in {"not_found", "model_not_found"}
        else:
            assert response.status_code < 300, (method, path, response.text)
            assert a.agent_id not in response.text, (method, path)
            assert str(a.key_id) not in response.text, (method, path)
    assert snapshot(client, a) == before
    assert client.get("/v1/keys", headers=a.tenant.headers).status_code == 200


def test_a_key_limited_to_one_agent_reaches_only_that_agent(
    client: TestClient, store: Store, make_tenant: Callable[[str], TenantKey]
) -> None:
    world = build_world(client, store, make_tenant, "acme")
    auth = world.tenant.headers
    other = client.post("/v1/agents", json={"name": "Bea"}, headers=auth).json()["id"]
    made = client.post("/v1/keys", json={"agent_ids": [world.agent_id]}, headers=auth)
    assert made.status_code == 201 and made.json()["key"].startswith("carrier_")
    limited = {"Authorization": f"Bearer {made.json()['key']}"}
    assert client.get(f"/v1/agents/{world.agent_id}", headers=limited).status_code == 200
    assert client.get(f"/v1/agents/{other}", headers=limited).status_code == 404
    listed = client.get("/v1/agents", headers=limited).json()["data"]
    assert [a["id"] for a in listed] == [world.agent_id]
    for method, path, body in [
        ("POST", "/v1/agents", {"name": "Cy"}),
        ("POST", "/v1/keys", {}),
        ("GET", "/v1/keys", None),
    ]:
        response = client.request(method, path, json=body, headers=limited)
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "forbidden"
    # A key cannot be limited to another tenant's agent, nor shown again after it is made.
    globex = make_tenant("globex")
    assert (
        client.post("/v1/keys", json={"agent_ids": [world.agent_id]}, headers=globex.headers)
    ).status_code == 404
    assert "key" not in client.get("/v1/keys", headers=auth).json()[0]


def test_a_revoked_key_stops_working_at_once(
    client: TestClient, store: Store, make_tenant: Callable[[str], TenantKey]
) -> None:
    tenant = make_tenant("acme")
    spare = client.post("/v1/keys", json={"name": "spare"}, headers=tenant.headers).json()
    spare_auth = {"Authorization": f"Bearer {spare['key']}"}
    assert client.get("/v1/agents", headers=spare_auth).status_code == 200
    assert client.delete(f"/v1/keys/{spare['id']}", headers=tenant.headers).status_code == 204
    assert client.get("/v1/agents", headers=spare_auth).status_code == 401
    assert client.delete(f"/v1/keys/{spare['id']}", headers=tenant.headers).status_code == 404


# -- end users: JWTs verified against a JWKS served over real HTTP ----------------


@pytest.fixture
def jwt_client(store: Store, issuer: Issuer) -> Iterator[TestClient]:
    runtime = make_runtime(
        store,
        offline_models(),
        jwt_jwks_url=issuer.url,
        jwt_issuer="https://issuer.example",
        jwt_audience="carrier",
    )
    with TestClient(create_app(lambda: runtime, run_inline(runtime))) as test_client:
        yield test_client


def test_an_end_user_token_may_chat_as_its_subject_and_nothing_more(
    jwt_client: TestClient,
    store: Store,
    issuer: Issuer,
    make_tenant: Callable[[str], TenantKey],
    ada: Character,
) -> None:
    client = jwt_client
    world = build_world(client, store, make_tenant, "acme")
    tenant_id = str(world.tenant.tenant_id)
    grace = {"Authorization": f"Bearer {issuer.token({'sub': 'grace', 'tenant_id': tenant_id})}"}
    eve = {"Authorization": f"Bearer {issuer.token({'sub': 'eve', 'tenant_id': tenant_id})}"}
    messages = f"/v1/agents/{world.agent_id}/rooms/g1/messages"

    posted = client.post(messages, json={"text": "Hello"}, headers=grace)
    assert posted.status_code == 202, posted.text
    turn = client.get(f"/v1/turns/{posted.json()['turn_id']}", headers=grace).json()
    assert turn["status"] == "done" and turn["replies"]
    assert client.get(messages, headers=grace).status_code == 200
    # The sender is the token's subject: no one else's name, no one else's turns or rooms.
    impostor = client.post(messages, json={"text": "Hi", "sender": "eve"}, headers=grace)
    assert impostor.status_code == 403
    assert client.get(f"/v1/turns/{posted.json()['turn_id']}", headers=eve).status_code == 404
    assert client.get(f"/v1/turns/{world.turn_id}", headers=grace).status_code == 404
    assert client.get(messages, headers=eve).status_code == 404  # her own g1 does not exist
    # Everything else takes an API key.
    for method, path in routes(client.app):
        if (method, path) in PUBLIC | END_USER:
            continue
        response = call(client, method, path, world, **grace)
        assert response.status_code == 403, (method, path, response.text)
        assert "API key" in response.json()["error"]["message"]
    assert issuer.fetches == 1  # the JWKS is fetched once and cached


def test_an_end_users_rooms_are_their_own_whatever_key_they_name(
    jwt_client: TestClient, store: Store, issuer: Issuer, make_tenant: Callable[[str], TenantKey]
) -> None:
    client = jwt_client
    world = build_world(client, store, make_tenant, "acme")
    tenant_id = str(world.tenant.tenant_id)
    bob = {"Authorization": f"Bearer {issuer.token({'sub': 'bob', 'tenant_id': tenant_id})}"}
    eve = {"Authorization": f"Bearer {issuer.token({'sub': 'eve', 'tenant_id': tenant_id})}"}
    support = f"/v1/agents/{world.agent_id}/rooms/support"

    def texts(headers: dict[str, str]) -> list[str]:
        page = client.get(f"{support}/messages", headers=headers)
        assert page.status_code == 200, page.text
        return [m["text"] for m in page.json()["data"] if not m["from_agent"]]

    said = client.post(f"{support}/messages", json={"text": "my card is 4111"}, headers=bob)
    assert said.status_code == 202
    assert client.get(f"{support}/messages", headers=eve).status_code == 404
    # Eve posting to the same key starts a room of her own; Bob's stays as it was.
    joined = {"text": "hi", "room_kind": "group"}
    assert client.post(f"{support}/messages", json=joined, headers=eve).status_code == 202
    assert texts(eve) == ["hi"]
    assert texts(bob) == ["my card is 4111"]
    assert client.get(support, headers=bob).json()["kind"] == "dm"
    # The tenant's key sees both, under keys scoped to each subject.
    rooms = client.get(f"/v1/agents/{world.agent_id}/rooms", headers=world.tenant.headers)
    names = {r["room"] for r in rooms.json()["data"]}
    assert {"user:bob:support", "user:eve:support"} <= names
    # Worlds too: the first to speak in a world owns it, and an end user naming the
    # tenant's world gets one of her own instead of its ownership.
    hq = {"text": "hi", "room_kind": "group", "world": "acme-hq"}
    assert client.post(f"{support}/messages", json=hq, headers=eve).status_code == 202
    staff = {**hq, "sender": "ceo"}
    posted = client.post(
        f"/v1/agents/{world.agent_id}/rooms/staff/messages",
        json=staff,
        headers=world.tenant.headers,
    )
    assert posted.status_code == 202
    agent_id = uuid.UUID(world.agent_id)
    owners = {
        key: store.world(world_id_for(agent_id, "api", key)).metadata["ownership"]["ownerId"]
        for key in ("acme-hq", "user:eve:acme-hq")
    }
    assert owners == {
        "acme-hq": str(entity_id_for(agent_id, "api", "ceo")),
        "user:eve:acme-hq": str(entity_id_for(agent_id, "api", "eve")),
    }


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"exp": 1}, "expired"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"tenant_id": None}, "tenant"),
        ({"tenant_id": "not-a-uuid"}, "tenant"),
        ({"tenant_id": str(uuid.uuid4())}, "does not exist"),
        ({"sub": None}, "sub"),
        ({"exp": 10**12}, "invalid token"),  # past year 9999
        ({"sub": "\ud800"}, "surrogate"),
    ],
)
def test_bad_end_user_tokens_are_401_naming_the_problem(
    jwt_client: TestClient,
    issuer: Issuer,
    make_tenant: Callable[[str], TenantKey],
    claims: dict[str, Any],
    words: str,
) -> None:
    tenant = make_tenant("acme")
    merged = {"sub": "grace", "tenant_id": str(tenant.tenant_id), **claims}
    token = issuer.token({k: v for k, v in merged.items() if v is not None})
    response = jwt_client.get(
        "/v1/turns/" + str(uuid.uuid4()), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert words in response.json()["error"]["message"].lower()


def test_a_token_signed_by_another_key_or_unsigned_is_refused(
    jwt_client: TestClient, issuer: Issuer, make_tenant: Callable[[str], TenantKey]
) -> None:
    tenant = make_tenant("acme")
    claims = {"sub": "grace", "tenant_id": str(tenant.tenant_id)}
    forged = issuer.token(
        claims, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    unsigned = jwt.encode(
        {**claims, "exp": int(time.time()) + 60, "iss": "https://issuer.example", "aud": "carrier"},
        key=None,
        algorithm="none",
        headers={"kid": issuer.kid},
    )
    for token in (forged, unsigned):
        response = jwt_client.get(
            "/v1/turns/" + str(uuid.uuid4()), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, response.text


def test_end_user_tokens_need_an_issuer_and_never_act_for_the_local_tenant(
    store: Store, issuer: Issuer, make_tenant: Callable[[str], TenantKey]
) -> None:
    tenant = make_tenant("acme")
    token = issuer.token({"sub": "grace", "tenant_id": str(tenant.tenant_id)})
    # The JWKS alone would take any token its keys signed, another app's included.
    no_issuer = make_runtime(store, offline_models(), jwt_jwks_url=issuer.url)
    with TestClient(create_app(lambda: no_issuer, run_inline(no_issuer))) as client:
        answer = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert "CARRIER_JWT_ISSUER" in answer.json()["error"]["message"]
    runtime = make_runtime(
        store, offline_models(), jwt_jwks_url=issuer.url, jwt_issuer="https://issuer.example"
    )
    local = issuer.token({"sub": "grace", "tenant_id": str(LOCAL_TENANT_ID)})
    with TestClient(create_app(lambda: runtime, run_inline(runtime))) as client:
        answer = client.get("/v1/models", headers={"Authorization": f"Bearer {local}"})
        assert answer.status_code == 401
        assert "local tenant" in answer.json()["error"]["message"]
        ok = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200


def test_end_user_tokens_are_refused_when_no_jwks_is_configured(
    client: TestClient, make_tenant: Callable[[str], TenantKey]
) -> None:
    response = client.get(
        "/v1/turns/" + str(uuid.uuid4()), headers={"Authorization": "Bearer a.b.c"}
    )
    assert response.status_code == 401
    assert "CARRIER_JWT_JWKS_URL" in response.json()["error"]["message"]
