"""The usage ledger: one row per model call, and the sums budgets and reports read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from functools import partial
from typing import Any, NamedTuple

from psycopg.types.json import Jsonb

from carrier_core.storable import storable_json
from carrier_core.store.base import StoreBase


class ModelCall(NamedTuple):
    """One row of the usage ledger."""

    agent_id: uuid.UUID
    provider: str
    model: str
    role: str
    status: str = "ok"
    turn_id: uuid.UUID | None = None
    step: str | None = None
    task: str | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 0
    cost_usd: float = 0.0


class UsageRow(NamedTuple):
    """Totals of one agent on one day (UTC)."""

    agent: str
    day: date
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


# Ledger rows from a JSON array of `ModelCall`s: any number of calls in one statement.
_INSERT_CALLS = (
    "INSERT INTO model_calls (agent_id, turn_id, step, provider, model, role, task,"
    " status, error, input_tokens, output_tokens, latency_ms, cost_usd)"
    " SELECT agent_id, turn_id, step, provider, model, role, task, status, error,"
    " input_tokens, output_tokens, latency_ms, cost_usd FROM jsonb_to_recordset(%s) AS x("
    "agent_id uuid, turn_id uuid, step text, provider text, model text, role text, task text,"
    " status text, error text, input_tokens int, output_tokens int, latency_ms int,"
    " cost_usd float8)"
)


def _calls(calls: Sequence[ModelCall]) -> Jsonb:
    rows = [call._asdict() for call in calls]
    return Jsonb(rows, dumps=partial(storable_json, default=str))


class UsageLedger(StoreBase):
    """Model calls: recorded, summed per turn, day and agent."""

    def record_model_calls(self, calls: Sequence[ModelCall]) -> None:
        """Ledger rows for calls made outside a step's record (failures, embedding runs)."""
        if calls:
            with self.connection() as conn:
                conn.execute(_INSERT_CALLS, (_calls(calls),))

    def spent_today(self, agent_id: uuid.UUID) -> float:
        """The agent's estimated model spend since midnight UTC, in dollars."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(cost_usd), 0) AS spent FROM model_calls"
                " WHERE agent_id = %s AND created_at >= date_trunc('day', now() AT TIME ZONE"
                " 'UTC') AT TIME ZONE 'UTC'",
                (agent_id,),
            ).fetchone()
        return float(row["spent"]) if row else 0.0

    def model_calls(self, turn_id: uuid.UUID) -> list[ModelCall]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT agent_id, provider, model, role, status, turn_id, step, task, error,"
                " input_tokens, output_tokens, latency_ms, cost_usd FROM model_calls"
                " WHERE turn_id = %s ORDER BY id",
                (turn_id,),
            ).fetchall()
        return [ModelCall(**row) for row in rows]

    def usage(self, *, agent: str | None = None, days: int = 7) -> list[UsageRow]:
        """Totals per agent and day (UTC) over the last `days` days, newest first.
        `agent` is an agent's handle, name or id."""
        filters = ["c.created_at >= now() - make_interval(days => %s)"]
        params: list[Any] = [days]
        if agent:
            filters.append("(a.handle = %s OR a.name = %s OR a.id::text = %s)")
            params.extend([agent, agent, agent])
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT a.name AS agent, (c.created_at AT TIME ZONE 'UTC')::date AS day,"
                " count(*) AS calls, count(*) FILTER (WHERE c.status = 'error') AS errors,"
                " sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens,"
                " sum(c.cost_usd) AS cost_usd"
                " FROM model_calls c JOIN agents a ON a.id = c.agent_id"
                f" WHERE {' AND '.join(filters)}"
                " GROUP BY a.name, day ORDER BY day DESC, a.name".encode(),
                params,
            ).fetchall()
        return [
            UsageRow(
                agent=row["agent"],
                day=row["day"],
                calls=int(row["calls"]),
                errors=int(row["errors"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                cost_usd=float(row["cost_usd"]),
            )
            for row in rows
        ]
