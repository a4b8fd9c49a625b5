"""`studio serve`: the studio in the browser for a workshop, one studio per visitor (studio.tui.serve)."""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from pathlib import Path

from rich.console import Console

from studio.cli.common import CliError
from studio.tui.serve.sessions import GIB, Sessions, available_memory, default_max_sessions, invitation_token, room_host
from studio.cpu_threads import usable_cores

DEFAULT_PORT = 8000


def add_serve_parser(commands) -> None:
    serve = commands.add_parser("serve", help="the studio in the browser for a workshop: one studio per visitor")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: the room; needs a token)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--max-sessions", type=int, help="visitors at once (default: from the cores and free memory)")
    serve.add_argument("--token", help="the invitation in the link (default off the loopback: a new one)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from studio.tui.serve.server import StudioServer, room_url  # aiohttp loads only for this command

    cores, memory = usable_cores(), available_memory()
    cap = args.max_sessions
    if cap is None:
        cap = default_max_sessions(cores, memory)
        why = f"default for {cores} cores and {memory / GIB:.1f} GiB free memory; --max-sessions to change"
    else:
        why = "--max-sessions"
    token = invitation_token(args.host, args.token)  # ValueError: main() prints it as one line
    with tempfile.TemporaryDirectory(prefix="studio-serve-") as room:
        sessions = Sessions(cap, cores, Path(room) / "cpu-share")  # ValueError for a cap under 1
        check_can_listen(args.host, args.port)  # before the link is printed: the server binds after its startup
        url = room_url(room_host(args.host), args.port, token)
        console.print(f"At most {cap} visitors at once ({why}).", highlight=False, soft_wrap=True)
        try:
            StudioServer(host=args.host, port=args.port, sessions=sessions, token=token, room_url=url).serve()
        except OSError as error:  # taken between the check and the server's own bind
            raise CliError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    return 0


def check_can_listen(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):  # SO_REUSEADDR, as aiohttp binds
            pass
    except OSError as error:  # the port is taken, the host is not this machine's
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise CliError(f"cannot listen on {host}:{port}: {reason}") from None
