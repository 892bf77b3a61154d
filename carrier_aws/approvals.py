"""Approvals on Step Functions: the waiting execution's task token, kept and handed back.

The state machine's `approval` step invokes action_exec with its task token
(`.waitForTaskToken`) and waits. `ask` keeps the token with the request and tells
clients (WebSocket frame, webhooks); `wake` answers the token once the request is
settled, by an answer (the API) or its expiry (the turn sweep). See
`carrier_core.turn.approval` for who hands the token back when.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from carrier_aws.push import push_turn
from carrier_aws.webhooks import queue_deliveries, webhook_queue_url
from carrier_core.frames import approval_frames
from carrier_core.turn import approval
from carrier_core.webhooks import plan_approval_deliveries

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.turn.approval import Approval

log = logging.getLogger(__name__)


def wake(runtime: Runtime, sfn: Any, settled: Approval, token: str | None) -> bool:
    """Resume the execution waiting on `token`; False when it was not woken. A wake that
    fails for a while (a throttle, an outage) is tried again by the sweep
    (`rewake`); an execution no longer waiting (it failed or timed out: the sweep restarts
    its room, whose act step sees the answer) is not."""
    if not token:
        return False
    errors = sfn.exceptions
    gone = (errors.TaskDoesNotExist, errors.TaskTimedOut, errors.InvalidToken)
    try:
        sfn.send_task_success(taskToken=token, output=json.dumps({"status": settled.status}))
    except gone:
        log.warning("approval %s: no execution waits on its token any more", settled.id)
    except Exception:
        log.exception("approval %s: its execution was not woken; the sweep tries again", settled.id)
        return False
    runtime.store.mark_woken(settled.id)
    return True


def ask(
    runtime: Runtime,
    sfn: Any,
    sqs: Any,
    approval_id: uuid.UUID,
    token: str,
    ids: Mapping[str, str] | None = None,
) -> Approval:
    """The approval step: keep the token; if the request was answered meanwhile, wake the
    execution at once, else tell the turn's listeners and webhooks that it waits."""
    asked, answered = approval.keep_token(runtime.store, approval_id, token)
    if answered:
        wake(runtime, sfn, asked, token)
        return asked
    # The execution waits, holding no compute: its room stays its own until the request
    # expires, so the sweep does not look at it every minute meanwhile.
    runtime.store.hold_room(asked.turn_id, asked.expires_at)
    push_turn(runtime, asked.turn_id, lambda: approval_frames(asked))
    deliveries = plan_approval_deliveries(runtime, asked)
    queue_url = webhook_queue_url()
    if deliveries and queue_url:
        try:
            queue_deliveries(sqs, queue_url, deliveries, ids)
        except Exception:  # the webhook sweep queues what was planned
            log.exception("approval %s: webhook deliveries not queued", asked.id)
    return asked


def expire(runtime: Runtime, sfn: Any) -> int:
    """The sweep's part: expire the approvals whose time ran out and wake their turns, and
    wake again those answered whose wake failed."""
    expired = runtime.store.expire_due_approvals()
    for settled, token in expired:
        push_turn(runtime, settled.turn_id, partial(approval_frames, settled))
        wake(runtime, sfn, settled, token)
    for settled, token in runtime.store.approvals_to_wake():
        wake(runtime, sfn, settled, token)
    return len(expired)
