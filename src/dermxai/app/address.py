"""The app's address as a phone on the same network would type it, and its QR code."""

from __future__ import annotations

import io
import socket
from urllib.parse import urlsplit, urlunsplit

import qrcode

LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]")


def lan_ip() -> str | None:
    """This machine's address on its local network (no packet is sent), or None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP connect only picks a route
            return probe.getsockname()[0]
        except OSError:
            return None


def lan_url(url: str) -> str:
    """``url`` with a local host name replaced by the LAN address, so a phone can open it."""
    parts = urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS:
        return url
    ip = lan_ip()
    if ip is None:
        return url
    host = f"{ip}:{parts.port}" if parts.port else ip
    return urlunsplit(parts._replace(netloc=host))


def phone_url(page_url: str, bind_address: str | None) -> str | None:
    """The address a phone can open, or None when the app listens on this machine only (127.0.0.1)."""
    if bind_address in (None, "", "0.0.0.0", "::"):
        return lan_url(page_url)
    if bind_address in LOCAL_HOSTS:
        return None
    parts = urlsplit(page_url)
    return urlunsplit(parts._replace(netloc=f"{bind_address}:{parts.port}" if parts.port else bind_address))


def qr_png(text: str) -> bytes:
    """A QR code of ``text`` as PNG bytes."""
    buffer = io.BytesIO()
    qrcode.make(text, border=2).save(buffer, format="PNG")
    return buffer.getvalue()
