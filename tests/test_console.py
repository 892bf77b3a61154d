"""The web console without a browser: its files as the API serves them (the page, its assets,
their headers), what the page may load and run, where it is told the WebSocket is, and the
API it reads a turn from (steps with their timings, the decision, the prompt, model calls).
tests/test_console_browser.py drives it in Chromium."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from carrier_aws.local.cli import console_link
from carrier_aws.local.emulator import Emulator
from carrier_aws.local.template import load_yaml
from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.api.webconsole import ASSETS, content_security_policy
from carrier_core.store.store import Store
from tests.conftest import ROOT, TenantKey, run_inline

CONSOLE = ROOT / "carrier_core" / "api" / "console"
WEBSOCKET_URL = "wss://abc123.execute-api.eu-west-1.amazonaws.com/live"


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


@pytest.fixture
def client(runtime: Runtime, acme: TenantKey) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime, run_inline(runtime))) as test_client:
        yield test_client


def csp(response: Any) -> dict[str, str]:
    """The response's Content-Security-Policy, by directive."""
    directives = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in directives if d}


# -- the files -------------------------------------------------------------------------


def test_the_page_is_served_at_the_root_with_a_strict_policy_and_no_key(
    client: TestClient, acme: TenantKey
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Carrier console</title>" in page.text
    policy = csp(page)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    # Same origin, and WebSocket URLs (the WebSocket API lives beside the page or elsewhere).
    assert policy["connect-src"] == "'self' ws: wss:"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    # Nothing secret in it: no key of any tenant, no credential at all.
    assert acme.key not in page.text
    assert re.search(r"carrier_[A-Za-z0-9_-]{8}", page.text) is None
    # Sent again only when it changed.
    again = client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_assets_are_served_with_their_types_and_nothing_else_is(client: TestClient) -> None:
    expected = {
        "console.js": "text/javascript; charset=utf-8",
        "console.css": "text/css; charset=utf-8",
        "icon.svg": "image/svg+xml",
    }
    assert expected == ASSETS
    for name, content_type in expected.items():
        response = client.get(f"/console/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == content_type
        assert response.content == (CONSOLE / name).read_bytes()
        assert response.headers["x-content-type-options"] == "nosniff"
    for missing in ("nope.js", "index.html", "..%2Fwebconsole.py", "%2E%2E%2Fapp.py", ""):
        response = client.get(f"/console/{missing}")
        assert response.status_code == 404, missing
        assert response.json()["error"]["code"] == "not_found"
    # Every file in the folder is served (or is the page), so none is shipped for nothing.
    assert {p.name for p in CONSOLE.iterdir()} == {*ASSETS, "index.html"}


def test_the_page_loads_only_its_own_files_and_builds_no_markup_from_data() -> None:
    html = (CONSOLE / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    assert sorted(references) == ["console/console.css", "console/console.js", "console/icon.svg"]
    # No inline script, style or event handler: the policy would refuse them anyway.
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None
    script = (CONSOLE / "console.js").read_text()
    css = (CONSOLE / "console.css").read_text()
    # No CDN, no web font, no other origin: it works offline.
    urls = set(re.findall(r"https?://[^\s\"'`)]+", script + css + html))
    assert urls == {"http://www.w3.org/2000/svg"}, urls
    assert "@import" not in css and "url(" not in css
    # Text from the API is set as text, never parsed as HTML, and nothing is evaluated.
    for risky in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert risky not in script, risky
    # The key is read from the fragment, kept in this tab, and taken out of the address bar.
    assert "location.hash" in script and "sessionStorage" in script
    assert "history.replaceState" in script
    assert "localStorage.setItem(KEY" not in script


def test_the_console_files_are_package_data() -> None:
    """`pip install .` (and the Lambda layer, built with it) ships every console file."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["carrier_core"]
    for path in CONSOLE.iterdir():
        relative = path.relative_to(ROOT / "carrier_core").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


# -- where the WebSocket is --------------------------------------------------------------


def test_the_console_is_told_where_the_websocket_api_is_without_credentials(
    runtime: Runtime,
) -> None:
    beside = TestClient(create_app(lambda: runtime, run_inline(runtime)))
    assert beside.get("/v1/console-config").json() == {"websocket_url": None}
    elsewhere = TestClient(
        create_app(lambda: runtime, run_inline(runtime), websocket_url=WEBSOCKET_URL)
    )
    assert elsewhere.get("/v1/console-config").json() == {"websocket_url": WEBSOCKET_URL}
    # The page may then connect there, and only there besides its own origin.
    policy = csp(elsewhere.get("/"))
    assert policy["connect-src"] == "'self' wss://abc123.execute-api.eu-west-1.amazonaws.com"
    assert content_security_policy(None) != content_security_policy(WEBSOCKET_URL)


def test_the_template_routes_the_root_to_the_api_function_and_names_the_websocket_url() -> None:
    resources = load_yaml(ROOT / "template.yaml")["Resources"]
    api = resources["ApiFunction"]["Properties"]
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"])
        for e in api["Events"].values()
        if e["Type"] == "HttpApi"
    }
    # `/{proxy+}` does not match `/`: the page needs a route of its own.
    assert routes == {("ANY", "/{proxy+}"), ("GET", "/")}
    url = api["Environment"]["Variables"]["CARRIER_WEBSOCKET_URL"]["Fn::Sub"]
    assert url.startswith("wss://${CarrierWebSocketApi}.execute-api.")
    assert url.endswith("/${WebSocketStage}")


def test_the_api_function_serves_the_console_through_api_gateway_events(
    database_url: str, store: Store
) -> None:
    """The page and its files through the API function's handler (Mangum), from API Gateway
    payload v2 events; under the emulator the WebSocket is the one beside the page."""
    event: dict[str, Any] = json.loads((ROOT / "events" / "api_get_turn.json").read_text())
    event["headers"].pop("authorization")

    def get(path: str, route: str = "ANY /{proxy+}") -> dict[str, Any]:
        request = json.loads(json.dumps(event))
        request.update(routeKey=route, rawPath=path)
        request["requestContext"].update(routeKey=route)
        request["requestContext"]["http"]["path"] = path
        request["pathParameters"] = {"proxy": path.lstrip("/")} if path != "/" else {}
        answer: dict[str, Any] = emulator.call(emulator.functions["ApiFunction"], request)
        return answer

    with Emulator(database_url, poll=False) as emulator:
        page = get("/", route="GET /")
        assert page["statusCode"] == 200
        assert page["headers"]["content-type"] == "text/html; charset=utf-8"
        assert "content-security-policy" in page["headers"]
        assert "<title>Carrier console</title>" in page["body"]
        script = get("/console/console.js")
        assert script["statusCode"] == 200
        assert script["headers"]["content-type"].startswith("text/javascript")
        assert not script["isBase64Encoded"]
        assert get("/console/other.js")["statusCode"] == 404
        config = get("/v1/console-config")
        assert json.loads(config["body"]) == {"websocket_url": None}


def test_carrier_dev_links_the_console_with_the_key_in_the_fragment() -> None:
    assert console_link("127.0.0.1", 8000, "carrier_a-b_c") == (
        "http://127.0.0.1:8000/#key=carrier_a-b_c"
    )
    # A wildcard address is opened at the loopback one; IPv6 is bracketed.
    assert console_link("0.0.0.0", 80, "k").startswith("http://127.0.0.1:80/#")
    assert console_link("::1", 8000, "k") == "http://[::1]:8000/#key=k"
    assert console_link("localhost", 1, "a/b+c") == "http://localhost:1/#key=a%2Fb%2Bc"


# -- what the turn inspector reads --------------------------------------------------------


@pytest.fixture
def agent(runtime: Runtime, ada: Character, acme: TenantKey) -> uuid.UUID:
    return runtime.register_agent(ada, acme.tenant_id)


def post(client: TestClient, agent: uuid.UUID, text: str, headers: dict[str, str]) -> str:
    response = client.post(
        f"/v1/agents/{agent}/rooms/lobby/messages",
        json={"text": text, "sender": "grace"},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    turn_id: str = response.json()["turn_id"]
    return turn_id


def test_a_turns_steps_carry_their_timings_and_the_decide_step_its_prompt(
    client: TestClient, agent: uuid.UUID, acme: TenantKey
) -> None:
    turn_id = post(client, agent, "My name is Grace", acme.headers)
    steps = client.get(f"/v1/turns/{turn_id}/steps", headers=acme.headers).json()
    assert [s["step"] for s in steps][:3] == ["ingest", "decide", "act:REPLY"]
    for step in steps:
        assert step["started_at"] <= step["finished_at"]
        assert step["duration_ms"] >= 0
    assert steps[0]["started_at"] <= steps[1]["started_at"] <= steps[2]["started_at"]
    decide = steps[1]["detail"]
    prompt = decide["prompt"]
    assert set(prompt) == {"system", "text"}
    assert "Ada" in prompt["system"] + prompt["text"]
    assert "My name is Grace" in prompt["text"]
    assert decide["prompt_chars"] == len(prompt["system"]) + len(prompt["text"])


def test_a_turns_model_calls_and_decision_are_read_with_an_api_key(
    client: TestClient, agent: uuid.UUID, acme: TenantKey, runtime: Runtime
) -> None:
    turn_id = post(client, agent, "Hi, who are you?", acme.headers)
    calls = client.get(f"/v1/turns/{turn_id}/calls", headers=acme.headers).json()
    decide = next(c for c in calls if c["task"] == "decide")
    assert decide == {
        "step": "decide",
        "provider": "offline",
        "model": decide["model"],
        "role": "large",
        "task": "decide",
        "status": "ok",
        "error": None,
        "input_tokens": decide["input_tokens"],
        "output_tokens": decide["output_tokens"],
        "latency_ms": decide["latency_ms"],
        "cost_usd": 0.0,
    }
    assert decide["input_tokens"] > 0 and decide["latency_ms"] >= 0
    turn = client.get(f"/v1/turns/{turn_id}", headers=acme.headers).json()
    assert turn["usage"]["model_calls"] == len(calls)
    assert turn["usage"]["input_tokens"] == sum(c["input_tokens"] for c in calls)

    decision = client.get(f"/v1/turns/{turn_id}/decision", headers=acme.headers).json()
    assert decision["steps_taken"] == 1
    assert decision["decision"]["actions"] == ["REPLY"]
    assert decision["decision"]["text"] == turn["replies"][0]["text"]
    assert decision["decision"]["thought"]
    assert "Hi, who are you?" in decision["state"]["conversation"]

    missing = str(uuid.uuid4())
    for path in ("calls", "decision"):
        assert client.get(f"/v1/turns/{missing}/{path}", headers=acme.headers).status_code == 404


def test_another_tenant_reads_no_calls_nor_decision(
    client: TestClient,
    agent: uuid.UUID,
    acme: TenantKey,
    make_tenant: Callable[[str], TenantKey],
) -> None:
    turn_id = post(client, agent, "Hello", acme.headers)
    globex = make_tenant("globex")
    for path in ("steps", "calls", "decision"):
        response = client.get(f"/v1/turns/{turn_id}/{path}", headers=globex.headers)
        assert response.status_code == 404, path


def test_a_rooms_messages_name_their_turn(
    client: TestClient, agent: uuid.UUID, acme: TenantKey
) -> None:
    first = post(client, agent, "My name is Grace", acme.headers)
    second = post(client, agent, "I like sailing", acme.headers)
    page = client.get(f"/v1/agents/{agent}/rooms/lobby/messages", headers=acme.headers).json()
    by_text = {m["text"]: m for m in page["data"]}
    assert by_text["My name is Grace"]["turn_id"] == first
    assert by_text["I like sailing"]["turn_id"] == second
    replies = [m for m in page["data"] if m["from_agent"]]
    assert sorted(m["turn_id"] for m in replies) == sorted([first, second])


def test_a_queued_turn_has_its_ingest_step_and_no_decision_yet(
    store: Store, runtime: Runtime, agent: uuid.UUID, acme: TenantKey
) -> None:
    assert store.message_turns([]) == {}
    assert store.message_turns([uuid.uuid4()]) == {}
    client = TestClient(create_app(lambda: runtime, lambda ingested: None))
    turn_id = post(client, agent, "Queued, never run", acme.headers)
    [message] = client.get(f"/v1/agents/{agent}/rooms/lobby/messages", headers=acme.headers).json()[
        "data"
    ]
    assert message["turn_id"] == turn_id  # its turn exists, queued
    steps = client.get(f"/v1/turns/{turn_id}/steps", headers=acme.headers).json()
    assert [s["step"] for s in steps] == ["ingest"]
    decision = client.get(f"/v1/turns/{turn_id}/decision", headers=acme.headers).json()
    assert decision == {"steps_taken": 0, "decision": None, "state": {}}
