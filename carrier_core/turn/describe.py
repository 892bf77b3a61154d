"""Describing image attachments: once each, by the large model, stored on the message.

Before the decide step composes its prompt, each image among the room's recent messages
(those the ATTACHMENTS provider shows) that has no `description` is shown to the
character's large model and its description is stored on that attachment of the
message. Later turns, and a retried decide step, read it back and make no call again.

The large model describes because it is the role a vision-capable model fills: every
default large model (gpt-4o, Claude Sonnet, Claude 3.5 Sonnet on Bedrock) takes images,
while a small one may not (Claude 3.5 Haiku does not). An image is described once, so
the larger model's price is paid once per image.

A description that fails (a provider error, an image type the model refuses) does not
fail the turn: the attachment is shown without one, the error is named in the decide
step's history (`attachment_errors`), and a later turn tries again while the message is
recent. An image given by URL to a model that needs the bytes (Bedrock) is described,
without a call, as one that could not be seen: Carrier fetches no URL for a model.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from carrier_core.attachments import image_input, needs_description
from carrier_core.models import ModelImage, ModelRequest, ModelRole, TextModel
from carrier_core.models.offline import DESCRIBE_IMAGE
from carrier_core.store.database import DatabaseUnavailable

if TYPE_CHECKING:
    from carrier_core.turn.context import TurnContext

#: The most images one decide step describes, and the time it may spend on them: the
#: step must leave time for its own call (an image left over is described next turn).
MAX_PER_STEP = 3
BUDGET_S = 30.0
#: The longest description kept.
MAX_DESCRIPTION_CHARS = 1000

SYSTEM = "You describe images for someone who cannot see them. Be factual and brief."
PROMPT = (
    "Describe this image in two or three sentences: what it shows, and any text in it."
    " Answer with the description alone."
)


def unseen_description(image: ModelImage, model: TextModel) -> str:
    """What is stored for an image the model cannot be shown (by URL, to a model that
    takes only bytes)."""
    provider = getattr(model, "provider", "") or model.name
    return (
        f"An image at {image.url} that could not be seen: {provider} models take images"
        " only as bytes, and Carrier does not fetch URLs."
    )


def _describe(ctx: TurnContext, attachment: dict[str, Any], image: ModelImage) -> tuple[str, str]:
    """The description of one image, and the model that made it."""
    model = ctx.models.large
    if image.url is not None and not getattr(model, "takes_image_urls", True):
        return unseen_description(image, model), "(not seen)"
    title = attachment.get("title")
    content_type = attachment.get("contentType")
    request = ModelRequest(
        role=ModelRole.LARGE,
        task=DESCRIBE_IMAGE,
        system=SYSTEM,
        prompt=PROMPT + (f"\nIts title: {title}" if isinstance(title, str) and title else ""),
        hints={
            "title": title if isinstance(title, str) else "",
            "content_type": content_type if isinstance(content_type, str) else "",
        },
        images=(image,),
    )
    generation = ctx.generate(request)
    text = generation.text.strip()[:MAX_DESCRIPTION_CHARS]
    if not text:
        raise ValueError(f"{generation.model} gave an empty description")
    return text, generation.model


def describe_images(ctx: TurnContext) -> None:
    """Describe the recent messages' undescribed images (newest first), storing each
    description as it is made; what was done and what failed goes in the step's detail."""
    store = ctx.runtime.store
    recent = ctx.attachment_messages()
    wanted = [
        (named.memory.id, index, attachment)
        for named in reversed(recent)
        for index, attachment in enumerate(named.memory.content.attachments)
        if needs_description(attachment)
    ]
    if not wanted:
        return
    described: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    started = time.monotonic()
    for done, (memory_id, index, attachment) in enumerate(wanted):
        if done >= MAX_PER_STEP or time.monotonic() - started > BUDGET_S:
            ctx.usage.detail["attachments_left_undescribed"] = len(wanted) - done
            break
        where = {"message_id": str(memory_id), "attachment": index}
        image = image_input(attachment)
        assert image is not None  # needs_description checked there is one
        try:
            description, made_by = _describe(ctx, attachment, image)
        except DatabaseUnavailable:
            raise  # not the description's failure: the step is tried again
        except Exception as exc:  # the turn goes on: the attachment is shown undescribed
            errors.append({**where, "error": f"{type(exc).__name__}: {exc}"})
            continue
        store.describe_attachment(memory_id, index, description, made_by=made_by)
        attachment["description"] = description  # what the ATTACHMENTS provider shows
        described.append({**where, "model": made_by})
    # Stored descriptions are not made again: their calls' cost must not wait for the step.
    ctx.write_calls()
    if described:
        ctx.usage.detail["attachments_described"] = described
    if errors:
        ctx.usage.detail["attachment_errors"] = errors
