"""What a function's cold start imports: only what its handler needs at import.

Lambda's init phase is the import of the handler module, paid on every cold start, so a
package imported there that the function calls rarely or never is time lost on each one
(`bench/cold_start.py` measures it). Each handler is imported in a fresh interpreter, as
Lambda does, and the packages it loaded are checked, not timed: the check holds on any
machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").is_file())

#: Imported on a model call only (carrier_core/models, carrier_aws/bedrock.py): seconds of
#: import that only the calls that use them pay.
MODEL_SDKS = {"openai", "anthropic", "tiktoken"}
#: Never in a function: the AWS clients are botocore's (carrier_aws/clients.py); boto3 would
#: pull in s3transfer. PyJWT (and cryptography) waits for the first end-user token, PyYAML
#: for the command line's config file.
NEVER_AT_IMPORT = MODEL_SDKS | {"boto3", "s3transfer", "jwt", "cryptography", "yaml"}
#: The HTTP app's packages: the api function's alone (the WebSocket function shares its
#: protocol code, not its routes).
HTTP_APP = {"fastapi", "starlette", "mangum"}

PROBE = """
import json, sys
import app
clients = sys.modules.get("carrier_aws.clients")
print(json.dumps({
    "packages": sorted({name.split(".")[0] for name in sys.modules}),
    "aws_session_made": clients is not None and clients._session is not None,
}))
"""


def imported_by(function: str) -> dict[str, object]:
    """What importing the function's handler loaded, in a fresh interpreter whose path is
    the function's folder and the repository (as Lambda's task root and layer)."""
    folder = ROOT / "functions" / function
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CARRIER_", "DATABASE_URL", "PYTHON"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]),
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=folder, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"importing functions/{function}/app.py failed:\n{done.stderr}"
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_handler_imports_only_what_its_cold_start_needs(function: str) -> None:
    found = imported_by(function)
    packages = set(found["packages"])  # type: ignore[call-overload]
    assert packages & NEVER_AT_IMPORT == set(), f"{function} imports them at its cold start"
    if function != "api":
        assert packages & HTTP_APP == set(), f"{function} imports the HTTP app's packages"
    assert found["aws_session_made"] is False, f"{function} makes an AWS client at import"
