"""Where a connection made for a link may go: public addresses that are not this machine's own, on the web's ports.

:class:`AddressPolicy` is asked for every connection the address guard (:mod:`musrec.links.guard`) makes, and once
early, before yt-dlp runs. Its parts are injectable, so tests can count a loopback address as public.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from musrec.errors import UnsupportedLinkError
from musrec.links.errors import FetchError, FetchFailure
from musrec.links.parse import is_public_address, normal_host

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[IPAddress]]

PRIVATE_ADDRESS: Final = "this link points to a private network address, which is not allowed"
OWN_ADDRESS: Final = "this link points to this server itself, which is not allowed"
WEB_PORTS: Final = frozenset({80, 443})
OTHER_PORT: Final = "only links to the web's ports (80 and 443) are accepted"
NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: its last 32 bits are an IPv4 address
OWN_ADDRESSES_TTL_S: Final = 60.0  # interfaces change rarely; a new one is seen within a minute
_FIB_TRIE: Final = Path("/proc/net/fib_trie")  # Linux: the IPv4 routing table, local addresses marked "/32 host LOCAL"
_IF_INET6: Final = Path("/proc/net/if_inet6")  # Linux: every IPv6 address of every interface


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host``, from the system's resolver and in its order (OSError if there are none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    return list(dict.fromkeys(found))


def interface_addresses() -> set[IPAddress]:
    """This machine's own addresses: its interfaces' on Linux, else what its host name resolves to."""
    found: set[IPAddress] = set()
    if sys.platform.startswith("linux") and _FIB_TRIE.exists():
        lines = _FIB_TRIE.read_text(encoding="ascii", errors="replace").splitlines()
        for previous, line in zip(lines, lines[1:], strict=False):
            if line.strip() == "/32 host LOCAL" and "|--" in previous:
                found.add(ipaddress.ip_address(previous.split("|--", 1)[1].strip()))
        if _IF_INET6.exists():
            for row in _IF_INET6.read_text(encoding="ascii", errors="replace").splitlines():
                if row.split():
                    found.add(ipaddress.IPv6Address(int(row.split()[0], 16)))
        return found
    try:
        return {a for a in resolve_host(socket.gethostname(), 0)}
    except (OSError, UnicodeError, ValueError):
        return found


class _OwnAddresses:
    """This machine's public addresses (:func:`interface_addresses`), read again after :data:`OWN_ADDRESSES_TTL_S`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = -OWN_ADDRESSES_TTL_S
        self._public: frozenset[IPAddress] = frozenset()

    def __call__(self) -> Collection[IPAddress]:
        with self._lock:
            if time.monotonic() - self._read_at >= OWN_ADDRESSES_TTL_S:
                try:
                    self._public = frozenset(a for a in interface_addresses() if is_public_address(a))
                except (OSError, ValueError) as err:
                    log.warning("cannot list this machine's addresses: %s", err)
                self._read_at = time.monotonic()
            return self._public


own_public_addresses = _OwnAddresses()


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64's 64:ff9b::/96), which reaches that host."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def _any_address(address: IPAddress) -> bool:
    return True


def _none() -> Collection[IPAddress]:
    return ()


@dataclass(frozen=True)
class AddressPolicy:
    """Where connections made for a link may go: ``resolve`` turns a host name into addresses, ``allowed`` says
    whether one address may be connected to, ``own`` lists this machine's addresses (refused: a service that
    listens on its public address is still this server's), ``ports`` are the ports allowed (None: any).

    The default is the production policy: the system's resolver, public addresses only
    (:func:`~musrec.links.parse.is_public_address`), none of this machine's, ports 80 and 443.
    """

    resolve: Resolver = resolve_host
    allowed: Callable[[IPAddress], bool] = is_public_address
    own: Callable[[], Collection[IPAddress]] = own_public_addresses
    ports: frozenset[int] | None = WEB_PORTS

    def allowing_private(self) -> AddressPolicy:
        """The same resolver, every address and port allowed: for tests against a loopback server only."""
        return replace(self, allowed=_any_address, own=_none, ports=None)

    def check_port(self, port: int) -> None:
        """UnsupportedLinkError (:data:`OTHER_PORT`) for a port that is not allowed."""
        if self.ports is not None and port not in self.ports:
            raise UnsupportedLinkError(OTHER_PORT)

    def check_address(self, host: str, address: IPAddress) -> None:
        """UnsupportedLinkError if ``address`` (an answer for ``host``) may not be connected to."""
        if not self.allowed(address):
            log.warning("refused %s: it resolves to %s", host, address)
            raise UnsupportedLinkError(PRIVATE_ADDRESS)
        own = self.own()
        if address in own or _embedded_ipv4(address) in own:
            log.warning("refused %s: it resolves to %s, an address of this machine", host, address)
            raise UnsupportedLinkError(OWN_ADDRESS)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``: all it resolves to, each allowed, at an allowed port.

        UnsupportedLinkError (:data:`OTHER_PORT`, :data:`PRIVATE_ADDRESS` or :data:`OWN_ADDRESS`) if any is not;
        FetchError (NETWORK) if there are none.
        """
        name = normal_host(host)
        try:
            found: list[IPAddress] = [ipaddress.ip_address(name)]
        except ValueError:
            try:
                found = list(self.resolve(name, port))
            except (OSError, UnicodeError) as err:
                log.info("cannot resolve %s: %s", name, err)
                raise FetchError(FetchFailure.NETWORK) from None
        if not found:
            raise FetchError(FetchFailure.NETWORK)
        for address in found:
            self.check_address(name, address)
        self.check_port(port)  # after the addresses: a private address is the graver answer
        return found
