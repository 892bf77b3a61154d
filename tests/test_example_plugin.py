"""The example plugin of docs/writing-a-plugin.md, installed as a package and found through
its `carrier.plugins` entry point, as a plugin author's would be."""

from __future__ import annotations

import shutil
import sys
import tomllib
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.decision import Decision, render_decision
from carrier_core.models import ScriptedModel
from carrier_core.plugin import ENTRY_POINT_GROUP, load_plugins
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "weather_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example laid out as an installer leaves it: its package, and a `.dist-info`
    with the metadata and entry points its pyproject.toml declares (what pip writes,
    done here by hand: the test must run offline, where pip cannot fetch `wheel`)."""
    declared = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    project = declared["project"]
    target = tmp_path_factory.mktemp("site")
    for package in declared["tool"]["setuptools"]["packages"]:
        shutil.copytree(EXAMPLE / package, target / package)
    dist = target / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    groups = project["entry-points"]
    (dist / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
            for group, points in groups.items()
        )
    )
    return target


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed example importable and its entry point visible; plugins loaded by
    name are forgotten before and after (another test names a `weather` plugin too)."""
    monkeypatch.syspath_prepend(str(installed))
    load_plugins.cache_clear()
    yield
    load_plugins.cache_clear()
    for name in [m for m in sys.modules if m.startswith("carrier_weather")]:
        del sys.modules[name]


def xml(*actions: str, text: str = "", providers: tuple[str, ...] = ()) -> str:
    return render_decision(Decision(actions=list(actions), text=text, providers=list(providers)))


def test_the_example_is_found_through_its_entry_point(on_path: None) -> None:
    [found] = entry_points(group=ENTRY_POINT_GROUP, name="weather")
    assert found.dist is not None and found.dist.name == "carrier-weather"
    assert found.value == "carrier_weather:plugin"
    plugins = load_plugins(("weather",))
    assert [p.name for p in plugins.plugins] == ["bootstrap", "weather"]
    assert plugins.skipped == ()


def test_a_character_naming_the_example_uses_its_provider_and_action(
    on_path: None, scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = scripted_runtime.register_agent(
        Character(name=f"Weather-{uuid.uuid4().hex[:6]}", plugins=["weather"])
    )
    scripted.add(
        xml("REPLY", text="One moment.", providers=("weather",)),
        xml("FORECAST", text="Here is the forecast for Paris."),
    )
    result = run_turn(
        scripted_runtime,
        {"agent_id": agent, "room": "r", "sender": "u", "text": "Weather in Paris today?"},
    )
    assert result.status == "done", result.error
    assert result.reply_texts == [
        "Here is the forecast for Paris.",
        "Paris: Rain from 3 pm, 14 degrees.",
    ]
    first, second = (r.prompt for r in scripted.requests if r.task == "decide")
    assert "- weather: The forecast for the city the user names." in first
    assert "# Weather\n" not in first and "# Weather\nParis: Rain from 3 pm" in second
    assert "- FORECAST: Send the weather forecast" in first
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["act:FORECAST"].detail["data"] == {"city": "paris"}
