"""Which ``callback_url`` a submit may name: http(s) only, and no target on loopback, private,
link-local, reserved or multicast addresses (no server-side request forgery) unless the home's
``config.json`` allows it (``callbacks.allow_hosts``: host names, addresses or CIDR ranges).

Checked at submit and again before each delivery (``server.callbacks``)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from server.errors import CallbackUrlRefusedError, InvalidCallbackUrlError

FIELD = "callback_url"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class CallbackTargets:
    """Checks ``callback_url`` values against the allowed hosts (``callbacks.allow_hosts``)."""

    def __init__(self, allow_hosts: Iterable[str] = ()) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow_hosts:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.lower().rstrip("."))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CallbackTargets:
        section = config.get("callbacks")
        hosts = section.get("allow_hosts") if isinstance(section, Mapping) else None
        return cls([str(h) for h in hosts or []])

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def check(self, url: str) -> str:
        """``url`` if a callback may go there; ``invalid_callback_url`` when it is no http(s)
        URL with a host, ``callback_url_refused`` when its host is (or resolves to) a
        non-public address that the config does not allow."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise InvalidCallbackUrlError(
                f"callback_url is not a URL: {exc}", field=FIELD
            ) from None
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidCallbackUrlError(
                f"callback_url must be an http:// or https:// URL with a host, got {url!r}",
                field=FIELD,
            )
        if parts.username is not None or parts.password is not None:
            raise InvalidCallbackUrlError(
                "callback_url must not carry credentials (user:password@)", field=FIELD
            )
        name = host.lower().rstrip(".")
        if name in self.names:
            return url
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(name)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError):
                raise InvalidCallbackUrlError(
                    f"callback_url's host {host!r} does not resolve", field=FIELD
                ) from None
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        refused = [a for a in addresses if not _public(a) and not self._allowed(a)]
        if refused:
            raise CallbackUrlRefusedError(
                f"callback_url's host {host!r} is {refused[0]}, a loopback, private or "
                "reserved address: callbacks go to public addresses only (allow one in "
                "config.json: callbacks.allow_hosts)",
                field=FIELD,
                address=str(refused[0]),
            )
        return url
