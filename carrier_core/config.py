"""Settings: given values first, then environment variables, then an optional YAML
file, then defaults.

Every process of a deployment (a chat, a Lambda) reads the same names, so a
value set once in the environment means the same thing everywhere.

The sources are merged here rather than by pydantic-settings: every setting is a single
value that pydantic parses from its string form, and that package cost each Lambda's
cold start some 30 ms of imports (bench/cold_start.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

#: Environment variables of a setting are this prefix and its name, in any case.
ENV_PREFIX = "CARRIER_"


def _config_file() -> Path | None:
    explicit = os.environ.get("CARRIER_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"CARRIER_CONFIG names {explicit}, which is not a file")
        return Path(explicit)
    local = Path("carrier.yaml")
    return local if local.is_file() else None


class Settings(BaseModel):
    """Runtime settings. Env names are `CARRIER_<FIELD>`; the database also reads `DATABASE_URL`.

    `Settings(field=value)` takes the given values over the environment's and the file's."""

    model_config = ConfigDict(extra="ignore")

    def __init__(self, **given: Any) -> None:
        super().__init__(**{**_file_values(), **_environment_values(), **_by_field(given)})

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CARRIER_DATABASE_URL", "database_url"),
    )
    #: Where the embedded Postgres keeps its data when no database URL is given.
    home: Path = Path("~/.carrier")
    pool_size: int = Field(default=4, ge=1)
    #: Apply the migrations when the runtime opens (local runs). A deployed stack migrates
    #: once per deploy and sets this false: its functions only check the schema's version.
    migrate_on_start: bool = True
    #: How long a request waits for a database connection before it is answered 503
    #: (`DatabaseUnavailable`): an outage is told quickly, not after half a minute.
    pool_timeout_s: float = Field(default=5.0, gt=0)
    #: Server-side prepared statements: faster, but turn them off behind RDS Proxy or
    #: PgBouncer in transaction mode, which cannot keep them.
    prepared_statements: bool = True
    #: Where agents' secrets are kept (`carrier_core.secrets`): `file`, a JSON file per agent
    #: under the data folder readable by its user only; or another entry point of the group
    #: `carrier.secret_stores`, such as `secretsmanager` (AWS Secrets Manager; template.yaml).
    secret_store: str = "file"

    #: The model set to use, by the name a plugin registers it under (offline, openai,
    #: anthropic, openai-compatible, bedrock, ...). Unset: openai when OPENAI_API_KEY is
    #: set, else anthropic when ANTHROPIC_API_KEY is, else openai-compatible when
    #: OPENAI_BASE_URL is, else offline.
    model_provider: str | None = None
    #: Models by role, as `model` or `provider:model` (e.g. anthropic:claude-3-5-haiku-latest).
    #: Unset: the provider's default for the role.
    large_model: str | None = None
    small_model: str | None = None
    embedding_model: str | None = None
    #: Embedding size: what to ask of a model that takes a size (text-embedding-3-*), or the
    #: size of a model Carrier does not know (an Ollama model, say). Unset: the stored
    #: column's size (384 until `carrier reembed` changes it).
    embedding_dimensions: int | None = Field(default=None, ge=1)
    #: Providers to try in order when a text model is unavailable or rate limited,
    #: comma-separated, e.g. "anthropic,offline". Embeddings never fall back: another
    #: model's vectors would not match the stored ones.
    model_fallback: str = ""
    #: Per-call timeout and the SDK's retries (exponential backoff with jitter, honouring
    #: Retry-After on 429 and 5xx; never on 401).
    model_timeout_s: float = Field(default=60.0, gt=0)
    model_max_retries: int = Field(default=2, ge=0)
    max_output_tokens: int = Field(default=1024, ge=1)
    #: The decide prompt's token budget; unset: the large model's context window less
    #: room for the answer.
    context_tokens: int | None = Field(default=None, ge=256)
    #: Stop an agent's model calls for the day (UTC) once its estimated spend reaches this.
    daily_budget_usd: float | None = Field(default=None, ge=0)

    recent_messages: int = Field(default=16, ge=1)
    fact_count: int = Field(default=6, ge=0)
    recall_count: int = Field(default=4, ge=0)
    knowledge_count: int = Field(default=4, ge=0)
    #: Knowledge documents are cut into fragments of about this many tokens (as the
    #: embedding model counts them), each starting with the last `knowledge_chunk_overlap`
    #: tokens of the one before, so a fact across a cut is still found whole.
    knowledge_chunk_tokens: int = Field(default=500, ge=16, le=8000)
    knowledge_chunk_overlap: int = Field(default=100, ge=0)
    #: Least cosine similarity for a memory to be recalled at all.
    recall_threshold: float = Field(default=0.2, ge=-1, le=1)
    #: A new fact this similar to a stored one about the same entity is not stored again.
    duplicate_fact_similarity: float = Field(default=0.9, ge=0, le=1)

    max_steps: int = Field(default=3, ge=1, description="decide steps allowed in one turn")
    #: Reflect after this many new messages in a room (1 = every turn).
    reflection_interval: int = Field(default=3, ge=1)
    #: How facts and relationships are learned once reflection is due. `evaluator`: the
    #: reflection evaluator's own model call after the reply. `inline`: the decide call of
    #: the turn where it is due also answers them, so every turn is one text call (see
    #: `carrier_core.turn.inline_reflection`, and the README on choosing).
    reflection: Literal["evaluator", "inline"] = "evaluator"
    #: A room's runner renews its lease at every turn; a lease this long past its last
    #: renewal is looked at by the sweep, which drives the room again if its runner stopped.
    runner_lease_s: float = Field(default=120.0, gt=0)
    #: A turn taken up this many times without finishing (its runners kept stopping) is
    #: recorded failed, and its room moves on.
    turn_max_attempts: int = Field(default=3, ge=1)
    #: How long an action that needs approval waits for an answer before the request
    #: expires and the turn goes on without it. Its room's later messages wait meanwhile;
    #: under the state machine's 6-hour limit on a runner.
    approval_timeout_s: float = Field(default=3600.0, gt=0, le=18000)
    #: How long `POST /v1/chat/completions` waits for its turn before answering 504 (the
    #: turn goes on; poll it). Well under API Gateway's 30 s limit and the api function's
    #: 29 s timeout, leaving room for a cold start and the ingest before it.
    chat_completion_timeout_s: float = Field(default=20.0, gt=0)
    max_message_chars: int = Field(default=8000, ge=1)
    #: Longer replies are cut to this many characters before they are stored: a model (or a
    #: plugin) that runs on would otherwise be stored, embedded, pushed and delivered whole.
    max_reply_chars: int = Field(default=8000, ge=1)
    provider_timeout_s: float = Field(default=2.0, gt=0)
    embed_batch_size: int = Field(default=64, ge=1)

    #: End-user sessions: JWT bearer tokens are taken when this JWKS URL is set (e.g.
    #: https://cognito-idp.REGION.amazonaws.com/POOL_ID/.well-known/jwks.json).
    jwt_jwks_url: str | None = None
    #: Required `iss` and `aud` of those tokens (unset: not checked; set both in production).
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    #: The claim that holds the user's tenant id (Cognito: a custom attribute such as
    #: `custom:tenant_id`).
    jwt_tenant_claim: str = "tenant_id"

    @field_validator("jwt_jwks_url", "jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """The template passes empty parameters as empty strings: they mean unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _overlap_within_a_fragment(self) -> Settings:
        """An overlap as long as a fragment would repeat fragments instead of moving on."""
        if self.knowledge_chunk_overlap >= self.knowledge_chunk_tokens:
            raise ValueError(
                f"knowledge_chunk_overlap ({self.knowledge_chunk_overlap}) must be less than"
                f" knowledge_chunk_tokens ({self.knowledge_chunk_tokens})"
            )
        return self

    #: Webhooks: a failed delivery is tried again after about base * 2^(attempt-1) seconds
    #: (capped at 15 minutes, with jitter), up to `webhook_max_attempts` tries in all; then
    #: it is kept as failed. Keep the webhook queue's maxReceiveCount above the attempts.
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    #: How long one delivery attempt may take in all (resolving the host to reading the
    #: answer's headers) before it counts as failed.
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    #: Take webhook URLs on loopback, private, link-local or other non-public addresses
    #: (local development only: in the cloud they reach into the VPC).
    webhook_allow_private_urls: bool = False

    @property
    def data_dir(self) -> Path:
        return self.home.expanduser()


def _names() -> dict[str, str]:
    """Each setting's field by every name it may be given under, lowercased: its field
    name, and its aliases (such as `DATABASE_URL`)."""
    names = {}
    for name, field in Settings.model_fields.items():
        names[name] = name
        if isinstance(field.validation_alias, AliasChoices):
            names.update((str(choice).lower(), name) for choice in field.validation_alias.choices)
    return names


def _by_field(values: dict[str, Any]) -> dict[str, Any]:
    """`values` keyed by field name (unknown keys are dropped, as `extra="ignore"` would)."""
    names = _names()
    return {names[key.lower()]: value for key, value in values.items() if key.lower() in names}


def _environment_values() -> dict[str, str]:
    """Settings set in the environment: `CARRIER_<FIELD>` in any case, or for a setting with
    aliases the first of them that is set (`DATABASE_URL`, then `CARRIER_DATABASE_URL`)."""
    environment = {key.lower(): value for key, value in os.environ.items()}
    found = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            keys = [str(choice).lower() for choice in alias.choices]
        else:
            keys = [f"{ENV_PREFIX.lower()}{name}"]
        value = next((environment[key] for key in keys if key in environment), None)
        if value is not None:
            found[name] = value
    return found


def _config_document() -> tuple[Path, Any] | None:
    """The YAML file (`CARRIER_CONFIG`, or ./carrier.yaml) and what it holds ({} when
    empty), if there is one."""
    config_file = _config_file()
    if config_file is None:
        return None
    import yaml  # only where a file is used: the functions never have one

    with open(config_file, encoding="utf-8") as stream:
        return config_file, yaml.safe_load(stream) or {}


def _file_values() -> dict[str, Any]:
    """Settings from the YAML file, if there is one."""
    found = _config_document()
    if found is None:
        return {}
    config_file, document = found
    if not isinstance(document, dict):
        raise ValueError(f"{config_file}: the configuration must map setting names to values")
    return _by_field({str(key): value for key, value in document.items()})


def unknown_config_keys() -> list[str]:
    """Keys of the YAML configuration file that name no setting: they are ignored, so the
    command line says so (a misspelt key would otherwise change nothing, silently)."""
    found = _config_document()
    if found is None or not isinstance(found[1], dict):
        return []
    known = _names()
    return sorted(str(key) for key in found[1] if str(key).lower() not in known)
