"""``stompgate admin ...``: the admin API from a shell, as tables or ``--json``.

The credential comes from a flag or from the variables the node itself reads
(``STOMPGATE_ADMIN__PASSWORD``, ``STOMPGATE_API__KEY``), so an operator who
configured the node from the environment needs nothing more.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PASSWORD_ENV = "STOMPGATE_ADMIN__PASSWORD"
KEY_ENV = "STOMPGATE_API__KEY"


def add_parser(sub: Any) -> None:
    """The ``admin`` subcommand and its own subcommands, on the main parser's subparsers."""
    p = sub.add_parser("admin", help="call a node's admin API (docs/admin.md)")
    p.add_argument("--url", default="http://127.0.0.1:8080/admin", help="the node's admin.path URL")
    p.add_argument("--user", default="admin", help="admin.user (default: admin)")
    p.add_argument("--password", help=f"admin.password (default: ${PASSWORD_ENV})")
    p.add_argument("--key", help=f"the API key, when admin.api_key is true (default: ${KEY_ENV})")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node")
    # --json after the subcommand too ("admin sessions --user bob --json").
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the JSON")
    cmds = p.add_subparsers(dest="admin_command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = cmds.add_parser(name, parents=[common], help=help)
        return parser

    add("info", "this node: version, uptime, sessions, counters")
    add("config", "the node's effective configuration, without secrets")
    add("nodes", "the live nodes of the cluster and their counts")
    users = add("users", "users online anywhere in the cluster")
    users.add_argument("--limit", type=int, default=100)
    sessions = add("sessions", "sessions on every node")
    sessions.add_argument("--user", dest="who", help="only this user's")
    sessions.add_argument("--limit", type=int, default=100)
    user = add("user", "a user's sessions anywhere in the cluster")
    user.add_argument("who", metavar="USER")
    user.add_argument("--limit", type=int, default=100)
    disconnect = add("disconnect", "close a user's sessions, or one session, cluster-wide")
    which = disconnect.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", dest="who")
    which.add_argument("--session")
    drain = add("drain", "drain a node as SIGTERM does, leaving it up and not ready until it is stopped")
    drain.add_argument("node", metavar="NODE", help="its id, as `nodes` lists it")


class AdminError(Exception):
    pass


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    headers = {"Accept": "application/json"}
    password = args.password or os.environ.get(PASSWORD_ENV)
    key = args.key or os.environ.get(KEY_ENV)
    if password:
        token = base64.b64encode(f"{args.user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif key:
        headers["Authorization"] = f"Bearer {key}"
    else:
        raise AdminError(f"no credential: give --password (or ${PASSWORD_ENV}) or --key (or ${KEY_ENV})")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    url = args.url.rstrip("/") + "/api" + path
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise AdminError(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AdminError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = [head, *[["-" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _sessions_text(answer: dict[str, Any]) -> str:
    rows = [
        [
            s["node"],
            s["id"],
            s["user"],
            s["transport"],
            s["remote"],
            _when(s["since"]),
            ", ".join(sub["destination"] for sub in s["subscriptions"]) or "-",
        ]  # fmt: skip
        for s in answer["sessions"]
    ]
    out = _table(rows, ["NODE", "SESSION", "USER", "TRANSPORT", "REMOTE", "SINCE", "SUBSCRIPTIONS"])
    out += f"\n{answer['total']} session(s)"
    if answer["truncated"]:
        out += f", {len(answer['sessions'])} shown (truncated: raise --limit)"
    return out + _missing(answer)


def _missing(answer: dict[str, Any]) -> str:
    missing = answer.get("missing") or []
    return f"\nno answer from node(s): {', '.join(missing)}" if missing else ""


def _text(command: str, answer: dict[str, Any]) -> str:
    if command == "info":
        keys = ["node", "version", "uptime_s", "sessions", "connections", "subscriptions", "users"]
        return "\n".join(f"{k}: {answer[k]}" for k in keys)
    if command == "config":
        return json.dumps(answer["config"], indent=2)
    if command == "nodes":
        rows = [
            [n["node"], n["version"], n["uptime_s"], n["sessions"], n["subscriptions"], n["users"]]
            for n in answer["nodes"]
        ]
        return _table(rows, ["NODE", "VERSION", "UPTIME_S", "SESSIONS", "SUBSCRIPTIONS", "USERS"]) + _missing(
            answer
        )
    if command == "users":
        more = f"\n({answer['total']} online, {len(answer['users'])} shown)" if answer["truncated"] else ""
        return "\n".join(answer["users"]) + more
    if command in ("sessions", "user"):
        return _sessions_text(answer)
    if command == "drain":
        return f"draining: {', '.join(answer['draining'])}" + _missing(answer)
    nodes = ", ".join(f"{node}: {n}" for node, n in answer["nodes"].items())
    return f"closed {answer['closed']} session(s) ({nodes or 'no node answered'})" + _missing(answer)


def run(args: argparse.Namespace) -> int:
    command = args.admin_command
    quote = urllib.parse.quote
    try:
        if command in ("info", "config", "nodes"):
            answer = _call(args, "GET", f"/{command}")
        elif command == "users":
            answer = _call(args, "GET", f"/users?limit={args.limit}")
        elif command == "sessions":
            query = f"?limit={args.limit}" + (f"&user={quote(args.who, safe='')}" if args.who else "")
            answer = _call(args, "GET", "/sessions" + query)
        elif command == "user":
            answer = _call(args, "GET", f"/users/{quote(args.who, safe='')}?limit={args.limit}")
        elif command == "drain":
            answer = _call(args, "POST", "/drain", {"node": args.node})
        else:
            body = {"user": args.who} if args.who is not None else {"session": args.session}
            answer = _call(args, "POST", "/disconnect", body)
    except AdminError as exc:
        print(f"stompgate admin: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else _text(command, answer))
    return 0
