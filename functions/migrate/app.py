"""Migrate function: the stack's DatabaseMigrations custom resource (once per deploy).

Applies what is missing of `carrier_core/store/migrations` as the tables' owner (the secret in
CARRIER_DB_OWNER_SECRET_ARN, which no other function may read), gives the app's login (the
secret in CARRIER_DB_SECRET_ARN, which every function reads) its password and membership of
`carrier_app`, then answers CloudFormation. The other functions only check the schema's
version at cold start. With DATABASE_URL set (a database of your own, `sam local`), only the
migrations run: the secrets are not used.
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
    return latest_version()


@function_handler
def handler(event: dict, context: object) -> dict:
    response = answer(event, apply)
    logger.info("custom resource answered", extra={"status": response["Status"]})
    respond(event["ResponseURL"], response)
    return response
