"""Health: whether this API can reach its database. Needs no credentials."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from carrier_core.api.deps import RuntimeDep
from carrier_core.api.http_errors import unavailable_response

router = APIRouter(prefix="/v1", tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/health", response_model=Health, responses={503: {"description": "database down"}})
def health(runtime: RuntimeDep) -> Health | JSONResponse:
    try:
        runtime.store.ping()
    except Exception:  # any failure to reach the database is "unavailable"
        return unavailable_response()
    return Health(status="ok")
