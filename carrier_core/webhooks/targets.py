"""Which URLs a webhook may point at, and which addresses a delivery may connect to.

Deliveries are made from inside the deployment's network (in AWS, functions in the
VPC's private subnets), so a webhook URL is a way for a tenant to make Carrier send
requests where the tenant itself cannot reach. The rules:

- http or https only, with a host, at most `MAX_URL_CHARS`, no `user:password@`
  (the signature is how a receiver knows the sender; credentials in a URL would be
  shown in every listing);
- unless `webhook_allow_private_urls` is set (local development), no loopback,
  private, link-local, shared or otherwise non-public address: refused when the URL
  is registered if it names one (or `localhost`), and checked again against what the
  host name resolves to before each delivery (`resolve_target`);
- a host is read as the resolver reads it: `2852039166`, `0xa9fea9fe`,
  `0251.0376.0251.0376` and `169.254.43518` are all 169.254.169.254 to `inet_aton`, and
  `127.1` and `0` are loopback and "this host", so they are judged as those addresses;
- an IPv6 address that carries an IPv4 one (IPv4-mapped or -compatible, 6to4, Teredo,
  NAT64) is judged by that IPv4 address too: a NAT64 gateway would turn
  `64:ff9b::a00:1` into 10.0.0.1;
- redirects are not followed (a redirect could lead anywhere).

The delivery connects to exactly the addresses that were checked, never to the name
again: a name that resolves to a public address at the check and to a private one a
moment later (DNS rebinding) does not reach the private one. The network stays the
outer fence all the same: give the functions a security group and routes that reach
the internet (through a NAT gateway) and only the internal services they need.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import urllib.parse
from dataclasses import dataclass

MAX_URL_CHARS = 2048
#: Addresses of a name a delivery tries, in the resolver's order: a second one helps when
#: the first is down (or its family unrouted); more would only stretch a failing attempt.
MAX_ADDRESSES = 2
_LOCAL_NAMES = ("localhost", "localhost.localdomain")
_LOCAL_SUFFIXES = (".localhost", ".internal", ".local")
#: NAT64, well-known prefix (RFC 6052): the IPv4 address is the last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: NAT64, local-use prefix (RFC 8215): where it leads is the network's own business.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
#: IPv4-compatible addresses (deprecated; `::1` and `::` are in here too).
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
#: IPv4-translated addresses (SIIT): an IPv4 address behind a translator.
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
#: Deprecated site-local addresses: private in all but name.
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
#: What an IPv4 address in one of `inet_aton`'s numeric forms is written with (URL host
#: names are lower case). Anything else is a name, left to the resolver: glibc's
#: `inet_aton` also reads "127.0.0.1 anything", which `getaddrinfo` does not.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class InvalidWebhookUrl(ValueError):
    """A URL a webhook may not have; the message says why."""


class RefusedTarget(ValueError):
    """The URL's host is, or resolves to, a non-public address: no delivery is made."""


@dataclass(frozen=True)
class Target:
    """Where one attempt sends its request: the URL's parts, and the addresses checked."""

    scheme: str
    #: The host as the URL names it: the Host header, and the name a TLS certificate must have.
    host: str
    port: int
    #: Path and query, as sent in the request line.
    path: str
    #: What `host` resolved to (at most `MAX_ADDRESSES`): the only addresses connected to.
    addresses: tuple[str, ...]


def _non_public_ip(ip: Address) -> bool:
    """Whether a delivery must not connect to `ip`: the one place that decides, for the
    URL check and for the addresses a name resolves to alike."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _non_public_ip(ip.ipv4_mapped)
        if ip in _LOCAL_NAT64 or ip in _IPV4_COMPATIBLE or ip in _SITE_LOCAL:
            return True
        embedded: list[ipaddress.IPv4Address] = []
        if ip in _NAT64 or ip in _IPV4_TRANSLATED:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)  # the server and the client
        if any(_non_public_ip(v4) for v4 in embedded):
            return True
    return not ip.is_global or ip.is_multicast


def _non_public(address: str) -> bool:
    return _non_public_ip(ipaddress.ip_address(address.split("%", 1)[0]))


def _host_address(host: str) -> Address | None:
    """The address a URL's host is by itself, as the resolver reads it; None for a name.

    Besides the usual forms, `getaddrinfo` reads an IPv4 address the way `inet_aton` does:
    as one number (2852039166), in hex (0xa9fea9fe) or octal (0251.0376.0251.0376) parts,
    or with parts left out (127.1), so a check that knew only dotted quads would take
    these for names and let the metadata service or loopback through.
    """
    host = host.lower().rstrip(".")
    try:
        return ipaddress.ip_address(host)  # an IPv6 zone (fe80::1%eth0) is kept
    except ValueError:
        pass
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None  # not a number after all (08, 1.2.3.4.5, 0x): a name to look up


def _named_private(host: str) -> str | None:
    """Why `host`, by its name alone, is not a public address (a local name, or a
    non-public address in any form the resolver reads); None if it is one, or a name
    whose addresses are checked before each delivery."""
    name = host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return f"{host} is a local name"
    address = _host_address(host)
    if address is None or not _non_public_ip(address):
        return None
    if isinstance(address, ipaddress.IPv4Address) and str(address) != name:
        return f"{host} is {address}, which is not a public address"
    return f"{host} is not a public address"


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL as it will be stored, or `InvalidWebhookUrl`."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidWebhookUrl(f"a webhook URL is at most {MAX_URL_CHARS} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        # urlsplit takes them; sending the request would not (each attempt would fail).
        raise InvalidWebhookUrl(
            "a webhook URL must not hold spaces or control characters (percent-encode them)"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidWebhookUrl(f"not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidWebhookUrl("a webhook URL must be http:// or https://")
    if not parts.hostname:
        raise InvalidWebhookUrl("a webhook URL must name a host")
    if port == 0:
        raise InvalidWebhookUrl("a webhook URL's port must be 1 to 65535")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise InvalidWebhookUrl(f"{parts.hostname!r} is not a valid host name") from None
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl(
            "a webhook URL must not carry credentials; check the signature instead"
        )
    refusal = None if allow_private else _named_private(parts.hostname)
    if refusal is not None:
        raise InvalidWebhookUrl(f"a webhook URL must point at a public address ({refusal})")
    return url


def _resolve(host: str, port: int, timeout: float) -> list[str]:
    """The addresses of a name, in the resolver's order, without duplicates. The lookup runs
    in a thread of its own so that a slow name server (the tenant may run it) cannot hold
    the attempt past `timeout`; a lookup given up on finishes by itself, unread."""
    found: list[object] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            found.append(exc)
        done.set()

    threading.Thread(target=look_up, name="webhook-resolve", daemon=True).start()
    if not done.wait(max(timeout, 0.0)):
        raise TimeoutError(f"resolving {host} timed out")
    [answer] = found
    if isinstance(answer, UnicodeError):
        raise OSError(f"{host} is not a valid host name")
    if isinstance(answer, OSError):
        raise answer
    assert isinstance(answer, list)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answer))


def resolve_target(url: str, *, allow_private: bool, timeout: float) -> Target:
    """Resolve a stored webhook URL for one attempt. Raises `RefusedTarget` if its host is,
    or any of its addresses is, not public (unless `allow_private`), and `OSError` (a
    `TimeoutError` after `timeout`) if the name cannot be resolved now."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    refusal = None if allow_private else _named_private(host)
    if refusal is not None:
        raise RefusedTarget(refusal)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    literal = _host_address(host)
    addresses = [str(literal)] if literal is not None else _resolve(host, port, timeout)
    if not addresses:
        raise OSError(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            if _non_public(address):
                raise RefusedTarget(f"{host} resolves to {address}, which is not a public address")
    path = parts.path or "/"
    return Target(
        scheme=scheme,
        host=host,
        port=port,
        path=f"{path}?{parts.query}" if parts.query else path,
        addresses=tuple(addresses[:MAX_ADDRESSES]),
    )


def refused_target(url: str, timeout: float = 10.0) -> str | None:
    """Why a delivery to this URL would be refused now (its host is or resolves to a
    non-public address), or None. A name that does not resolve is not refused: the
    attempt fails as any unreachable receiver's does, and is tried again."""
    try:
        resolve_target(url, allow_private=False, timeout=timeout)
    except RefusedTarget as exc:
        return str(exc)
    except OSError:
        return None
    return None
