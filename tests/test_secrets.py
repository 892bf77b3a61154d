"""Settings and secrets: plugins read them as ElizaOS's getSetting does; their values are kept
in a secret store (a 0600 file locally, Secrets Manager in the cloud), never in the database,
never in an API answer, never in a log; another tenant can neither read nor overwrite them."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from fastapi.testclient import TestClient
from moto import mock_aws

from carrier_aws.local.emulator import Emulator
from carrier_aws.local.template import STACK
from carrier_aws.runtime import runtime as functions_runtime
from carrier_aws.secrets import PREFIX_VARIABLE, SecretsManagerStore
from carrier_core import Character, Runtime, Settings, parse_character
from carrier_core.agent_settings import get_setting
from carrier_core.api.app import create_app
from carrier_core.character import SECRET, SecretPath, is_credential_name
from carrier_core.cli import chat
from carrier_core.secrets import (
    FileSecretStore,
    SecretStoreError,
    decode_secrets,
    open_secret_store,
)
from carrier_core.store.agents import AgentConflict
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.world import LOCAL_TENANT_ID
from tests import sample_plugin
from tests.conftest import TABLES, TenantKey, make_runtime, run_inline

# The values of the test character's secrets, each unmistakable in any text.
TOP_SHARED = "top-secret-shared-7f3a"  # secrets.SHARED: wins over both settings
OPENAI = "sk-settings-openai-91c2"  # settings.OPENAI_API_KEY: credential-named
PASSWORD = "hunter2-password-77d0"  # settings.twitterPassword: credential-named
DISCORD = "discord-nested-token-a4b9"  # settings.discord.BOT_TOKEN: credential-named, nested
X_TOKEN = "xt-settings-secrets-5d1e"  # settings.secrets.X_TOKEN
SS_SHARED = "ss-shared-0b8c"  # settings.secrets.SHARED: loses to secrets.SHARED
SS_MODE = "ss-mode-66e0"  # settings.secrets.MODE: loses to settings.MODE
SECRET_VALUES = (TOP_SHARED, OPENAI, PASSWORD, DISCORD, X_TOKEN, SS_SHARED, SS_MODE)

STORED: dict[SecretPath, Any] = {
    ("secrets", "SHARED"): TOP_SHARED,
    ("settings", "OPENAI_API_KEY"): OPENAI,
    ("settings", "twitterPassword"): PASSWORD,
    ("settings", "discord", "BOT_TOKEN"): DISCORD,
    ("settings", "secrets", "X_TOKEN"): X_TOKEN,
    ("settings", "secrets", "SHARED"): SS_SHARED,
    ("settings", "secrets", "MODE"): SS_MODE,
}

#: What the `keyed` plugin's provider and action must find (sample_plugin.SETTING_NAMES).
EXPECTED = {
    "OPENAI_API_KEY": OPENAI,  # settings, from the secret store
    "X_TOKEN": X_TOKEN,  # settings.secrets, from the secret store
    "SHARED": TOP_SHARED,  # secrets before settings.secrets
    "MODE": "plain-mode",  # secrets.MODE is empty: settings before settings.secrets
    "FLAG": True,  # the string "true", as ElizaOS reads it
    "ENV_ONLY": "from-the-environment",  # nowhere in the character: the environment
    "NOWHERE": None,
}


def keyholder(**changes: Any) -> dict[str, Any]:
    """A character with secrets in every place ElizaOS files put them."""
    character: dict[str, Any] = {
        "name": "Keyholder",
        "bio": ["Keeps the keys."],
        "plugins": ["tests.sample_plugin:keyed"],
        "secrets": {"SHARED": TOP_SHARED, "MODE": ""},
        "settings": {
            "model_provider": "keyed",
            "OPENAI_API_KEY": OPENAI,
            "MODE": "plain-mode",
            "FLAG": "true",
            "twitterPassword": PASSWORD,
            "discord": {"BOT_TOKEN": DISCORD, "channel": "general"},
            "secrets": {"X_TOKEN": X_TOKEN, "SHARED": SS_SHARED, "MODE": SS_MODE},
        },
    }
    character.update(changes)
    return character


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ENV_ONLY", "from-the-environment")
    monkeypatch.delenv("NOWHERE", raising=False)
    monkeypatch.delenv("CARRIER_SECRET_STORE", raising=False)
    sample_plugin.SEEN.clear()
    yield
    sample_plugin.SEEN.clear()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def keyed_runtime(store: Store, home: Path) -> Runtime:
    """A runtime whose secret store is the local file store under a data folder of its own."""
    runtime = make_runtime(store, home=home)
    assert isinstance(runtime.secrets, FileSecretStore)
    return runtime


@pytest.fixture
def api(keyed_runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: keyed_runtime, run_inline(keyed_runtime))) as client:
        yield client


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


def database_text(store: Store) -> str:
    """Every row of every table, as text."""
    with store._pool.connection() as conn:
        return "\n".join(
            str(row["t"])
            for table in TABLES.replace(" ", "").split(",")
            for row in conn.execute(f"SELECT t::text AS t FROM {table} t").fetchall()
        )


def stored_document(store: Store, agent_id: uuid.UUID | str) -> str:
    with store._pool.connection() as conn:
        row = conn.execute("SELECT character::text AS doc FROM agents WHERE id = %s", (agent_id,))
        found = row.fetchone()
    assert found is not None
    return str(found["doc"])


def assert_no_secret_in(text: str) -> None:
    leaked = [value for value in SECRET_VALUES if value in text]
    assert leaked == []


def create(api: TestClient, tenant: TenantKey, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/v1/agents", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def talk(api: TestClient, tenant: TenantKey, agent: str) -> dict[str, Any]:
    response = api.post(
        f"/v1/agents/{agent}/rooms/r/messages",
        json={"text": "use your keys", "sender": "grace"},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    turn: dict[str, Any] = api.get(
        f"/v1/turns/{response.json()['turn_id']}", headers=tenant.headers
    ).json()
    return turn


# -- what a secret is, and where a plugin finds a setting ------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "api_key",
        "DISCORD_API_TOKEN",
        "token",
        "Client_Secret",
        "dbPassword",
        "TWITTER_PASSWORD",
        "apiKey",
        "discordToken",
        "clientSecret",
        "EVM_PRIVATE_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "WALLET_SECRET_KEY",
        "WALLET_MNEMONIC",
        "SEED_PHRASE",
        "TWITTER_COOKIES",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ],
)
def test_credential_names_are_secrets(name: str) -> None:
    assert is_credential_name(name)


@pytest.mark.parametrize(
    "name", ["model_provider", "MAX_TOKENS", "TOKENIZER", "tokenLimit", "secrets", "voice"]
)
def test_other_names_are_plain_settings(name: str) -> None:
    assert not is_credential_name(name)


def test_secrets_in_lists_and_urls_with_a_password_are_kept_apart() -> None:
    accounts = [{"user": "ada", "password": "pw-in-a-list"}, "plain"]
    url = "postgresql://ada:pw-in-a-url@db.example.com/app"
    character = parse_character(
        {
            "name": "Lister",
            "settings": {
                "accounts": accounts,
                "POSTGRES_URL": url,
                "HOMEPAGE": "https://example.com:8080/a:b@c",
            },
        }
    )
    values = {
        ("settings", "accounts", "0", "password"): "pw-in-a-list",
        ("settings", "POSTGRES_URL"): url,
    }
    assert character.secret_values() == values
    settings = character.to_document()["settings"]
    assert settings["accounts"] == [{"user": "ada", "password": SECRET}, "plain"]
    assert settings["POSTGRES_URL"] == SECRET
    assert settings["HOMEPAGE"] == "https://example.com:8080/a:b@c"
    # A plugin reading the setting gets the list with its value back in place.
    stored = parse_character(character.to_document())
    assert get_setting(stored, "accounts", lambda: values, {}) == accounts
    assert get_setting(stored, "POSTGRES_URL", lambda: values, {}) == url


def test_the_stored_document_keeps_names_and_markers_only() -> None:
    character = parse_character(keyholder())
    assert character.secret_values() == STORED
    document = character.to_document()
    assert document["secrets"] == {"SHARED": SECRET, "MODE": ""}  # empty hides nothing
    settings = document["settings"]
    assert settings["OPENAI_API_KEY"] == settings["twitterPassword"] == SECRET
    assert settings["discord"] == {"BOT_TOKEN": SECRET, "channel": "general"}
    assert settings["secrets"] == {"X_TOKEN": SECRET, "SHARED": SECRET, "MODE": SECRET}
    assert (settings["MODE"], settings["FLAG"]) == ("plain-mode", "true")
    assert_no_secret_in(json.dumps(document))
    # Read back, the markers are what the character holds: the values are elsewhere.
    assert set(parse_character(document).secret_values().values()) == {SECRET}


def test_get_setting_follows_elizaos_order_and_reads_the_store_only_when_it_must() -> None:
    character = parse_character(parse_character(keyholder()).to_document())
    reads: list[int] = []

    def stored() -> dict[SecretPath, Any]:
        reads.append(1)
        return STORED

    environ = {"ENV_ONLY": "from-the-environment", "OFF": "false"}
    found = {n: get_setting(character, n, stored, environ) for n in sample_plugin.SETTING_NAMES}
    assert found == EXPECTED
    assert get_setting(character, "OFF", stored, environ) is False
    reads.clear()
    assert get_setting(character, "MODE", stored, environ) == "plain-mode"
    assert get_setting(character, "ENV_ONLY", stored, environ) == "from-the-environment"
    assert reads == []  # no stored secret on the way: the store is not asked
    # A setting holding a stored secret deeper down is given with its value, read once.
    discord = get_setting(character, "discord", stored, environ)
    assert discord == {"BOT_TOKEN": DISCORD, "channel": "general"}
    assert reads == [1]
    # A marker the store has no value for is nothing, and the next place is looked at.
    assert get_setting(character, "X_TOKEN", dict, {"X_TOKEN": "env-token"}) == "env-token"


# -- through the API, with the local file store ----------------------------------------------


def test_the_api_shows_names_only_and_the_database_holds_no_value(
    api: TestClient, acme: TenantKey, keyed_runtime: Runtime, store: Store, home: Path
) -> None:
    created = create(api, acme, keyholder())
    agent = created["id"]
    for answer in (created, api.get(f"/v1/agents/{agent}", headers=acme.headers).json()):
        character = answer["character"]
        assert character["secrets"] == {"SHARED": SECRET, "MODE": ""}
        assert character["settings"]["OPENAI_API_KEY"] == SECRET
        assert character["settings"]["secrets"] == dict.fromkeys(
            ["X_TOKEN", "SHARED", "MODE"], SECRET
        )
        assert_no_secret_in(json.dumps(answer))

    assert SECRET in stored_document(store, agent)
    assert_no_secret_in(stored_document(store, agent))
    assert_no_secret_in(database_text(store))

    # The values are in a file of the agent's, readable by its user only.
    file = home / "secrets" / f"{agent}.json"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert keyed_runtime.secrets.get(uuid.UUID(agent)) == STORED


def test_a_plugin_reads_settings_and_secrets_in_a_turn(
    api: TestClient, acme: TenantKey, store: Store
) -> None:
    agent = create(api, acme, keyholder())["id"]
    turn = talk(api, acme, agent)
    assert turn["status"] == "done", turn["error"]
    assert [r["text"] for r in turn["replies"]] == ["keys checked"]
    # The provider ran in the decide step, the action in the act step: both found them.
    assert sample_plugin.SEEN == {"provider": EXPECTED, "action": EXPECTED}
    assert_no_secret_in(database_text(store))


def test_a_character_sent_back_keeps_its_secrets_and_a_changed_one_replaces_them(
    api: TestClient, acme: TenantKey, keyed_runtime: Runtime
) -> None:
    agent = create(api, acme, keyholder())["id"]
    shown = api.get(f"/v1/agents/{agent}", headers=acme.headers).json()["character"]

    # Sent back as shown, with another bio: the markers keep the stored values.
    edited = {**shown, "bio": ["Keeps the keys, still."]}
    response = api.put(f"/v1/agents/{agent}", json=edited, headers=acme.headers)
    assert response.status_code == 200, response.text
    assert keyed_runtime.secrets.get(uuid.UUID(agent)) == STORED

    # A new value replaces the old; a secret left out is forgotten.
    settings = {**shown["settings"], "OPENAI_API_KEY": "sk-rotated-3c3c"}
    settings["secrets"] = {k: v for k, v in settings["secrets"].items() if k != "X_TOKEN"}
    response = api.put(
        f"/v1/agents/{agent}", json={**shown, "settings": settings}, headers=acme.headers
    )
    assert response.status_code == 200, response.text
    kept = keyed_runtime.secrets.get(uuid.UUID(agent))
    assert kept[("settings", "OPENAI_API_KEY")] == "sk-rotated-3c3c"
    assert ("settings", "secrets", "X_TOKEN") not in kept
    assert "sk-rotated-3c3c" not in response.text


def test_a_marker_with_no_stored_value_is_refused_by_name(
    api: TestClient, acme: TenantKey, keyed_runtime: Runtime, store: Store
) -> None:
    body = keyholder(settings={"secrets": {"NEW_TOKEN": SECRET}})
    response = api.post("/v1/agents", json=body, headers=acme.headers)
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "settings.secrets.NEW_TOKEN" in message and "give the value itself" in message
    assert store.tenant_agents(acme.tenant_id, limit=10) == []  # nothing stored


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"secrets": "sk-inline"}, "field 'secrets': Input should be a valid dictionary"),
        (
            {"settings": {"secrets": ["sk-in-a-list"]}},
            "settings.secrets must be an object of names to values, got list",
        ),
        ({"secrets": {"BIG_TOKEN": "x" * 70_000}}, "at most 65536 can be kept"),
    ],
)
def test_secrets_that_cannot_be_kept_are_refused_and_nothing_is_stored(
    api: TestClient, acme: TenantKey, store: Store, home: Path, body: dict[str, Any], expected: str
) -> None:
    response = api.post("/v1/agents", json={"name": "Leaky", **body}, headers=acme.headers)
    assert response.status_code == 422, response.text
    assert expected in response.json()["error"]["message"]
    assert "sk-in" not in response.text
    assert store.tenant_agents(acme.tenant_id, limit=10) == []
    assert not (home / "secrets").exists() or not any((home / "secrets").iterdir())


def test_another_tenant_can_neither_read_nor_overwrite_the_secrets(
    api: TestClient,
    acme: TenantKey,
    make_tenant: Callable[[str], TenantKey],
    keyed_runtime: Runtime,
) -> None:
    agent = create(api, acme, keyholder())["id"]
    globex = make_tenant("globex")
    theirs = keyholder(secrets={"SHARED": "globex-overwrite-9"})
    assert api.get(f"/v1/agents/{agent}", headers=globex.headers).status_code == 404
    assert api.put(f"/v1/agents/{agent}", json=theirs, headers=globex.headers).status_code == 404
    assert api.delete(f"/v1/agents/{agent}", headers=globex.headers).status_code == 404
    # A body naming acme's agent's id makes an agent of globex's own.
    own = create(api, globex, {**theirs, "id": agent})
    assert own["id"] != agent
    # And a character file with that id is refused for globex, its secrets untouched.
    with pytest.raises(AgentConflict):
        keyed_runtime.register_agent(parse_character({**theirs, "id": agent}), globex.tenant_id)
    assert keyed_runtime.secrets.get(uuid.UUID(agent)) == STORED
    assert keyed_runtime.secrets.get(uuid.UUID(own["id"]))[("secrets", "SHARED")] == (
        "globex-overwrite-9"
    )


def test_deleting_an_agent_deletes_its_secrets(
    api: TestClient, acme: TenantKey, keyed_runtime: Runtime, home: Path
) -> None:
    agent = create(api, acme, keyholder())["id"]
    assert (home / "secrets" / f"{agent}.json").exists()
    assert api.delete(f"/v1/agents/{agent}", headers=acme.headers).status_code == 204
    assert not (home / "secrets" / f"{agent}.json").exists()
    assert keyed_runtime.secrets.get(uuid.UUID(agent)) == {}
    assert api.get(f"/v1/agents/{agent}", headers=acme.headers).status_code == 404


def test_nothing_logs_a_secret(
    api: TestClient, acme: TenantKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = create(api, acme, keyholder())["id"]
    assert talk(api, acme, agent)["status"] == "done"
    api.post(
        "/v1/agents", json=keyholder(settings={"secrets": {"X": SECRET}}), headers=acme.headers
    )
    api.get(f"/v1/agents/{agent}", headers=acme.headers)
    api.delete(f"/v1/agents/{agent}", headers=acme.headers)
    assert caplog.records  # something was logged, and none of it a secret
    assert_no_secret_in(caplog.text)
    assert_no_secret_in(" ".join(str(r.args) for r in caplog.records))


def test_carrier_chat_keeps_a_files_secrets_in_a_0600_file(
    tmp_path: Path,
    database_url: str,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "keyholder.json"
    path.write_text(json.dumps(keyholder()))
    home = tmp_path / "chat-home"
    monkeypatch.setenv("CARRIER_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    args = argparse.Namespace(
        character=str(path), user="grace", room=None, api=None, key=None, verbose=False
    )
    out = io.StringIO()
    assert chat(args, io.StringIO("use your keys\n"), out) == 0
    assert out.getvalue().splitlines() == ["keys checked"]
    assert sample_plugin.SEEN["action"] == EXPECTED

    agent = parse_character(keyholder()).agent_id
    file = home / "secrets" / f"{agent}.json"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert decode_secrets(file.read_text(), source=str(file)) == STORED
    assert_no_secret_in(stored_document(store, agent))
    assert_no_secret_in(database_text(store))


# -- the local file store ---------------------------------------------------------------------


def test_the_file_store_writes_0600_files_whatever_the_umask(tmp_path: Path) -> None:
    secrets = FileSecretStore(tmp_path / "secrets")
    agent = uuid.uuid4()
    assert secrets.get(agent) == {}
    previous = os.umask(0)
    try:
        secrets.put(agent, STORED)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(secrets.file(agent).stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.directory.stat().st_mode) == 0o700
    assert secrets.get(agent) == STORED
    assert [p.name for p in secrets.directory.iterdir()] == [f"{agent}.json"]  # no temporaries
    secrets.put(agent, {})  # none left: the file goes
    assert not secrets.file(agent).exists()
    secrets.delete(agent)  # deleting again is no error


def test_a_damaged_secrets_file_is_named_without_its_content(tmp_path: Path) -> None:
    secrets = FileSecretStore(tmp_path)
    agent = uuid.uuid4()
    secrets.file(agent).write_text(f'{{"OPENAI_API_KEY": "{OPENAI}"}}')
    with pytest.raises(SecretStoreError) as error:
        secrets.get(agent)
    assert str(secrets.file(agent)) in str(error.value)
    assert OPENAI not in str(error.value)


def test_the_store_is_chosen_by_name_and_a_wrong_name_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_secret_store(Settings(home=tmp_path)), FileSecretStore)
    with pytest.raises(
        SecretStoreError, match=r"no secret store named 'vault' .*file, secretsmanager"
    ):
        open_secret_store(Settings(home=tmp_path, secret_store="vault"))
    monkeypatch.delenv(PREFIX_VARIABLE, raising=False)
    with pytest.raises(SecretStoreError, match=PREFIX_VARIABLE):
        open_secret_store(Settings(secret_store="secretsmanager"))
    monkeypatch.setenv(PREFIX_VARIABLE, "carrier/prod/agents/")
    cloud = open_secret_store(Settings(secret_store="secretsmanager"))
    assert isinstance(cloud, SecretsManagerStore)
    assert cloud.name(uuid.UUID(int=1)) == f"carrier/prod/agents/{uuid.UUID(int=1)}"


# -- the cloud store, against moto's Secrets Manager ------------------------------------------


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("secretsmanager")


def test_secrets_manager_keeps_one_secret_per_agent_read_through_a_cache(
    secretsmanager: Any,
) -> None:
    now = [0.0]
    api_side = SecretsManagerStore("carrier/test-stack/agents", secretsmanager)
    turn_side = SecretsManagerStore(
        "carrier/test-stack/agents", secretsmanager, clock=lambda: now[0]
    )
    agent = uuid.uuid4()
    name = f"carrier/test-stack/agents/{agent}"
    assert turn_side.get(agent) == {}  # no secret yet: nothing stored

    api_side.put(agent, STORED)
    described = secretsmanager.describe_secret(SecretId=name)
    assert described["Tags"] == [{"Key": "carrier:agent-id", "Value": str(agent)}]
    value = secretsmanager.get_secret_value(SecretId=name)["SecretString"]
    assert decode_secrets(value, source=name) == STORED
    now[0] += 61  # the empty read above has aged out
    assert turn_side.get(agent) == STORED

    api_side.put(agent, {("settings", "OPENAI_API_KEY"): "sk-rotated-3c3c"})  # PutSecretValue
    assert turn_side.get(agent) == STORED  # read within the minute: the cached value
    now[0] += 61
    assert turn_side.get(agent) == {("settings", "OPENAI_API_KEY"): "sk-rotated-3c3c"}

    api_side.delete(agent)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        secretsmanager.describe_secret(SecretId=name)
    assert api_side.get(agent) == {}
    api_side.put(agent, STORED)  # deleted at once: the name can be used again
    api_side.put(agent, {})  # none left: deleted
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        secretsmanager.describe_secret(SecretId=name)


def test_a_secrets_manager_refusal_names_the_agent_not_the_value(secretsmanager: Any) -> None:
    agent = uuid.uuid4()
    # Secrets Manager refuses, as AWS does without the API function's policy.
    with Stubber(secretsmanager) as refusing:
        refusing.add_client_error(
            "put_secret_value",
            service_error_code="AccessDeniedException",
            service_message="not authorized to perform: secretsmanager:PutSecretValue",
        )
        with pytest.raises(SecretStoreError) as error:
            SecretsManagerStore("carrier/test-stack/agents", secretsmanager).put(agent, STORED)
    message = str(error.value)
    assert str(agent) in message and "AccessDeniedException" in message
    assert_no_secret_in(message)


def test_a_turn_on_emulated_aws_reads_secrets_from_secrets_manager(
    database_url: str, store: Store
) -> None:
    """The deployed stack's shape, on the emulator: the template sets
    CARRIER_SECRET_STORE=secretsmanager for every function, so the API function stores the
    secrets in (moto's) Secrets Manager and the turn functions read them there, through the
    same store as in AWS. (`carrier dev` itself keeps them in files, which outlast it.)"""
    with Emulator(database_url, retry_interval_scale=0.01) as emulator:
        key = create_key(store, LOCAL_TENANT_ID).secret
        client = TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"})
        created = client.post("/v1/agents", json=keyholder())
        assert created.status_code == 201, created.text
        agent = created.json()["id"]
        name = f"carrier/{STACK}/agents/{agent}"
        secret = emulator.client("secretsmanager").get_secret_value(SecretId=name)
        assert decode_secrets(secret["SecretString"], source=name) == STORED

        accepted = client.post(
            f"/v1/agents/{agent}/rooms/r/messages", json={"text": "keys", "sender": "grace"}
        ).json()
        deadline = time.monotonic() + 10
        while (turn := client.get(f"/v1/turns/{accepted['turn_id']}").json())["status"] not in (
            "done",
            "failed",
        ):
            assert time.monotonic() < deadline, turn
            time.sleep(0.02)
        assert turn["status"] == "done", turn["error"]
        assert [r["text"] for r in turn["replies"]] == ["keys checked"]
        # Read in LlmStepFunction (the provider) and ActionExecFunction (the action), whose
        # runtime (one per process here) reads Secrets Manager: there is no other store.
        assert sample_plugin.SEEN == {"provider": EXPECTED, "action": EXPECTED}
        assert isinstance(functions_runtime().secrets, SecretsManagerStore)
        assert emulator.api_calls["ApiFunction", "secretsmanager", "CreateSecret"] == 1
        assert_no_secret_in(database_text(store))

        assert client.delete(f"/v1/agents/{agent}").status_code == 204
        with pytest.raises(ClientError, match="ResourceNotFoundException"):
            emulator.client("secretsmanager").describe_secret(SecretId=name)


def test_character_model_has_secrets_as_a_field() -> None:
    """The top-level `secrets` of ElizaOS v1 is read as such, not as an unknown field."""
    character = Character(name="x", secrets={"A_TOKEN": "t"})
    assert character.secret_values() == {("secrets", "A_TOKEN"): "t"}
    assert "secrets" not in Character(name="x").to_document()
