"""Who is calling: an API key (a tenant's developer or server) or a JWT (an end user).

Both arrive as `Authorization: Bearer <token>` (or, where a browser cannot set
headers, as a WebSocket's `token` query parameter). Keys start with
`carrier_`; anything else is taken as a JWT and verified against the configured
JWKS, whose keys PyJWT fetches and caches. PyJWT (and the `cryptography` it loads) is
imported on the first JWT only: a function whose callers use API keys never pays for it
at cold start.

An end user may only talk: post messages as themselves, read the turns their
messages started, and listen to rooms. Managing agents, keys, memories and
webhooks takes an API key.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from carrier_core.storable import storable
from carrier_core.tenants import KEY_PREFIX, key_for_secret
from carrier_core.world import LOCAL_TENANT_ID

if TYPE_CHECKING:
    import jwt

    from carrier_core.config import Settings
    from carrier_core.store.connections import Connection
    from carrier_core.store.store import Store

#: Signature algorithms taken for end-user tokens (never `none`, never HMAC with a public key).
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class Unauthorized(Exception):
    """No credentials, or credentials that do not check out (HTTP 401)."""


class Forbidden(Exception):
    """Valid credentials that do not allow this (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    #: The API key's id; None for an end user.
    key_id: uuid.UUID | None = None
    #: The agents a key is limited to; None: all of the tenant's.
    agent_ids: frozenset[uuid.UUID] | None = None
    #: An end user's subject (`sub`): they speak only as this sender.
    user: str | None = None
    #: When an end user's token expires (a WebSocket connection opened with it ends then).
    expires_at: datetime | None = None

    @classmethod
    def of_connection(cls, connection: Connection) -> Principal:
        """Who sends on a WebSocket connection: its connect-time check, narrowed to its
        agent (the token is not sent again with each frame)."""
        return cls(
            tenant_id=connection.tenant_id,
            agent_ids=frozenset({connection.agent_id}),
            user=connection.sender or None,
        )

    @property
    def is_end_user(self) -> bool:
        return self.user is not None

    def may_use(self, agent_id: uuid.UUID) -> bool:
        """Whether this caller may reach the agent at all (its tenant is checked apart)."""
        return self.agent_ids is None or agent_id in self.agent_ids

    def require_key(self, what: str) -> None:
        if self.is_end_user:
            raise Forbidden(f"{what} needs an API key; end-user tokens may only chat")

    def require_full_key(self, what: str) -> None:
        """Tenant-wide operations (making agents, managing keys) need an unlimited key."""
        self.require_key(what)
        if self.agent_ids is not None:
            raise Forbidden(f"{what} needs a key that is not limited to some agents")


class Authenticator:
    """Turns a bearer token into a `Principal`. Safe to share between threads."""

    def __init__(self, store: Store, settings: Settings):
        self._store = store
        self._settings = settings
        self._jwks: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def principal(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing credentials: send `Authorization: Bearer <API key or JWT>`")
        if token.startswith(KEY_PREFIX):
            key = key_for_secret(self._store, token)
            if key is None:
                raise Unauthorized("unknown or revoked API key")
            return Principal(tenant_id=key.tenant_id, key_id=key.id, agent_ids=key.agent_ids)
        return self._end_user(token)

    def _jwks_client(self) -> jwt.PyJWKClient:
        url = self._settings.jwt_jwks_url
        if not url:
            raise Unauthorized(
                "not an API key, and end-user tokens are off (CARRIER_JWT_JWKS_URL is not set)"
            )
        import jwt

        with self._lock:
            if self._jwks is None:
                self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
            return self._jwks

    def _end_user(self, token: str) -> Principal:
        import jwt

        settings = self._settings
        client = self._jwks_client()
        if settings.jwt_issuer is None:
            # Without an issuer to match, any token the provider's keys signed would do
            # (another app's, an access token): refuse them all rather than guess.
            raise Unauthorized("end-user tokens are off until CARRIER_JWT_ISSUER is set")
        try:
            signing_key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                signing_key.key,
                algorithms=JWT_ALGORITHMS,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": settings.jwt_audience is not None,
                },
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise Unauthorized(f"cannot fetch the token signing keys: {exc}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        raw_tenant = claims.get(settings.jwt_tenant_claim)
        try:
            tenant_id = uuid.UUID(str(raw_tenant))
        except ValueError:
            raise Unauthorized(
                f"the token's {settings.jwt_tenant_claim!r} claim is not a tenant id"
            ) from None
        if tenant_id == LOCAL_TENANT_ID:
            # Its id is the same in every database: never one a token may name.
            raise Unauthorized("end-user tokens cannot act for the local tenant")
        if not self._store.tenant_exists(tenant_id):
            raise Unauthorized(f"the token's tenant {tenant_id} does not exist")
        subject = str(claims["sub"])
        try:
            storable(subject)
            expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        if not subject or len(subject) > 200:
            raise Unauthorized("the token's subject must be 1 to 200 characters")
        return Principal(tenant_id=tenant_id, user=subject, expires_at=expires_at)
