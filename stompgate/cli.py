"""Command line: ``stompgate serve`` and ``stompgate check-config``."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, logs
from .config import Config, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stompgate", description="STOMP-over-WebSocket broker")
    parser.add_argument("--version", action="version", version=f"stompgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a node")
    serve.add_argument("--config", "-c", required=True, help="YAML configuration file")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override logging.level")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = args.config if args.command == "serve" else args.file
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"stompgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{path}: configuration is valid")
        return 0
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            print(f"stompgate: --port: must be 0-65535, got {args.port}", file=sys.stderr)
            return 2
        config.server.port = args.port
    if args.log_level:
        config.logging.level = args.log_level
    logs.setup(config.logging.level, LOG_FORMAT)
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
