"""The built-in offline model: a deterministic ELIZA-style responder.

It needs no key and no network, and always answers in the structured forms
the turn asks for, so every part of Carrier runs and is tested without a
provider. It is not a language model: it matches patterns in the latest
message, reflects pronouns, notes simple facts ("my name is …", "I like …")
when reflecting, and answers "what do you remember about me?" from the facts
the turn's providers recalled. Its replies are plain; real models replace it.

It still sounds like the character: asked who it is, it answers with its name and the
first line of its bio; a message close to one of its `messageExamples` (two or more
words in common besides the most common ones) gets that example's answer, names filled
in. Everything is chosen deterministically, so tests stay exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from hashlib import blake2b
from typing import Any

from carrier_core.decision import Decision, render_decision
from carrier_core.models.base import Generation, ModelRequest, Usage, estimate_tokens

NAME = "carrier-offline-eliza"

_SWAP = {
    "i": "you",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "am": "are",
    "i'm": "you're",
    "myself": "yourself",
    "you": "I",
    "your": "my",
    "yours": "mine",
    "you're": "I'm",
    "yourself": "myself",
    "was": "were",
}


def _reflect(fragment: str) -> str:
    words = fragment.strip().rstrip(".!?").split()
    return " ".join(_SWAP.get(w.lower(), w) for w in words)


def _pick(options: list[str], key: str) -> str:
    index = int.from_bytes(blake2b(key.encode(), digest_size=4).digest(), "little")
    return options[index % len(options)]


_RECALL = re.compile(
    r"\b(what(?:'s| is) my name|who am i|remember|what do you know|about me|what do i (?:like|love)"
    r"|do you know my)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"\b(?:my name is|call me|i am called)\s+([A-Za-z][\w'-]*)", re.IGNORECASE)
_LIKE = re.compile(r"\bi (?:really )?(like|love|enjoy)\s+([^.!?,;]+)", re.IGNORECASE)
_LIVE = re.compile(r"\bi live in\s+([^.!?,;]+)", re.IGNORECASE)
_WORK = re.compile(r"\bi work (?:as|at|on|for)\s+([^.!?,;]+)", re.IGNORECASE)
_FEEL = re.compile(r"\bi(?: am|'m| feel)\s+([^.!?,;]+)", re.IGNORECASE)
_IDENTITY = re.compile(
    r"\b(who are you|what are you|what(?:'s| is) your name|introduce yourself"
    r"|tell me about yourself)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z']+")
#: Words too common to tell one example from another.
_COMMON = frozenset(
    _WORD.findall(
        "a an and are as at be but by can did do does for from had has have how i i'm if in"
        " is it its just me my no not of on or so that the their then there they this to too"
        " very was we what when where which who why will with would you your"
    )
)
_ROLE = re.compile(
    r"\b(?:make|set|promote|demote)\s+([A-Za-z][\w'-]*)\s+(?:to\s+|as\s+)?(?:an?\s+)?"
    r"(owner|admin|none)\b",
    re.IGNORECASE,
)
_GREETING = re.compile(r"^\s*(hi|hello|hey|good (?:morning|afternoon|evening))\b", re.IGNORECASE)

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str], str], str]]

_RULES: list[_Rule] = [
    (_NAME, lambda m, s: f"Nice to meet you, {m.group(1)}. What would you like to talk about?"),
    (_LIKE, lambda m, s: f"What do you {m.group(1).lower()} most about {_reflect(m.group(2))}?"),
    (_LIVE, lambda m, s: f"What is it like to live in {m.group(1).strip()}?"),
    (_WORK, lambda m, s: f"How do you find working {m.group(0).split(' ', 2)[2].strip()}?"),
    (_FEEL, lambda m, s: f"Why do you say you are {_reflect(m.group(1))}?"),
    (_GREETING, lambda m, s: f"Hello, {s}. How are you today?"),
]

_QUESTION_REPLIES = ["Why do you ask?", "What do you think?", "What answer would please you most?"]
_DEFAULT_REPLIES = [
    "Tell me more.",
    "Please go on.",
    "How does that make you feel?",
    "I see. What does that suggest to you?",
]


def _fact_claims(speaker: str, text: str) -> list[str]:
    claims: list[str] = []
    if m := _NAME.search(text):
        claims.append(f"{speaker}'s name is {m.group(1)}")
    claims.extend(
        f"{speaker} {m.group(1).lower()}s {m.group(2).strip()}" for m in _LIKE.finditer(text)
    )
    if m := _LIVE.search(text):
        claims.append(f"{speaker} lives in {m.group(1).strip()}")
    if m := _WORK.search(text):
        claims.append(f"{speaker} works {m.group(0).split(' ', 2)[2].strip()}")
    return claims


def _addressed(hints: Mapping[str, str]) -> bool:
    """In a group, the offline model answers only messages that name the agent."""
    agent = hints.get("agent", "")
    return hints.get("room_kind") != "group" or agent.lower() in hints.get("message", "").lower()


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower())) - _COMMON


def _closest_example(message: str, examples: Sequence[Sequence[str]]) -> str | None:
    """The answer of the example whose prompt shares the most words with the message
    (two at least; the first such example on a tie)."""
    said = _words(message)
    best, best_score = None, 1
    for prompt, answer in examples:
        score = len(said & _words(prompt))
        if score > best_score:
            best, best_score = answer, score
    return best


#: The task of describing an image attachment (`carrier_core.turn.describe`).
DESCRIBE_IMAGE = "describe_image"


def describe_image(request: ModelRequest) -> str:
    """What the offline model says of an image: only what its metadata tells (its title,
    type and size, as far as they are known), since it cannot see. Always the same for
    the same image, so tests can expect it word for word."""
    image = request.images[0] if request.images else None
    kind = (image.media_type if image else "") or request.hints.get("content_type", "")
    facts = [kind or "type unknown"]
    facts.append(f"{len(image.data)} bytes" if image and image.data is not None else "size unknown")
    title = request.hints.get("title", "").strip()
    named = f' titled "{title}"' if title else ""
    return f"An image{named} ({', '.join(facts)}), described from its details alone."


class OfflineModel:
    """Answers the `decide` task (with what to remember, when asked: inline reflection)
    and the `reflect` task, and describes images from their details; anything else gets
    a plain reply."""

    name = NAME
    offline = True

    def generate(self, request: ModelRequest) -> Generation:
        if request.task == "reflect":
            text = self._reflect(request)
        elif request.task == "decide":
            decision = self._decide(request)
            if "learn" in request.hints:  # inline reflection: what to remember, too
                agent = request.hints.get("agent", "")
                decision.reflection = _learned(request.hints["learn"], agent)
            text = render_decision(decision)
        elif request.task == "update_role":
            assignments = [
                {"entity": m.group(1), "role": m.group(2).upper()}
                for m in _ROLE.finditer(request.hints.get("message", ""))
            ]
            text = json.dumps({"assignments": assignments})
        elif request.task == DESCRIBE_IMAGE:
            text = describe_image(request)
        elif request.task == "should_respond":
            action = "RESPOND" if _addressed(request.hints) else "IGNORE"
            text = f"<response><reasoning>-</reasoning><action>{action}</action></response>"
        else:
            text = self._reply(request.hints.get("message", request.prompt), "friend")
        return Generation(
            text=text,
            usage=Usage(estimate_tokens(request.system + request.prompt), estimate_tokens(text)),
            model=self.name,
        )

    def _decide(self, request: ModelRequest) -> Decision:
        hints = request.hints
        message = hints.get("message", "")
        sender = hints.get("sender", "friend")
        agent = hints.get("agent", "")
        if not _addressed(hints):
            return Decision(thought="Not addressed to me; staying quiet.", actions=["IGNORE"])
        if _ROLE.search(message):
            return Decision(thought="A role change was asked for.", actions=["UPDATE_ROLE"])
        if _RECALL.search(message):
            facts = [
                line.removeprefix("- ").strip() for line in hints.get("facts", "").splitlines()
            ]
            facts = [f for f in facts if f]
            text = (
                "Here is what I remember: " + "; ".join(facts) + "."
                if facts
                else "I don't know much about you yet. Tell me something about yourself?"
            )
            return Decision(thought="They asked what I recall.", actions=["REPLY"], text=text)
        knowledge = hints.get("knowledge", "").splitlines()
        if message.rstrip().endswith("?") and knowledge:
            text = "Here is something I know: " + knowledge[0].removeprefix("- ").strip()
            return Decision(thought="My knowledge covers this.", actions=["REPLY"], text=text)
        if _IDENTITY.search(message):
            bio = hints.get("bio", "").strip().splitlines()
            text = f"I'm {agent}." + (f" {bio[0].strip()}" if bio else "")
            return Decision(thought="They asked who I am.", actions=["REPLY"], text=text)
        example = _closest_example(message, json.loads(hints.get("examples") or "[]"))
        if example is not None:
            text = example.replace("{{user1}}", sender).replace("{{agentName}}", agent)
            return Decision(thought="As I would say it.", actions=["REPLY"], text=text)
        return Decision(
            thought="Answering in the manner of ELIZA.",
            actions=["REPLY"],
            text=self._reply(message, sender),
        )

    def _reply(self, message: str, sender: str) -> str:
        for pattern, respond in _RULES:
            if match := pattern.search(message):
                return respond(match, sender)
        options = _QUESTION_REPLIES if message.rstrip().endswith("?") else _DEFAULT_REPLIES
        return _pick(options, message)

    def _reflect(self, request: ModelRequest) -> str:
        learned = _learned(request.hints.get("conversation", ""), request.hints.get("agent", ""))
        return json.dumps({"thought": f"Noted {len(learned['facts'])} fact(s).", **learned})


def _learned(conversation: str, agent: str) -> dict[str, list[dict[str, Any]]]:
    """The facts, relationships and names the offline model notes in a conversation (one
    `speaker: text` a line): the reflection's answer, or the decide answer's inline part."""
    facts: list[dict[str, Any]] = []
    speakers: set[str] = set()
    names: dict[str, str] = {}
    for line in conversation.splitlines():
        speaker, sep, text = line.partition(": ")
        if not sep or speaker == agent:
            continue
        speakers.add(speaker)
        facts.extend({"claim": claim, "about": speaker} for claim in _fact_claims(speaker, text))
        if m := _NAME.search(text):
            names[speaker] = m.group(1)
    return {
        "facts": facts,
        "relationships": [
            {"source": speaker, "target": agent, "tags": ["conversation"]}
            for speaker in sorted(speakers)
        ],
        "names": [{"about": who, "name": name} for who, name in names.items()],
    }
