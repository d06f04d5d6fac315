"""Fetching the image of a ``/url`` request without opening a door into the device's network.

A prediction server often sits on a camera's LAN or a cloud VM with a metadata service at
169.254.169.254. Fetching any URL a client names would let anyone who can reach the server read
those (server-side request forgery). So, unless the operator allows it:

- only http and https;
- the host name is resolved once, every address it resolves to must be public (no loopback,
  private, link-local, multicast, reserved or unspecified ranges, IPv4-mapped IPv6 included), and
  the connection goes to that checked address (the Host header and TLS SNI keep the name), so a
  second DNS answer cannot swap in an internal address;
- redirects are followed by hand, a few at most, each hop checked the same way;
- one deadline covers resolving, connecting and reading, and the body is cut off at a size cap.

Proxies from the environment are not used (``trust_env=False``): a proxy would resolve the name
itself and the address check would mean nothing.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urljoin, urlsplit, urlunsplit

from falconet.server.errors import ImageUrlError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class UrlPolicy:
    timeout_s: float = 10.0
    max_bytes: int = 4 * 1024 * 1024
    allow_private: bool = False
    max_redirects: int = 3


def refused_reason(address: IPAddress) -> Optional[str]:
    """Why an address must not be fetched from, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refused_reason(address.ipv4_mapped)
    checks = (("loopback", address.is_loopback), ("link-local", address.is_link_local),
              ("private", address.is_private), ("multicast", address.is_multicast),
              ("unspecified", address.is_unspecified), ("reserved", address.is_reserved),
              ("shared (carrier-grade NAT)", address in ipaddress.ip_network("100.64.0.0/10")),
              ("non-global", not address.is_global))
    for name, hit in checks:
        if hit:
            return name
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImageUrlError(f"The host {host!r} cannot be resolved ({exc.strerror}).") from None
    # Scoped IPv6 addresses carry "%iface"; the address itself is what is checked.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))


async def checked_address(url: str, policy: UrlPolicy) -> tuple[Any, IPAddress]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ImageUrlError(f"Only http and https URLs can be fetched, not {parts.scheme or 'a relative URL'!r}.")
    if not parts.hostname:
        raise ImageUrlError(f"The URL {url!r} has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ImageUrlError(f"The URL {url!r} has an invalid port.") from None
    addresses = await resolve(parts.hostname, port)
    if not addresses:
        raise ImageUrlError(f"The host {parts.hostname!r} has no address.")
    if not policy.allow_private:
        for address in addresses:
            reason = refused_reason(address)
            if reason:
                raise ImageUrlError(
                    f"The URL's host {parts.hostname!r} is a {reason} address ({address}); this server only fetches "
                    "from public addresses (the operator can allow others with --allow-private-urls).")
    return parts, addresses[0]


def _pinned(parts: Any, address: IPAddress) -> str:
    """The same URL with the host replaced by the checked address."""
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def _get(client: Any, url: str, policy: UrlPolicy) -> bytes:
    for _ in range(policy.max_redirects + 1):
        parts, address = await checked_address(url, policy)
        host_header = parts.netloc.rsplit("@", 1)[-1]
        request = client.build_request("GET", _pinned(parts, address), headers={"Host": host_header},
                                       extensions={"sni_hostname": parts.hostname})
        response = await client.send(request, stream=True)
        try:
            if response.status_code in REDIRECTS and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code != 200:
                raise ImageUrlError(f"The URL answered HTTP {response.status_code}.")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise ImageUrlError(f"The image at the URL is {int(declared)} bytes; the limit is {policy.max_bytes}.",
                                    code="BadRequestImageSizeBytes")
            chunks, received = [], 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > policy.max_bytes:
                    raise ImageUrlError(f"The image at the URL is over the limit of {policy.max_bytes} bytes.",
                                        code="BadRequestImageSizeBytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await response.aclose()
    raise ImageUrlError(f"The URL redirected more than {policy.max_redirects} times.")


async def fetch_image(client: Any, url: str, policy: UrlPolicy) -> bytes:
    """The bytes at ``url`` under ``policy``; every failure is an ImageUrlError (400)."""
    import httpx

    try:
        # wait_for rather than asyncio.timeout: the Jetson image runs Python 3.10.
        return await asyncio.wait_for(_get(client, url, policy), policy.timeout_s)
    except asyncio.TimeoutError:
        raise ImageUrlError(f"Fetching the URL took longer than {policy.timeout_s:g} s.") from None
    except httpx.HTTPError as exc:
        raise ImageUrlError(f"The URL cannot be fetched: {type(exc).__name__}: {exc}") from None
    except (ValueError, httpx.InvalidURL) as exc:
        raise ImageUrlError(f"The URL {url!r} is not valid: {exc}") from None


def new_client() -> Any:
    """One pooled client per server; redirects and proxies are handled (refused) here, not by httpx."""
    import httpx

    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(10.0),
                             headers={"User-Agent": "falconet-serve", "Accept": "image/*"})
