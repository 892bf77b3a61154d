"""Which URLs a webhook may point at.

Deliveries are made from inside the deployment's network (in AWS, functions in the
VPC's private subnets), so a webhook URL is a way for a tenant to make Carrier send
requests where the tenant itself cannot reach. The rules:

- http or https only, with a host, at most `MAX_URL_CHARS`, no `user:password@`
  (the signature is how a receiver knows the sender; credentials in a URL would be
  shown in every listing);
- unless `webhook_allow_private_urls` is set (local development), no loopback,
  private, link-local, shared or otherwise non-public address: refused when the URL
  is registered if it names one (or `localhost`), and checked again against what the
  host name resolves to before each delivery;
- redirects are not followed (a redirect could lead anywhere).

A name that resolves to a public address at the check and to a private one a moment
later (DNS rebinding) is not caught here: the network is the real fence. Give the
functions a security group and routes that reach the internet (through a NAT gateway)
and only the internal services they need.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse

MAX_URL_CHARS = 2048
_LOCAL_NAMES = ("localhost", "localhost.localdomain")
_LOCAL_SUFFIXES = (".localhost", ".internal", ".local")


class InvalidWebhookUrl(ValueError):
    """A URL a webhook may not have; the message says why."""


def _non_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _named_private(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        return _non_public(host)
    except ValueError:
        return False  # a name: its addresses are checked before each delivery


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL as it will be stored, or `InvalidWebhookUrl`."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidWebhookUrl(f"a webhook URL is at most {MAX_URL_CHARS} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidWebhookUrl(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidWebhookUrl("a webhook URL must be http:// or https://")
    if not parts.hostname:
        raise InvalidWebhookUrl("a webhook URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl(
            "a webhook URL must not carry credentials; check the signature instead"
        )
    if not allow_private and _named_private(parts.hostname):
        raise InvalidWebhookUrl("a webhook URL must point at a public address")
    return url


def refused_target(url: str) -> str | None:
    """Why a delivery to this URL is refused now (its host resolves to a non-public
    address), or None. A name that does not resolve is left to fail as the request would."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if _named_private(host):
        return f"{host} is not a public address"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for *_, sockaddr in found:
        if _non_public(str(sockaddr[0])):
            return f"{host} resolves to {sockaddr[0]}, which is not a public address"
    return None
