"""Amazon Bedrock (Converse, Titan embeddings) through boto3 with botocore's Stubber, and
model keys from Secrets Manager through moto. No AWS account, no network."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.response import StreamingBody  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

from carrier_aws.bedrock import BedrockModel, TitanEmbedding, bedrock_models  # noqa: E402
from carrier_core import Character, run_turn  # noqa: E402
from carrier_core.config import Settings  # noqa: E402
from carrier_core.decision import parse_decision  # noqa: E402
from carrier_core.models import (  # noqa: E402
    HashEmbedding,
    ModelAuthError,
    ModelContextTooLong,
    ModelRateLimited,
    ModelRequest,
    ModelRole,
    ModelSet,
    ModelUnavailable,
)
from carrier_core.models.schemas import TASK_TOOLS  # noqa: E402
from carrier_core.plugin import load_plugins  # noqa: E402
from carrier_core.store.store import Store  # noqa: E402
from tests.conftest import make_runtime  # noqa: E402

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"


@pytest.fixture
def client() -> Iterator[Any]:
    bedrock = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    yield bedrock


def converse_reply(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 50, "outputTokens": 12, "totalTokens": 62},
        "metrics": {"latencyMs": 5},
    }


def request(task: str = "decide") -> ModelRequest:
    return ModelRequest(role=ModelRole.LARGE, task=task, system="You are Ada.", prompt="Hi?")


def test_claude_on_bedrock_decides_through_a_forced_tool(client: Any) -> None:
    answer = {"thought": "t", "actions": ["REPLY"], "text": "Hello from Bedrock."}
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            converse_reply([{"toolUse": {"toolUseId": "t1", "name": "respond", "input": answer}}]),
            {
                "modelId": CLAUDE,
                "messages": [{"role": "user", "content": [{"text": "Hi?"}]}],
                "system": [{"text": "You are Ada."}],
                "inferenceConfig": {"maxTokens": 1024},
                "toolConfig": {
                    "tools": [
                        {
                            "toolSpec": {
                                "name": "respond",
                                "description": TASK_TOOLS["decide"][1],
                                "inputSchema": {"json": TASK_TOOLS["decide"][2]},
                            }
                        }
                    ],
                    "toolChoice": {"tool": {"name": "respond"}},
                },
            },
        )
        generation = BedrockModel(client, CLAUDE).generate(request())
    assert parse_decision(generation.text).text == "Hello from Bedrock."
    assert (generation.provider, generation.usage.input_tokens) == ("bedrock", 50)


def test_llama_on_bedrock_answers_in_text(client: Any) -> None:
    xml = "<response><actions>REPLY</actions><text>Hi from Llama.</text></response>"
    with Stubber(client) as stub:
        stub.add_response("converse", converse_reply([{"text": xml}]))
        generation = BedrockModel(client, LLAMA).generate(request())
    assert parse_decision(generation.text).text == "Hi from Llama."


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [
        ("ThrottlingException", "Too many requests", ModelRateLimited),
        ("AccessDeniedException", "You don't have access to the model", ModelAuthError),
        ("ValidationException", "Input is too long for requested model.", ModelContextTooLong),
        ("ServiceUnavailableException", "try later", ModelUnavailable),
        ("ModelTimeoutException", "timed out", ModelUnavailable),
    ],
)
def test_bedrock_errors_are_classified(
    client: Any, code: str, message: str, error: type[Exception]
) -> None:
    with Stubber(client) as stub:
        stub.add_client_error("converse", service_error_code=code, service_message=message)
        with pytest.raises(error):
            BedrockModel(client, CLAUDE).generate(request("reply"))


def titan_body(vector: list[float]) -> dict[str, Any]:
    data = json.dumps({"embedding": vector, "inputTextTokenCount": 3}).encode()
    return {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"}


def test_titan_v2_embeddings(client: Any) -> None:
    model = TitanEmbedding(client, "amazon.titan-embed-text-v2:0", 256)
    assert model.dimensions == 256
    assert TitanEmbedding(client, "amazon.titan-embed-text-v2:0", 384).dimensions == 1024
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_response("invoke_model", titan_body([0.5] * 256))
        result = model.embed(["a", "b"])
    assert [len(v) for v in result.vectors] == [256, 256] and result.usage.input_tokens == 6


def test_the_bedrock_plugin_gives_a_model_set(client: Any) -> None:
    plugins = load_plugins(("carrier_aws.bedrock:plugin",))
    settings = Settings(
        database_url="postgresql://unused", model_provider="bedrock", small_model="bedrock:" + LLAMA
    )
    # The default column (384) does not fit Titan: the offline embedding stays until named.
    assert plugins.model_set(
        "bedrock", Character(name="x"), settings.model_copy(update={"embedding_dimensions": 384})
    ).embedding.name.startswith("carrier-offline")
    models = plugins.model_set("bedrock", Character(name="x"), settings)
    assert (models.small.name, models.large.name) == (
        LLAMA,
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    )
    assert models.embedding.name == "amazon.titan-embed-text-v2:0"
    assert bedrock_models(Character(name="x"), settings, client).large.name.startswith("anthropic.")


def test_a_turn_with_claude_on_bedrock(client: Any, store: Store, ada: Character) -> None:
    answer = {"thought": "t", "actions": ["REPLY"], "text": "Hello from Bedrock."}
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            converse_reply([{"toolUse": {"toolUseId": "t1", "name": "respond", "input": answer}}]),
        )
        model = BedrockModel(client, CLAUDE)
        runtime = make_runtime(store, ModelSet(small=model, large=model, embedding=HashEmbedding()))
        agent = runtime.register_agent(ada)
        result = run_turn(runtime, {"agent_id": agent, "room": "r", "sender": "u", "text": "Hi"})
    assert result.reply_texts == ["Hello from Bedrock."]
    calls = store.model_calls(result.turn_id)
    assert [(c.provider, c.model) for c in calls if c.role == "large"] == [("bedrock", CLAUDE)]
    assert [c.cost_usd > 0 for c in calls if c.role == "large"] == [True]


def test_model_keys_come_from_secrets_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    from carrier_aws.keys import load_model_keys

    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        # Set, then deleted: monkeypatch records the variable's state before the test (a
        # bare delenv of an unset one records nothing), so what load_model_keys sets is
        # undone after it, rather than left for later tests.
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "already-set")
    with moto.mock_aws():
        arn = boto3.client("secretsmanager").create_secret(
            Name="carrier/model-keys",
            SecretString=json.dumps(
                {"OPENAI_API_KEY": "sk-from-secret", "ANTHROPIC_API_KEY": "ignored", "PATH": "x"}
            ),
        )["ARN"]
        loaded = load_model_keys(arn)
    assert loaded == ["OPENAI_API_KEY"]
    assert os.environ["OPENAI_API_KEY"] == "sk-from-secret"
    assert os.environ["ANTHROPIC_API_KEY"] == "already-set"
    monkeypatch.delenv("OPENAI_API_KEY")
