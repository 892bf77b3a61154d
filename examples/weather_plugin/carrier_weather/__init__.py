"""An example Carrier plugin (docs/writing-a-plugin.md): what the weather is in a few
cities, from a table, so it runs anywhere without a key.

- `weather`, a dynamic provider: not in every prompt (it would cost tokens on every
  message), listed to the model, which names it in `<providers>` when it needs it; the
  turn then decides again with the forecast in the prompt.
- `FORECAST`, an action the model picks to send the forecast for the city the message
  names, word for word.
"""

from __future__ import annotations

from carrier_core.sdk import (
    Action,
    ActionResult,
    Cut,
    Decision,
    Plugin,
    Provider,
    ProviderResult,
    TurnContext,
)

FORECASTS = {
    "lisbon": "Sunny, 24 degrees, a light north wind.",
    "oslo": "Snow showers, -3 degrees.",
    "paris": "Rain from 3 pm, 14 degrees.",
}


def city_in(text: str) -> str | None:
    """The first city of the table the text names, if any."""
    lowered = text.lower()
    return next((city for city in FORECASTS if city in lowered), None)


def weather(ctx: TurnContext) -> ProviderResult:
    """The forecast for the city the latest message names, as prompt text and a value."""
    city = city_in(ctx.message.content.text)
    if city is None:
        return ProviderResult(f"Forecasts are known for: {', '.join(sorted(FORECASTS))}.")
    return ProviderResult(f"{city.title()}: {FORECASTS[city]}", {"weather_city": city})


def forecast(ctx: TurnContext, decision: Decision) -> ActionResult:
    """Say the forecast for the city named; when none is, say which cities are known."""
    city = city_in(ctx.message.content.text)
    if city is None:
        return ActionResult(replies=[f"I know the weather in {', '.join(sorted(FORECASTS))}."])
    return ActionResult(replies=[f"{city.title()}: {FORECASTS[city]}"], data={"city": city})


def names_a_city(ctx: TurnContext) -> bool:
    """FORECAST is offered only when the message names a city it knows."""
    return city_in(ctx.message.content.text) is not None


plugin = Plugin(
    name="weather",
    description="Weather forecasts for a few cities.",
    actions=[
        Action(
            "FORECAST",
            "Send the weather forecast for the city the user names.",
            forecast,
            validate=names_a_city,
            similes=("WEATHER", "GET_WEATHER"),
            examples=(("what's the weather in Oslo?", "Oslo: Snow showers, -3 degrees."),),
        )
    ],
    providers=[
        Provider(
            "weather",
            "The forecast for the city the user names.",
            weather,
            title="Weather",
            position=55,
            dynamic=True,
            # Cut early when the prompt is over budget, last lines first.
            cut=Cut(order=15, end="tail"),
        )
    ],
)
