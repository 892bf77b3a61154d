"""The runtime core imports no AWS SDK: any step must run anywhere, Lambda or not."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

AWS_MODULES = {"boto3", "botocore", "aws_lambda_powertools", "mangum", "moto", "carrier_aws"}


def test_carrier_core_imports_no_aws_module() -> None:
    offenders = []
    for path in sorted((ROOT / "carrier_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.split(".")[0] in AWS_MODULES
            ]
    assert offenders == []


def test_every_function_folder_has_a_handler() -> None:
    folders = [p for p in (ROOT / "functions").iterdir() if p.is_dir()]
    assert {p.name for p in folders} >= {
        "api",
        "ingest",
        "llm_step",
        "action_exec",
        "turn_finish",
        "memory_embed",
    }
    for folder in folders:
        source = (folder / "app.py").read_text()
        assert "def handler(" in source, folder
        assert not Path(folder, "__init__.py").exists()
