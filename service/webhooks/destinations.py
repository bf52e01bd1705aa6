"""Which URLs a webhook may target: http(s) only, no credentials in the URL, and (unless the operator
sets REMIX_WEBHOOK_ALLOW_PRIVATE) only public addresses.

Tenants are untrusted: without the address check a webhook would let them make the service POST to
its own network (metadata services, databases, admin ports). The host is resolved when the webhook is
registered and again before every attempt, since DNS answers can change in between; every address a
name resolves to must be public.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from service.storable import is_storable_text

MAX_URL_LENGTH = 2000


class DestinationRefused(ValueError):
    """The URL may not be a webhook destination; the message says why."""


def check_destination(url: str, *, allow_private: bool) -> None:
    """Raise DestinationRefused unless `url` is an acceptable webhook destination."""
    if len(url) > MAX_URL_LENGTH:
        raise DestinationRefused(f"is longer than {MAX_URL_LENGTH} characters")
    if not is_storable_text(url) or any(char.isspace() or ord(char) < 32 for char in url):
        raise DestinationRefused("contains whitespace or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6 literal
        raise DestinationRefused(f"is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("must not contain credentials (user:password@); verify the signature instead")
    try:
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"has an invalid port: {exc}") from exc
    host = parts.hostname
    if not host:
        raise DestinationRefused("has no host")
    if allow_private:
        return
    for address in _addresses(host, port or (443 if parts.scheme == "https" else 80)):
        if not _is_public(address):
            raise DestinationRefused(
                f"{host} is (or resolves to) the non-public address {address}; the operator can allow private "
                "destinations with REMIX_WEBHOOK_ALLOW_PRIVATE=true"
            )


def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass  # a name, not an address literal
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"host {host} does not resolve: {exc}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast
