"""Attachments: the media a message carries, in ElizaOS's `Media` shape.

An attachment is a JSON object with `id`, `url`, `title`, `source`, `description`,
`text` and `contentType`, all optional strings; other keys are kept as sent. This
module checks that shape where attachments come in (a message, an action's reply),
tells images apart, and turns an image into what a model is shown: its http(s) URL,
passed on as a URL for the provider to fetch, or the bytes of a `data:` URL. Carrier
never fetches an attachment's URL itself.

An image's `description` may be made by Carrier (`carrier_core.turn.describe`) and
stored on the message; the message's metadata names those (`DESCRIBED`), so the same
message sent again, without them, is still the same message.
"""

from __future__ import annotations

import binascii
import mimetypes
from base64 import b64decode
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from carrier_core.models.base import IMAGE_TYPES, ModelImage

if TYPE_CHECKING:
    from carrier_core.memory import Memory

#: The fields of ElizaOS's `Media`: each a string when present.
MEDIA_FIELDS = ("id", "url", "title", "source", "description", "text", "contentType")
#: The message metadata key naming the attachments whose description Carrier made:
#: {"<index>": "<model>"}.
DESCRIBED = "described_attachments"


class BadDataUrl(ValueError):
    """A `data:` URL that cannot be read."""


def parse_data_url(url: str) -> tuple[str, bytes]:
    """A `data:[<type>][;base64],<data>` URL as its media type (text/plain when it names
    none, as RFC 2397 says) and its bytes."""
    if not url.startswith("data:"):
        raise BadDataUrl("not a data: URL")
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise BadDataUrl("a data: URL needs a ',' before its data")
    params = [p.strip() for p in header.split(";")]
    encoded = len(params) > 1 and params[-1].lower() == "base64"
    media_type = params[0].lower() or "text/plain"
    if encoded:
        try:
            data = b64decode(unquote_to_bytes(payload), validate=True)
        except (binascii.Error, ValueError):
            raise BadDataUrl("its data is not valid base64") from None
    else:
        data = unquote_to_bytes(payload)
    return media_type, data


def check_attachments(attachments: list[dict[str, Any]]) -> None:
    """Raise ValueError naming the attachment (by its index) and field that does not fit
    the `Media` shape: a field that is not a string, a `data:` URL that cannot be read."""
    for index, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            raise ValueError(f"{index}: must be an object, not {type(attachment).__name__}")
        for name in MEDIA_FIELDS:
            value = attachment.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{index}.{name}: must be a string, not {type(value).__name__}")
        url = attachment.get("url")
        if isinstance(url, str) and url.startswith("data:"):
            try:
                parse_data_url(url)
            except BadDataUrl as exc:
                raise ValueError(f"{index}.url: {exc}") from None


def _text(attachment: dict[str, Any], name: str) -> str:
    value = attachment.get(name)
    return value.strip() if isinstance(value, str) else ""


def media_type(attachment: dict[str, Any]) -> str:
    """The attachment's type as best known: a `data:` URL's own, else its `contentType`,
    else what its URL's file name says; empty when nothing says."""
    url = _text(attachment, "url")
    if url.startswith("data:"):
        header = url[5:].partition(",")[0]
        return header.split(";")[0].strip().lower() or "text/plain"
    stated = _text(attachment, "contentType").lower()
    if stated:
        return stated
    if url:
        guessed, _ = mimetypes.guess_type(urlsplit(url).path)
        return guessed or ""
    return ""


def is_image(attachment: dict[str, Any]) -> bool:
    """An image: its type is image/* (or ElizaOS's `ContentType` "image")."""
    kind = media_type(attachment)
    return kind == "image" or kind.startswith("image/")


def shown_url(attachment: dict[str, Any]) -> str:
    """The URL as a prompt shows it: a `data:` URL as its type and size, not its data."""
    url = _text(attachment, "url")
    if not url.startswith("data:"):
        return url
    try:
        kind, data = parse_data_url(url)
    except BadDataUrl:
        return "(inline data that cannot be read)"
    return f"(inline {kind}, {len(data)} bytes)"


def image_input(attachment: dict[str, Any]) -> ModelImage | None:
    """The image as a model is shown it: the bytes of its `data:` URL, or its http(s) URL
    (with its type when known). None when it has neither, or its data is not an image of
    a type models take (`IMAGE_TYPES`): there is nothing a model could look at."""
    url = _text(attachment, "url")
    if url.startswith("data:"):
        try:
            kind, data = parse_data_url(url)
        except BadDataUrl:
            return None
        return ModelImage(data=data, media_type=kind) if kind in IMAGE_TYPES else None
    if url.lower().startswith(("http://", "https://")):
        kind = media_type(attachment)
        return ModelImage(url=url, media_type=kind if kind.startswith("image/") else "")
    return None


def needs_description(attachment: dict[str, Any]) -> bool:
    """An image without a description, that a model could be shown."""
    return (
        is_image(attachment)
        and not _text(attachment, "description")
        and image_input(attachment) is not None
    )


def as_sent(memory: Memory) -> list[dict[str, Any]]:
    """The message's attachments as their sender sent them: without the descriptions
    Carrier made."""
    made = memory.metadata.get(DESCRIBED) or {}
    return [
        {k: v for k, v in attachment.items() if k != "description"}
        if str(index) in made
        else attachment
        for index, attachment in enumerate(memory.content.attachments)
    ]


#: The most characters of an attachment's text a prompt shows.
MAX_PROMPT_TEXT_CHARS = 2000


def prompt_lines(speaker: str, attachment: dict[str, Any]) -> list[str]:
    """How a prompt shows one attachment: who sent it, its title, type and URL, then its
    description and its text (on one line, cut to `MAX_PROMPT_TEXT_CHARS`)."""
    title = _text(attachment, "title")
    kind = media_type(attachment)
    head = f"- {speaker} sent " + (f'"{title}"' if title else "an attachment")
    head += f" ({kind})" if kind else ""
    url = shown_url(attachment)
    lines = [head + (f": {url}" if url else "")]
    if description := " ".join(_text(attachment, "description").split()):
        lines.append(f"  Description: {description}")
    if text := " ".join(_text(attachment, "text").split()):
        if len(text) > MAX_PROMPT_TEXT_CHARS:
            text = text[:MAX_PROMPT_TEXT_CHARS] + f" … (cut; {len(text)} characters in all)"
        lines.append(f"  Text: {text}")
    return lines
