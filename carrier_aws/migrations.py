"""Migrations once per deploy: the stack's `DatabaseMigrations` custom resource.

CloudFormation sends the migrate function a Create or Update request when the stack is
deployed (the resource's `Version` is the newest migration, so a deploy that adds one
updates it), and the function answers with a PUT to the request's presigned URL. The
other functions depend on the resource, so they are updated only once the schema is; at
their cold start they merely check it (`carrier_core.store.migrate.check_schema`).
Deleting the stack leaves the database as it is.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: The resource's physical id: one schema per database, whatever the stack.
PHYSICAL_ID = "carrier-schema"


def answer(event: dict[str, Any], migrate: Callable[[], int]) -> dict[str, Any]:
    """The response to a custom resource request; `migrate` returns the schema version."""
    response: dict[str, Any] = {
        "Status": "SUCCESS",
        "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_ID,
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
    }
    if event.get("RequestType") == "Delete":
        response["Reason"] = "the database and its schema are kept"
        return response
    try:
        version = migrate()
    except Exception as exc:  # CloudFormation shows the reason and rolls the deploy back
        log.exception("migrations failed")
        return {**response, "Status": "FAILED", "Reason": f"{type(exc).__name__}: {exc}"[:900]}
    response["Data"] = {"Version": str(version)}
    response["Reason"] = f"the schema is at migration {version}"
    return response


def respond(url: str, response: dict[str, Any], timeout_s: float = 30.0) -> None:
    """PUT the response to CloudFormation's presigned URL (no content type: it is signed
    without one)."""
    body = json.dumps(response).encode()
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as sent:
        sent.read()
