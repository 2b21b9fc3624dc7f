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


def qr_png(text: str) -> bytes:
    """A QR code of ``text`` as PNG bytes."""
    buffer = io.BytesIO()
    qrcode.make(text, border=2).save(buffer, format="PNG")
    return buffer.getvalue()
