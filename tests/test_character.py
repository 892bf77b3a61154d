"""Character files: real ElizaOS files load unchanged; broken ones say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carrier_core import CharacterError, load_character, parse_character, run_turn
from carrier_core.runtime import Runtime
from carrier_core.secrets import FileSecretStore
from tests.conftest import CHARACTERS, ELIZA_CHARACTERS, eliza_character_files

needs_corpus = pytest.mark.skipif(
    not ELIZA_CHARACTERS.is_dir(),
    reason=f"ElizaOS character corpus not found at {ELIZA_CHARACTERS} (present in CI)",
)


@needs_corpus
@pytest.mark.parametrize("path", eliza_character_files(), ids=lambda p: p.name)
def test_elizaos_files_load_and_keep_every_field(path: Path) -> None:
    raw = json.loads(path.read_text())
    character = load_character(path)
    assert character.name == raw["name"]
    stored = character.to_document()
    # Every top-level field survives, unknown ones (clients, modelProvider, ...) included.
    assert set(raw) <= set(stored)
    for key in set(raw) - {"messageExamples", "bio", "lore"}:
        assert stored[key] == raw[key], key
    # And the stored form loads back to the same character (which, read from a file, also
    # knows the file's folder: its knowledge files are there).
    assert parse_character(stored, folder=path.resolve().parent) == character


@needs_corpus
def test_v0_speaker_field_user_is_read_as_the_speaker() -> None:
    character = load_character(ELIZA_CHARACTERS / "shaw.json")
    first = character.message_examples[0]
    assert [line.speaker for line in first] == ["{{user1}}", "Shaw"]
    assert first[1].content.text.startswith("My focus is on building technology")


def test_v1_speaker_field_name_and_string_bio(tmp_path: Path) -> None:
    path = tmp_path / "v1.json"
    path.write_text(
        json.dumps(
            {
                "name": "Vee",
                "bio": "One line of bio.",
                "messageExamples": [[{"name": "{{user1}}", "content": {"text": "hi"}}]],
                "style": {"all": ["terse"]},
                "templates": {"messageHandlerTemplate": "{{providers}}"},
                "settings": {"secrets": {"API_KEY": "x"}},
                "somethingNew": {"kept": True},
            }
        )
    )
    character = load_character(path)
    assert character.bio == ["One line of bio."]
    assert character.message_examples[0][0].speaker == "{{user1}}"
    assert character.secret_values() == {("settings", "secrets", "API_KEY"): "x"}
    assert character.to_document()["somethingNew"] == {"kept": True}


@needs_corpus
@pytest.mark.parametrize("path", eliza_character_files(), ids=lambda p: p.name)
def test_an_agent_from_each_elizaos_file_holds_a_conversation(runtime: Runtime, path: Path) -> None:
    character = load_character(path)
    agent_id = runtime.register_agent(character)
    for text in ["Hello!", "My name is Ren and I like tea.", "What do you remember about me?"]:
        result = run_turn(
            runtime, {"agent_id": agent_id, "room": "r", "sender": "ren", "text": text}
        )
        assert result.status == "done", result.error
        assert result.reply_texts and all(t.strip() for t in result.reply_texts)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"name": "x",', "not valid JSON at line 1, column 14"),
        ('["a list"]', "a character must be a JSON object"),
        ('{"bio": ["b"]}', "field 'name': Field required"),
        ('{"name": "x", "bio": [1, "ok"]}', "field 'bio.0': Input should be a valid string"),
        (
            '{"name": "x", "messageExamples": [[{"content": {"text": "hi"}}]]}',
            "field 'messageExamples.0.0.name': Field required",
        ),
        ('{"name": "x", "style": {"all": "loud"}}', "field 'style.all'"),
        ('{"name": ""}', "field 'name': String should have at least 1 character"),
        ('{"name": "   "}', "field 'name': Value error, must not be blank"),
    ],
)
def test_broken_files_name_the_file_and_the_problem(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(CharacterError) as error:
        load_character(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CharacterError, match="no such character file"):
        load_character(tmp_path / "nope.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CharacterError, match="cannot read character file"):
        load_character(binary)


def test_the_example_characters_load() -> None:
    names = {load_character(p).name for p in CHARACTERS.glob("*.json")}
    assert {"Ada", "Marvin"} <= names


def test_agent_id_is_stable_for_a_name_and_honours_an_explicit_id() -> None:
    assert parse_character({"name": "A"}).agent_id == parse_character({"name": "A"}).agent_id
    assert parse_character({"name": "A"}).agent_id != parse_character({"name": "B"}).agent_id
    explicit = "5b3b1c4e-0000-4000-8000-000000000001"
    assert str(parse_character({"name": "A", "id": explicit}).agent_id) == explicit


def test_secrets_never_reach_the_database(runtime: Runtime, tmp_path: Path) -> None:
    runtime.secrets = FileSecretStore(tmp_path)
    character = parse_character(
        {
            "name": "Keyholder",
            "settings": {"secrets": {"OPENAI_API_KEY": "sk-live-123"}},
            "secrets": {"ANTHROPIC_API_KEY": "sk-ant-456"},
        }
    )
    assert character.secret_values() == {
        ("settings", "secrets", "OPENAI_API_KEY"): "sk-live-123",
        ("secrets", "ANTHROPIC_API_KEY"): "sk-ant-456",
    }
    agent_id = runtime.register_agent(character)
    with runtime.store._pool.connection() as conn:
        row = conn.execute("SELECT character::text AS doc FROM agents WHERE id = %s", (agent_id,))
        stored = row.fetchone()
    assert stored is not None
    assert "sk-live-123" not in stored["doc"] and "sk-ant-456" not in stored["doc"]
    assert runtime.store.character(agent_id).secret_values() == {
        ("settings", "secrets", "OPENAI_API_KEY"): "(secret)",
        ("secrets", "ANTHROPIC_API_KEY"): "(secret)",
    }
    assert runtime.secrets.get(agent_id) == character.secret_values()
