"""Cold start of each Lambda function: the working tree against an earlier commit, in
alternating runs.

These machines drift by more than a change is worth: the same tree's import can take
272 ms in one run of `cold_start.py` and 300 ms in a run a few minutes later, so figures
from separate runs cannot say what a change gained. Here every round imports each
function's handler once with the commit's code and once with the working tree's (in
turns, which goes first alternating), on the same layer, and the report gives both
medians and the median of the paired differences.

Both sides run as `cold_start.py` runs them, with .pyc as the layer ships: the third-party
packages of the lock's host copy (the same files, hard-linked), Carrier installed from the commit
(`git archive`) or from the working tree, each function's task root from the same code,
and the Lambda environment of the working tree's template (a function the commit does not
have is left out). Import time is `-X importtime`'s cumulative time of the handler module.

    python bench/cold_start_versus.py REV [--runs 9] [--functions api,ingest]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cold_start as cs
from machine import cpu_model


def commit_of(rev: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cs.ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"not a commit: {rev}")
    return done.stdout.strip()


def extract(commit: str, paths: Sequence[str], into: Path) -> None:
    """The files of `paths` at `commit`, written under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(cs.ROOT), "archive", "--format=tar", commit, *paths],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def commit_layer(base_python: str, layer: cs.Layer, commit: str) -> tuple[cs.Layer, Path]:
    """A layer of the same third-party packages with Carrier of `commit`, and the folder
    holding that commit's function folders (both kept in the cache, by commit)."""
    home = cs.CACHE / f"versus-{layer.lock_sha256[:16]}-{commit[:12]}"
    path, functions = home / "python", home / "functions"
    if not (home / "done").is_file():
        shutil.rmtree(home, ignore_errors=True)
        path.mkdir(parents=True)
        # Hard links: the same files, opened as fast as the working tree's side opens them
        # (a symbolic link would cost the commit's side a lookup more per file).
        for item in layer.path.iterdir():
            if item.name.startswith(("carrier_core", "carrier_aws", "carrier-")):
                continue
            if item.is_dir():
                shutil.copytree(item, path / item.name, copy_function=os.link)
            else:
                os.link(item, path / item.name)
        with tempfile.TemporaryDirectory(prefix="carrier-commit-") as tmp:
            extract(commit, [*cs.CARRIER_SOURCES, "functions"], Path(tmp))
            cs.install_carrier(base_python, path, tree=Path(tmp))
            shutil.copytree(Path(tmp) / "functions", functions)
        cs.remove_bytecode(path / "carrier_core")
        cs.remove_bytecode(path / "carrier_aws")
        (home / "done").write_text(commit)
    return cs.Layer(path, home / "pycache", layer.lock_sha256, layer.pins, False, 0.0), functions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the commit to measure against (a hash, tag or branch)")
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (9)")
    parser.add_argument("--functions", help="comma-separated function folders (all)")
    args = parser.parse_args(argv)
    commit = commit_of(args.rev)
    python, base_python, version = cs.ensure_interpreter(None)
    layer = cs.ensure_layer(base_python)
    functions = cs.read_functions()
    if args.functions:
        wanted = set(args.functions.split(","))
        functions = [f for f in functions if f.name in wanted]
    cs.copy_tasks(functions)
    old_layer, old_folders = commit_layer(base_python, layer, commit)
    jobs: list[tuple[cs.Job, cs.Job]] = []
    for function in functions:
        old_folder = old_folders / function.name
        if not (old_folder / f"{function.module}.py").is_file():
            print(f"{function.name}: not at {commit[:12]}, left out", file=sys.stderr)
            continue
        code = f"import {function.module}"
        old_env = cs.mode_env(cs.lambda_env(old_layer, function), "pyc", old_layer)
        new_env = cs.mode_env(cs.lambda_env(layer, function), "pyc", layer)
        jobs.append(
            (
                cs.Job(function.name, code, old_folder, old_env, function.module),
                cs.Job(function.name, code, function.folder, new_env, function.module),
            )
        )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    for round_ in range(args.runs + 1):  # round 0 writes the .pyc and is not timed
        for old, new in jobs:
            pair = (old, new) if round_ % 2 else (new, old)
            for job in pair:
                cs.run_once(python, job, record=round_ > 0)
        print(f"  round {round_}/{args.runs} done", file=sys.stderr)
    print(
        f"{cpu_model()}, Python {version}; load average at start {load};"
        f" {args.runs} rounds; import ms (with .pyc), medians"
    )
    header = f"{commit[:12]:>12} {'working tree':>13} {'paired diff':>12} {'ratio':>6}"
    print(f"  {'function':16} {header}")
    for old, new in jobs:
        diffs = [b - a for a, b in zip(old.samples_ms, new.samples_ms, strict=True)]
        before, after = statistics.median(old.samples_ms), statistics.median(new.samples_ms)
        print(
            f"  {old.label:16} {before:12.0f} {after:13.0f} {statistics.median(diffs):+12.0f}"
            f" {after / before:6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
