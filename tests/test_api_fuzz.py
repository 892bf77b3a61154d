"""Schemathesis against the API's own OpenAPI document: whatever the schema allows (positive
cases) and what it forbids (negative cases), the API answers without a server error, and
every error is our JSON shape."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from tests.conftest import TenantKey, run_inline

#: Examples per operation (hypothesis shrinks a failure to a small case and prints it).
EXAMPLES = 40


def test_no_operation_gives_a_server_error(
    runtime: Runtime, ada: Character, make_tenant: Callable[[str], TenantKey]
) -> None:
    tenant = make_tenant("fuzz")
    runtime.register_agent(ada, tenant.tenant_id)
    app = create_app(lambda: runtime, run_inline(runtime))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15  # every route is in the document

    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: Any) -> None:
            response = case.call(headers=tenant.headers)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["code"] and error["message"], response.text

        try:
            no_server_error()
        except Unsatisfiable:
            # Nothing can be invalid about an operation without inputs (GET /v1/health).
            assert mode is GenerationMode.NEGATIVE, operation.label
