"""What a turn keeps of a failure a Step Functions Catch passed on."""

from __future__ import annotations

import json

from carrier_aws.runners import failure_reason


def test_a_lambda_error_keeps_its_type_and_message_but_not_its_stack() -> None:
    cause = json.dumps(
        {
            "errorType": "ModelRateLimited",
            "errorMessage": "429 from provider",
            "stackTrace": ['  File "/var/task/app.py", line 20, in handler'],
            "requestId": "r-1",
        }
    )
    assert failure_reason({"Error": "ModelRateLimited", "Cause": cause}) == (
        "ModelRateLimited: 429 from provider"
    )


def test_other_causes_are_kept_as_text_and_bounded() -> None:
    assert failure_reason({"Error": "States.Timeout", "Cause": "took too long"}) == (
        "States.Timeout: took too long"
    )
    assert failure_reason({}) == "Error: "
    assert len(failure_reason({"Error": "X", "Cause": "y" * 5000})) == 500
