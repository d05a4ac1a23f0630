"""Ports and the health probe: checked before anything starts, so a taken port fails in milliseconds."""

from __future__ import annotations

import socket
import urllib.request

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def port_free(host: str, port: int) -> bool:
    """True when `host:port` can be bound now (the way the server will bind it: no SO_REUSEADDR tricks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for PostgreSQL's first start; remembered afterwards)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def client_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to `host` (a wildcard means loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def healthy(url: str, timeout: float = 2.0) -> bool:
    """GET url/health answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False
