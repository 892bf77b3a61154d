"""Attachments: the ATTACHMENTS provider, images described once by the large model (through
the real OpenAI, Anthropic and boto3 SDKs against local fakes), and attachments that
actions send with their replies, as the API, the WebSocket and webhooks carry them."""

from __future__ import annotations

import json
import uuid
from base64 import b64decode
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from carrier_aws.local.emulator import Emulator
from carrier_core import Character, Runtime, run_turn
from carrier_core.api.app import create_app
from carrier_core.attachments import DESCRIBED
from carrier_core.decision import Decision, render_decision
from carrier_core.models import (
    Generation,
    HashEmbedding,
    ModelBadRequest,
    ModelImage,
    ModelRequest,
    ModelRole,
    ModelSet,
    OfflineModel,
    ScriptedModel,
    Usage,
)
from carrier_core.models import anthropic as an
from carrier_core.models import openai as oa
from carrier_core.models.offline import DESCRIBE_IMAGE
from carrier_core.models.select import FallbackModel
from carrier_core.store.store import Store
from carrier_core.turn.describe import PROMPT, SYSTEM
from carrier_core.turn.ingest import InvalidMessage
from carrier_core.turn.run import TurnResult
from carrier_core.webhooks import deliver, plan_deliveries
from tests.conftest import TenantKey, make_runtime, run_inline
from tests.fake_llm import FakeLLM, Reply, error, fake_llm
from tests.sample_plugin import CHART
from tests.test_webhooks import Receiver, assert_signed, register, serving
from tests.test_websocket import RETRY_SCALE, frames_until_done, serve, url

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
#: A real 1x1 PNG, 70 bytes.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/"
    "iZk9HQAAAABJRU5ErkJggg=="
)
PNG = b64decode(PNG_B64)
IMAGE = {
    "id": "img-1",
    "url": f"data:image/png;base64,{PNG_B64}",
    "title": "cat.png",
    "source": "upload",
    "contentType": "image/png",
}
NOTES = {
    "id": "doc-1",
    "url": "https://example.com/notes.txt",
    "title": "notes.txt",
    "contentType": "text/plain",
    "text": "Buy milk.\nCall Ada.",
}
#: What the offline model says of IMAGE: its details, since it cannot see.
OFFLINE_DESCRIPTION = (
    'An image titled "cat.png" (image/png, 70 bytes), described from its details alone.'
)


class Recording:
    """The offline model, keeping every request it answers."""

    name = OfflineModel.name
    offline = True

    def __init__(self) -> None:
        self.inner = OfflineModel()
        self.requests: list[ModelRequest] = []

    def generate(self, request: ModelRequest) -> Generation:
        self.requests.append(request)
        return self.inner.generate(request)

    def tasks(self, task: str) -> list[ModelRequest]:
        return [r for r in self.requests if r.task == task]


def section(prompt: str, title: str) -> str:
    """One `# title` section of a decide prompt, without its heading."""
    return prompt.split(f"# {title}\n", 1)[1].split("\n\n", 1)[0]


def say(runtime: Runtime, agent: uuid.UUID, text: str, **extra: Any) -> TurnResult:
    return run_turn(
        runtime,
        {"agent_id": agent, "room": "r", "sender": "grace", "sender_name": "Grace", "text": text}
        | extra,
    )


def steps(runtime: Runtime, turn_id: uuid.UUID) -> dict[str, Any]:
    return {s.step: s for s in runtime.store.turn_steps(turn_id)}


# -- the provider, and descriptions made once --------------------------------------------


def test_the_provider_shows_each_attachment_and_an_image_is_described_once(
    store: Store, ada: Character
) -> None:
    model = Recording()
    runtime = make_runtime(store, ModelSet(small=model, large=model, embedding=HashEmbedding()))
    agent = runtime.register_agent(ada)
    first = say(
        runtime,
        agent,
        "Here are my cat and my list.",
        attachments=[IMAGE, NOTES],
        client_message_id="m-1",
    )
    assert first.status == "done"

    # The image was shown to the large model as bytes, once; the text attachment was not.
    [describe] = model.tasks(DESCRIBE_IMAGE)
    assert describe.role is ModelRole.LARGE and describe.system == SYSTEM
    assert describe.images == (ModelImage(data=PNG, media_type="image/png"),)
    stored = store.memory(first.message_id)
    assert stored.content.attachments == [{**IMAGE, "description": OFFLINE_DESCRIPTION}, NOTES]
    assert stored.metadata[DESCRIBED] == {"0": OfflineModel.name}
    assert steps(runtime, first.turn_id)["decide"].detail["attachments_described"] == [
        {"message_id": str(first.message_id), "attachment": 0, "model": OfflineModel.name}
    ]
    [call] = [c for c in store.model_calls(first.turn_id) if c.task == DESCRIBE_IMAGE]
    assert (call.role, call.step, call.status) == ("large", "decide", "ok")

    expected = (
        '- Grace sent "cat.png" (image/png): (inline image/png, 70 bytes)\n'
        f"  Description: {OFFLINE_DESCRIPTION}\n"
        '- Grace sent "notes.txt" (text/plain): https://example.com/notes.txt\n'
        "  Text: Buy milk. Call Ada."
    )
    [decide] = model.tasks("decide")
    assert section(decide.prompt, "Attachments") == expected

    # A later turn shows the stored description and makes no second description call.
    second = say(runtime, agent, "What do you make of them?")
    assert second.status == "done"
    assert len(model.tasks(DESCRIBE_IMAGE)) == 1
    assert section(model.tasks("decide")[-1].prompt, "Attachments") == expected
    assert [c.task for c in store.model_calls(second.turn_id) if c.task == DESCRIBE_IMAGE] == []

    # The description is Carrier's: the same message sent again is still the same message.
    again = say(
        runtime,
        agent,
        "Here are my cat and my list.",
        attachments=[IMAGE, NOTES],
        client_message_id="m-1",
    )
    assert again.duplicate and again.turn_id == first.turn_id


class ChartOnSales(Recording):
    """Chooses SEND_CHART (tests/sample_plugin.py) when the message speaks of sales;
    otherwise the offline model answers."""

    def generate(self, request: ModelRequest) -> Generation:
        if request.task == "decide" and "sales" in request.hints.get("message", ""):
            self.requests.append(request)
            text = render_decision(Decision(actions=["SEND_CHART"]))
            return Generation(text=text, usage=Usage(0, 0), model=self.name)
        return super().generate(request)


def test_only_the_recent_messages_attachments_are_shown_and_the_agents_own_too(
    store: Store, ada: Character
) -> None:
    model = ChartOnSales()
    runtime = make_runtime(
        store, ModelSet(small=model, large=model, embedding=HashEmbedding()), recent_messages=3
    )
    agent = runtime.register_agent(
        ada.model_copy(update={"plugins": ["tests.sample_plugin:charting"]})
    )
    say(runtime, agent, "An old note.", attachments=[{**NOTES, "title": "old.txt"}])
    charted = say(runtime, agent, "Show me the sales.")
    assert [r.content.attachments for r in charted.replies] == [[CHART]]
    say(runtime, agent, "Thanks.", attachments=[NOTES])
    # The last three messages: "Show me the sales.", the agent's chart and "Thanks.". The
    # old note is further back; the chart came with its description, so none is made.
    decide = model.tasks("decide")[-1]
    assert section(decide.prompt, "Attachments") == (
        '- Ada sent "Sales by month" (image/png): https://example.com/charts/sales.png\n'
        "  Description: A bar chart of sales by month.\n"
        '- Grace sent "notes.txt" (text/plain): https://example.com/notes.txt\n'
        "  Text: Buy milk. Call Ada."
    )
    assert model.tasks(DESCRIBE_IMAGE) == []


def test_a_message_without_attachments_shows_no_section(store: Store, ada: Character) -> None:
    model = Recording()
    runtime = make_runtime(store, ModelSet(small=model, large=model, embedding=HashEmbedding()))
    agent = runtime.register_agent(ada)
    assert say(runtime, agent, "Hello").status == "done"
    assert "# Attachments" not in model.tasks("decide")[0].prompt
    assert model.tasks(DESCRIBE_IMAGE) == []


@pytest.mark.parametrize(
    ("attachments", "problem"),
    [
        ([{"url": 5}], "attachments: Value error, 0.url: must be a string, not int"),
        (
            [NOTES, {"title": ["a", "list"]}],
            "attachments: Value error, 1.title: must be a string, not list",
        ),
        (
            [{"url": "data:image/png;base64,not base64!"}],
            "attachments: Value error, 0.url: its data is not valid base64",
        ),
        (
            [{"url": "data:image/png;base64"}],
            "attachments: Value error, 0.url: a data: URL needs a ',' before its data",
        ),
    ],
)
def test_a_bad_attachment_is_refused_naming_it(
    runtime: Runtime, ada: Character, attachments: list[dict[str, Any]], problem: str
) -> None:
    agent = runtime.register_agent(ada)
    with pytest.raises(InvalidMessage) as refused:
        say(runtime, agent, "hi", attachments=attachments)
    assert problem in str(refused.value)


# -- the model adapters send images --------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with fake_llm() as server:
        yield server


def image_request() -> ModelRequest:
    return ModelRequest(
        role=ModelRole.LARGE,
        task=DESCRIBE_IMAGE,
        system=SYSTEM,
        prompt=PROMPT,
        images=(
            ModelImage(url="https://example.com/cat.jpg"),
            ModelImage(data=PNG, media_type="image/png"),
        ),
    )


def openai_model(fake: FakeLLM, name: str = "gpt-4o") -> oa.OpenAIChatModel:
    pytest.importorskip("openai")
    client = oa.make_client(api_key="sk-test", base_url=fake.url + "/v1", timeout=5, max_retries=0)
    return oa.OpenAIChatModel(client, name)


def openai_text(text: str) -> Reply:
    message = {"role": "assistant", "content": text}
    return Reply(
        body={
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 12, "total_tokens": 912},
        }
    )


def test_openai_is_sent_images_as_image_url_parts(fake: FakeLLM) -> None:
    fake.queue(CHAT, openai_text("A cat."))
    assert openai_model(fake).generate(image_request()).text == "A cat."
    [seen] = fake.requests(CHAT)
    assert seen.body["messages"] == [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": PROMPT},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            ],
        },
    ]


def test_anthropic_is_sent_images_as_image_blocks(fake: FakeLLM) -> None:
    pytest.importorskip("anthropic")
    client = an.make_client(api_key="ak-test", base_url=fake.url, timeout=5, max_retries=0)
    model = an.AnthropicModel(client, "claude-sonnet-4-20250514")
    assert model.generate(image_request()).text == "Hello as text."
    [seen] = fake.requests(MESSAGES)
    assert seen.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                },
                {"type": "text", "text": PROMPT},
            ],
        }
    ]
    # An image type the API does not take is refused before anything is sent.
    bmp = ModelRequest(
        role=ModelRole.LARGE,
        task=DESCRIBE_IMAGE,
        system=SYSTEM,
        prompt=PROMPT,
        images=(ModelImage(data=b"BM", media_type="image/bmp"),),
    )
    with pytest.raises(ModelBadRequest, match=r"takes images as image/png, .*not image/bmp"):
        model.generate(bmp)
    assert len(fake.requests(MESSAGES)) == 1


def test_a_model_image_is_a_url_or_bytes_and_says_which_it_is_not() -> None:
    with pytest.raises(ValueError, match="exactly one of them"):
        ModelImage()
    with pytest.raises(ValueError, match="must be http"):
        ModelImage(url="file:///etc/passwd")
    with pytest.raises(ValueError, match="need an image/\\* media type"):
        ModelImage(data=b"x", media_type="text/plain")


def test_a_turn_on_openai_shows_the_image_by_url_and_keeps_the_description(
    fake: FakeLLM, store: Store, ada: Character
) -> None:
    model = openai_model(fake)
    runtime = make_runtime(store, ModelSet(small=model, large=model, embedding=HashEmbedding()))
    agent = runtime.register_agent(ada)
    photo = {"url": "https://example.com/cat.jpg", "title": "cat"}  # its type from its name
    fake.queue(CHAT, openai_text("A ginger cat asleep on a keyboard."))
    result = say(runtime, agent, "Look!", attachments=[photo])
    assert result.status == "done" and result.reply_texts == ["Hello from the fake OpenAI."]

    described, decided = fake.requests(CHAT)
    assert described.body["messages"][1]["content"] == [
        {"type": "text", "text": PROMPT + "\nIts title: cat"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    assert "tools" not in described.body  # a description is plain text
    prompt = decided.body["messages"][1]["content"]
    assert section(prompt, "Attachments") == (
        '- Grace sent "cat" (image/jpeg): https://example.com/cat.jpg\n'
        "  Description: A ginger cat asleep on a keyboard."
    )
    [attachment] = store.memory(result.message_id).content.attachments
    assert attachment == {**photo, "description": "A ginger cat asleep on a keyboard."}
    [call] = [c for c in store.model_calls(result.turn_id) if c.task == DESCRIBE_IMAGE]
    assert (call.provider, call.model, call.input_tokens) == ("openai", "gpt-4o", 900)


def test_a_failing_description_leaves_the_turn_done_and_is_recorded(
    fake: FakeLLM, store: Store, ada: Character
) -> None:
    model = openai_model(fake)
    runtime = make_runtime(store, ModelSet(small=model, large=model, embedding=HashEmbedding()))
    agent = runtime.register_agent(ada)
    photo = {"url": "https://example.com/cat.jpg", "title": "cat", "contentType": "image/jpeg"}
    fake.queue(CHAT, error(400, "Timeout while downloading the image.", "invalid_request_error"))
    result = say(runtime, agent, "Look!", attachments=[photo])
    assert result.status == "done" and result.reply_texts == ["Hello from the fake OpenAI."]

    [failure] = steps(runtime, result.turn_id)["decide"].detail["attachment_errors"]
    assert failure["message_id"] == str(result.message_id) and failure["attachment"] == 0
    assert failure["error"].startswith("ModelBadRequest: openai gpt-4o:")
    assert "Timeout while downloading the image." in failure["error"]
    # Shown without a description; the failed call is in the ledger.
    prompt = fake.requests(CHAT)[-1].body["messages"][1]["content"]
    assert section(prompt, "Attachments") == (
        '- Grace sent "cat" (image/jpeg): https://example.com/cat.jpg'
    )
    assert store.memory(result.message_id).content.attachments == [photo]
    [call] = [c for c in store.model_calls(result.turn_id) if c.task == DESCRIBE_IMAGE]
    assert call.status == "error" and "Timeout while downloading" in (call.error or "")

    # The next turn, while the message is recent, tries again.
    fake.queue(CHAT, openai_text("A cat."))
    assert say(runtime, agent, "Can you see it now?").status == "done"
    assert store.memory(result.message_id).content.attachments == [
        {**photo, "description": "A cat."}
    ]


# -- Bedrock: bytes only ---------------------------------------------------------------------


def test_bedrock_is_sent_image_bytes_and_told_a_url_image_cannot_be_seen(
    store: Store, ada: Character
) -> None:
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config
    from botocore.stub import Stubber

    from carrier_aws.bedrock import BedrockModel

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    llama = "meta.llama3-1-8b-instruct-v1:0"
    reply = {
        "output": {"message": {"role": "assistant", "content": [{"text": "A cat."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 50, "outputTokens": 3, "totalTokens": 53},
        "metrics": {"latencyMs": 5},
    }
    unseen = (
        "[An image at https://example.com/cat.jpg cannot be shown to this model: Bedrock"
        " takes images only as bytes, and Carrier does not fetch URLs.]"
    )
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            reply,
            {
                "modelId": llama,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"text": PROMPT},
                            {"text": unseen},
                            {"image": {"format": "png", "source": {"bytes": PNG}}},
                        ],
                    }
                ],
                "system": [{"text": SYSTEM}],
                "inferenceConfig": {"maxTokens": 1024},
            },
        )
        assert BedrockModel(client, llama).generate(image_request()).text == "A cat."

    # In a turn, a URL image is described as unseen without a call: only decide calls.
    decision = {"thought": "t", "actions": ["REPLY"], "text": "Nice."}
    claude = "anthropic.claude-3-haiku-20240307-v1:0"
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            {
                **reply,
                "output": {
                    "message": {
                        "role": "assistant",
                        "content": [
                            {"toolUse": {"toolUseId": "t1", "name": "respond", "input": decision}}
                        ],
                    }
                },
            },
        )
        model = BedrockModel(client, claude)
        runtime = make_runtime(store, ModelSet(small=model, large=model, embedding=HashEmbedding()))
        agent = runtime.register_agent(ada)
        photo = {"url": "https://example.com/cat.jpg", "title": "cat"}
        result = say(runtime, agent, "Look!", attachments=[photo])
        stub.assert_no_pending_responses()
    assert result.status == "done" and result.reply_texts == ["Nice."]
    [attachment] = store.memory(result.message_id).content.attachments
    assert attachment["description"] == (
        "An image at https://example.com/cat.jpg that could not be seen: bedrock models take"
        " images only as bytes, and Carrier does not fetch URLs."
    )
    assert [c.task for c in store.model_calls(result.turn_id) if c.role == "large"] == ["decide"]
    # An agent's models are wrapped for fallbacks: the wrapper says what its first one needs.
    wrapped = FallbackModel("large", [("bedrock", lambda: BedrockModel(client, claude))])
    assert wrapped.takes_image_urls is False


# -- actions send attachments ----------------------------------------------------------------


def charting_agent(runtime: Runtime, tenant_id: uuid.UUID) -> uuid.UUID:
    """An agent whose large model always chooses SEND_CHART (tests/sample_plugin.py)."""
    return runtime.register_agent(
        Character(
            name="Charty",
            plugins=["tests.sample_plugin:charting"],
            settings={"model_provider": "charting"},
        ),
        tenant_id,
    )


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


def test_an_actions_attachment_is_in_the_turn_the_messages_and_the_webhook_body(
    store: Store, acme: TenantKey
) -> None:
    runtime = make_runtime(store, webhook_allow_private_urls=True, webhook_timeout_s=2)
    agent = charting_agent(runtime, acme.tenant_id)
    app = create_app(lambda: runtime, run_inline(runtime))
    with serving(Receiver()) as receiver, TestClient(app, headers=acme.headers) as client:
        hook = register(client, agent, receiver.url())
        posted = client.post(
            f"/v1/agents/{agent}/rooms/lobby/messages",
            json={"text": "Show me the sales.", "sender": "grace"},
        )
        assert posted.status_code == 202, posted.text
        turn_id = posted.json()["turn_id"]
        turn = client.get(f"/v1/turns/{turn_id}").json()
        assert turn["status"] == "done"
        [reply] = turn["replies"]
        assert reply == {
            "id": reply["id"],
            "text": "Here is the chart.",
            "actions": ["SEND_CHART"],
            "attachments": [CHART],
        }
        messages = client.get(f"/v1/agents/{agent}/rooms/lobby/messages").json()["data"]
        assert [m["attachments"] for m in messages] == [[CHART], []]

        [delivery_id] = plan_deliveries(runtime, uuid.UUID(turn_id))
        assert deliver(runtime, delivery_id).status == "delivered"
        [received] = receiver.wait_for(1)
    payload = assert_signed(hook["secret"], received)
    assert payload["reply"] == reply


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (
            "SEND_CHART_SILENTLY",
            "ValueError: handler's attachments need a reply (a non-empty text) to go with",
        ),
        ("SEND_BAD_CHART", "ValueError: handler's attachments: 0.url: must be a string, not int"),
    ],
)
def test_an_action_whose_attachments_do_not_fit_fails_naming_why(
    scripted_runtime: Runtime, scripted: ScriptedModel, action: str, error: str
) -> None:
    agent = scripted_runtime.register_agent(
        Character(name="Charty", plugins=["tests.sample_plugin:charting"])
    )
    scripted.add(f"<response><actions>{action}</actions></response>")
    result = say(scripted_runtime, agent, "Show me the sales.")
    assert result.status == "done"
    assert steps(scripted_runtime, result.turn_id)[f"act:{action}"].detail["error"] == error
    assert all(r.content.attachments == [] for r in result.replies)


def test_an_actions_attachment_is_in_the_websocket_reply_frame(
    database_url: str, store: Store, runtime: Runtime, acme: TenantKey
) -> None:
    agent = charting_agent(runtime, acme.tenant_id)
    with (
        Emulator(database_url, retry_interval_scale=RETRY_SCALE) as emulator,
        serve(emulator) as server,
        connect(url(server, agent, "r1", acme.key)) as socket,
    ):
        socket.send(
            json.dumps({"action": "sendMessage", "text": "Show me the sales.", "sender": "grace"})
        )
        frames = frames_until_done(socket)
    [reply] = [f for f in frames if f["type"] == "reply"]
    assert reply == {
        "type": "reply",
        "event": "MESSAGE_SENT",
        "turn_id": frames[0]["turn_id"],
        "id": reply["id"],
        "text": "Here is the chart.",
        "actions": ["SEND_CHART"],
        "attachments": [CHART],
    }
    assert frames[-1]["type"] == "turn.done"
