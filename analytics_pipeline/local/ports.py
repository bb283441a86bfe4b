"""Ports the local stack listens on, checked before anything starts: a clear error naming the
port and what moves it, instead of a child that dies on its bind after a while (or a browser
that silently shows another process's Dagster)."""

from __future__ import annotations

import contextlib
import errno
import socket

import psutil


class PortTaken(RuntimeError):
    """A port the stack needs is held by something else; the message says what moves it."""


def port_in_use(host: str, port: int) -> bool:
    """True when binding `host:port` fails because something holds it (SO_REUSEADDR, as the
    servers bind, so a connection in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def listener_of(port: int) -> str:
    """' (pid N: command)' of the process listening on `port`, when this user may see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                if connection.pid is None:
                    return ""
                command = " ".join(psutil.Process(connection.pid).cmdline())[:120]
                return f" (pid {connection.pid}: {command})"
    return ""


def refuse_taken(host: str, port: int, what: str, how_to_move: str) -> None:
    """PortTaken unless `host:port` is free."""
    if port_in_use(host, port):
        raise PortTaken(
            f"port {port} on {host}, {what}, is already in use{listener_of(port)}; {how_to_move}"
        )
