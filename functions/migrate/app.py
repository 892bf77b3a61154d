"""Migrate function: the stack's DatabaseMigrations custom resource (once per deploy).

Applies what is missing of `carrier_core/store/migrations`, then answers CloudFormation.
The other functions only check the schema's version at cold start.
"""

from aws_lambda_powertools import Logger

from carrier_aws.migrations import answer, respond
from carrier_aws.runtime import database_url
from carrier_core.store.migrate import latest_version, migrate

logger = Logger()


def apply() -> int:
    migrate(database_url())
    return latest_version()


@logger.inject_lambda_context
def handler(event: dict, context: object) -> dict:
    response = answer(event, apply)
    logger.info("custom resource answered", extra={"status": response["Status"]})
    respond(event["ResponseURL"], response)
    return response
