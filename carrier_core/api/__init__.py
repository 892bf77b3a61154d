"""The client API: REST under /v1, OpenAPI docs at /docs."""

from carrier_core.api.app import create_app
from carrier_core.api.deps import Submit

__all__ = ["Submit", "create_app"]
