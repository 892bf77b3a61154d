"""Migrations once per deploy: the stack's `DatabaseMigrations` custom resource.

CloudFormation sends the migrate function a Create or Update request when the stack is
deployed (the resource's `Version` is the newest migration, so a deploy that adds one
updates it), and the function answers with a PUT to the request's presigned URL. The
other functions depend on the resource, so they are updated only once the schema is; at
their cold start they merely check it (`carrier_core.store.migrate.check_schema`).
Deleting the stack leaves the database as it is.

The migrations run as the tables' owner, the only login the migrate function may read. The
other functions connect with the app's secret (made by the stack), a login of the group
role `carrier_app` (migration 0006) that may read and write Carrier's rows and nothing else.
After migrating, `provide_app_login` gives that login the secret's password, and copies into
the secret where the database is (host, port, dbname) when only the owner's secret says so:
the functions then need the app's secret alone.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

from carrier_aws.clients import AwsClient
from carrier_core.store.roles import ensure_app_login

log = logging.getLogger(__name__)

#: What the app's secret borrows from the owner's when it lacks them: where the database is.
LOCATION_KEYS = ("host", "port", "dbname")

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


def provide_app_login(
    owner_url: str, app_secret_arn: str, owner_secret_arn: str | None, client: Any = None
) -> str:
    """Make the app secret's login exist with the secret's password (as the owner, at
    `owner_url`), then fill the secret's missing host, port and dbname from the owner's
    secret, if any. Returns the login's name. Safe to run on every deploy: the password is
    set again to the same one, and the secret is written only when something was missing.
    """
    if client is None:
        client = AwsClient("secretsmanager")
    app = _secret(client, app_secret_arn, "the app's database secret")
    ensure_app_login(owner_url, app["username"], app["password"])
    if owner_secret_arn:
        owner = _secret(client, owner_secret_arn, "the owner's database secret")
        missing = {k: owner[k] for k in LOCATION_KEYS if owner.get(k) and not app.get(k)}
        if missing:
            client.put_secret_value(
                SecretId=app_secret_arn, SecretString=json.dumps({**app, **missing})
            )
            log.info("app secret given %s from the owner's", ", ".join(sorted(missing)))
    return str(app["username"])


def _secret(client: Any, arn: str, what: str) -> dict[str, Any]:
    """A database secret's JSON; its values never appear in an error."""
    try:
        value = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
    except (KeyError, ValueError):
        value = None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("username"), str)
        or not isinstance(value.get("password"), str)
    ):
        raise ValueError(f"{what} must be JSON with a username and a password")
    return value
