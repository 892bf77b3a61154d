"""Migrate function: the stack's DatabaseMigrations custom resource (once per deploy).

Applies what is missing of `carrier_core/store/migrations` as the tables' owner (the secret in
CARRIER_DB_OWNER_SECRET_ARN, which no other function may read), gives the app's login (the
secret in CARRIER_DB_SECRET_ARN, which every function reads) its password and membership of
`carrier_app`, moves the signing secrets of webhooks made before they were kept in the
secret store out of their rows, then answers CloudFormation. The other functions only check
the schema's version at cold start. With DATABASE_URL set (a database of your own, `sam
local`), the database's secrets are not used.
"""

import os

from carrier_aws.database import OWNER_SECRET_VARIABLE, SECRET_VARIABLE, database_url
from carrier_aws.migrations import answer, provide_app_login, respond
from carrier_aws.observability import function_handler, logger
from carrier_core.store.migrate import latest_version, migrate


def apply() -> int:
    owner_url = database_url(secret_variable=OWNER_SECRET_VARIABLE)
    migrate(owner_url)
    app_secret = os.environ.get(SECRET_VARIABLE)
    if app_secret and not os.environ.get("DATABASE_URL"):
        login = provide_app_login(owner_url, app_secret, os.environ.get(OWNER_SECRET_VARIABLE))
        logger.info("app login ready", extra={"login": login})
    moved = move_webhook_secrets(owner_url)
    logger.info("webhook secrets moved to the secret store", extra={"count": moved})
    return latest_version()


def move_webhook_secrets(url: str) -> int:
    # Imported when called, once per deploy: the settings bring pydantic, which this
    # function's cold start has no other use for.
    from carrier_core.config import Settings
    from carrier_core.secrets import open_secret_store
    from carrier_core.webhooks.registry import move_row_secrets

    return move_row_secrets(url, open_secret_store(Settings(database_url=url)))


@function_handler
def handler(event: dict, context: object) -> dict:
    response = answer(event, apply)
    logger.info("custom resource answered", extra={"status": response["Status"]})
    respond(event["ResponseURL"], response)
    return response
