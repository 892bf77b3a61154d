"""What every `carrier` command shares: the error that ends one, the settings and character
it reads, the runtime it opens, a progress bar.

Apart from `carrier_core.cli`, which builds the command line out of the commands of
several modules (`agent_commands`, `knowledge.commands`, `tasks.commands`, `carrier dev`):
those modules import their helpers from here, so none of them imports the command line
that imports them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import yaml

from carrier_core.character import Character, CharacterError, load_character
from carrier_core.config import Settings, unknown_config_keys
from carrier_core.runtime import Runtime
from carrier_core.secrets import SecretStoreError
from carrier_core.store.database import DatabaseError


class CommandError(Exception):
    """Ends a command with a message and an exit code (2: bad input, 1: cannot run)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def read_character(path: str) -> Character:
    try:
        return load_character(path)
    except CharacterError as exc:
        raise CommandError(str(exc), 2) from None


def read_settings() -> Settings:
    try:
        settings = Settings()
        unknown = unknown_config_keys()
    except yaml.YAMLError as exc:  # a syntax error: where, in one line
        raise CommandError(f"bad configuration: {' '.join(str(exc).split())}", 2) from None
    except (ValueError, OSError) as exc:  # pydantic's errors are ValueErrors
        raise CommandError(f"bad configuration: {exc}", 2) from None
    for key in unknown:
        print(f"carrier: configuration: unknown setting {key!r} ignored", file=sys.stderr)
    return settings


def distinct_handles(characters: Sequence[Character], paths: Sequence[str]) -> None:
    """Refuse two character files that would be one agent (their names make one handle):
    registered together, the second would silently replace the first."""
    seen: dict[str, str] = {}
    for character, path in zip(characters, paths, strict=True):
        first = seen.setdefault(character.handle, path)
        if first != path:
            raise CommandError(
                f"{first} and {path} are both agent {character.handle!r} (the slug of their"
                " names): give one a different name",
                2,
            )


def open_runtime(settings: Settings) -> Runtime:
    try:
        return Runtime.open(settings)
    except (DatabaseError, SecretStoreError) as exc:
        raise CommandError(str(exc), 1) from None


@contextmanager
def progress_bar(what: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (rich), while the block runs; yields `show(done, total)`.
    Not in a terminal, only its last state is printed, once."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
