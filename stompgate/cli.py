"""Command line: ``stompgate serve``, ``stompgate check-config`` and ``stompgate admin ...``."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, logs
from .config import Config, ConfigError, ConfigNote, load_config, startup_warnings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stompgate", description="STOMP-over-WebSocket broker")
    parser.add_argument("--version", action="version", version=f"stompgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a node")
    serve.add_argument("--config", "-c", required=True, help="YAML configuration file")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override logging.level"
    )
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    from .admin.cli import add_parser as add_admin_parser

    add_admin_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "admin":  # a client of a running node: no configuration to load
        from .admin.cli import run as run_admin

        return run_admin(args)
    path = args.config if args.command == "serve" else args.file
    notes: list[ConfigNote] = []
    overrides: dict[str, tuple[object, str]] = {}
    if args.command == "serve":  # validated with the file, by the same rules
        if args.host:
            overrides["server.host"] = (args.host, f"--host {args.host}")
        if args.port is not None:
            overrides["server.port"] = (args.port, f"--port {args.port}")
        if args.log_level:
            overrides["logging.level"] = (args.log_level, f"--log-level {args.log_level}")
    try:
        config = load_config(path, notes=notes, overrides=overrides)
    except ConfigError as exc:
        print(f"stompgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{path}: configuration is valid")
        for note in notes:
            print(f"stompgate: {'warning' if note.warning else 'note'}: {note.text}", file=sys.stderr)
        for warning in startup_warnings(config):
            print(f"stompgate: warning: {warning}", file=sys.stderr)
        return 0
    logs.setup(config.logging.level, LOG_FORMAT, config.logging.format, config.node_id)
    log = logging.getLogger("stompgate.config")
    for note in notes:  # a changed auth.mode is shown whatever the level; the rest at info
        if note.warning:
            logs.always(log, logging.WARNING, "%s", note.text)
        else:
            log.info("%s", note.text)
    if config.server.workers > 1:
        from .workers import supervise

        return supervise(config, _run_node, LOG_FORMAT)
    return _run_node(config)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _run_node(config: Config) -> int:
    from .app import run
    from .extensions import ExtensionError

    try:
        run(config)
    except OSError as exc:
        logging.getLogger("stompgate").error("cannot start: %s", exc)
        return 1
    except ExtensionError as exc:
        logging.getLogger("stompgate").error("cannot start: server.extensions: %s", exc)
        return 2
    return 0
