"""Configuration loading, validation messages, environment overrides, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.nodes import ROOT, STOMPGATE, free_port
from stompgate.config import ConfigError, load_config


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def problems(tmp_path: Path, data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env=env or {})
    return info.value.problems


def test_top_level_config_is_valid_and_single_node() -> None:
    config = load_config(ROOT / "config.yaml", env={})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.websocket_paths == ["/ws", "/gs-guide-websocket"]  # the second: the greeting example
    assert config.auth.mode == "dev"


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"auth": {"mode": "dev"}, "server": {"prot": 1}}, "server.prot: unknown key (did you mean 'port'?)"),
        ({"auth": {"mode": "dev"}, "server": {"port": "abc"}}, "server.port: expected an integer, got 'abc'"),
        (
            {"auth": {"mode": "dev"}, "server": {"port": 70000}},
            "server.port: must be a port number 0-65535, got 70000",
        ),
        (
            {"auth": {"mode": "jwt"}, "api": {"enabled": False}},
            "auth.jwt.secret: required when auth.mode is jwt",
        ),
        (
            {"auth": {"mode": "jwt", "jwt": {"algorithm": "RS256"}}, "api": {"enabled": False}},
            "auth.jwt.public_key: required (or public_key_file) when algorithm is RS256",
        ),
        (
            {"auth": {"mode": "static"}, "api": {"enabled": False}},
            "auth.users: required when auth.mode is static",
        ),
        ({"auth": {"mode": "magic"}}, "auth.mode: must be one of dev, static, jwt, got 'magic'"),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "destinations": {"application_prefixes": ["/app"]},
             "proxy": {"application_url": "http://backend/stomp"}},
            "proxy.secret: required with proxy.application_url, at least 16 characters",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"},
             "proxy": {"application_url": "http://b/s", "secret": "s" * 16}},
            "proxy.application_url: needs destinations.application_prefixes",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"},
             "proxy": {"connect_url": "http://b/c", "secret": "s" * 16, "timeout_s": 10}},
            "proxy.timeout_s: must be below stomp.connect_timeout_s (10) with proxy.connect_url",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "authorization": {"rules": [{"send": "/a"}]}},
            "authorization.rules[0]: needs either allow (anyone, authenticated or nobody) or users / roles",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "authorization": {"rules": [{"allow": "anyone"}]}},
            "authorization.rules[0]: needs exactly one of send, subscribe, destination",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"},
             "authorization": {"rules": [{"send": "topic", "allow": "everyone"}]}},
            "authorization.rules[0].allow: must be one of anyone, authenticated, nobody",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"},
             "destinations": {"application_prefixes": ["/topic/app"]}},
            "destinations.application_prefixes[0]: '/topic/app' overlaps a broker prefix",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"allowed_origins": ["app.example"]}},
            "server.allowed_origins[0]: expected '*', 'null' or scheme://host[:port]",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "stomp": {"sender_header": "Message-Id"}},
            "stomp.sender_header: 'Message-Id': lower case, without surrounding blanks",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "stomp": {"sender_header": "message-id"}},
            "stomp.sender_header: 'message-id' is a header the broker sets for another purpose",
        ),
        ({"api": {"enabled": False}}, "auth.mode: required: one of dev, static, jwt"),
        ({"auth": {"mode": "dev"}}, "api.key: required when api.enabled is true"),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "stomp": {"max_frame_size": 0}},
            "stomp.max_frame_size: must be > 0",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "stomp": {"heartbeat": {"read_margin": 0.5}}},
            "stomp.heartbeat.read_margin: must be >= 1.0",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "destinations": {"broker_prefixes": ["topic"]}},
            "destinations.broker_prefixes[0]: must start with '/'",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"websocket_paths": "/ws"}},
            "server.websocket_paths: expected a list",
        ),
        ({"auth": {"mode": "dev"}, "api": {"key": "k"}, "unknown": 1}, "unknown: unknown key"),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"sockjs": [{"path": "chat/"}]}},
            "server.sockjs[0].path: required, starts with '/'",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"sockjs": [{"path": "/ws"}]}},
            "server.sockjs: a path is used twice",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"sockjs": [{"path": "/s", "heartbeat_s": 0}]},
            },
            "server.sockjs[0].heartbeat_s: must be > 0",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"sockjs": [{"path": "/s", "allowed_origins": ["example.com"]}]},
            },
            "server.sockjs[0].allowed_origins[0]: expected '*', 'null' or scheme://host[:port]",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"sockjs": [{"path": "/s", "hearbeat_s": 1}]},
            },
            "server.sockjs[0].hearbeat_s: unknown key (did you mean 'heartbeat_s'?)",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"static": [{"path": "/chat", "dir": "no-such-dir"}]},
            },
            "server.static[0].dir: no such directory:",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"extensions": ["missing.py"]}},
            "server.extensions[0]: no such file:",
        ),
        (
            {"auth": {"mode": "static", "users": {"a": "b"}, "cookie": "sid"}, "api": {"key": "k"}},
            "auth.cookie: only for mode dev or jwt",
        ),
        (
            {"auth": {"mode": "dev", "cookie": "a b"}, "api": {"key": "k"}},
            "auth.cookie: not a valid cookie name",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"workers": 0}},
            "server.workers: must be > 0, got 0",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "bus": {"type": "redis", "redis": {"url": "127.0.0.1:6379"}},
            },
            "bus.redis.url: '127.0.0.1:6379': expected a redis://, rediss:// or unix:// URL",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "bus": {"type": "redis", "redis": {"url": "redis://h:99999"}}},
            "bus.redis.url: 'redis://h:99999': Port out of range",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"connections": {"max": 0}}},
            "server.connections.max: must be > 0, got 0",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"connections": {"per_address": -1}}},
            "server.connections.per_address: must be > 0, got -1",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"connections": {"per_address": "many"}},
            },
            "server.connections.per_address: expected an integer, got 'many'",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"connections": {"exempt": ["localhost"]}},
            },
            "server.connections.exempt[0]: expected an IP address or network (10.0.0.0/8), got 'localhost'",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"connections": {"exempt": ["10.0.0.0/33"]}},
            },
            "server.connections.exempt[0]: expected an IP address or network",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"connections": {"exempt": "127.0.0.1"}},
            },
            "server.connections.exempt: expected a list",
        ),
        (
            {
                "auth": {"mode": "dev"},
                "api": {"key": "k"},
                "server": {"connections": {"header_timeout_s": 0}},
            },
            "server.connections.header_timeout_s: must be > 0, got 0",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"connections": {"body_timeout_s": -5}}},
            "server.connections.body_timeout_s: must be > 0, got -5",
        ),
        (
            {"auth": {"mode": "dev"}, "api": {"key": "k"}, "server": {"connections": {"per_adress": 5}}},
            "server.connections.per_adress: unknown key (did you mean 'per_address'?)",
        ),
    ],
)
def test_each_problem_names_its_key(tmp_path: Path, data: dict, expected: str) -> None:
    found = problems(tmp_path, data)
    assert any(p.startswith(expected) for p in found), found


def test_connection_limits_defaults_and_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"auth": {"mode": "dev"}, "api": {"key": "k"}}), env={})
    conn = config.server.connections
    assert conn.max is None  # derived from the open-file limit when the node starts
    assert (conn.per_address, conn.exempt) == (256, ["127.0.0.0/8", "::1"])
    assert (conn.header_timeout_s, conn.body_timeout_s) == (10.0, 15.0)
    env = {
        "STOMPGATE_SERVER__CONNECTIONS__MAX": "5000",
        "STOMPGATE_SERVER__CONNECTIONS__EXEMPT": "[]",
        "STOMPGATE_SERVER__CONNECTIONS__HEADER_TIMEOUT_S": "5",
    }
    conn = load_config(
        write(tmp_path, {"auth": {"mode": "dev"}, "api": {"key": "k"}}), env=env
    ).server.connections
    assert (conn.max, conn.exempt, conn.header_timeout_s) == (5000, [], 5.0)
    data = {
        "auth": {"mode": "dev"},
        "api": {"key": "k"},
        "server": {"connections": {"exempt": ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]}},
    }
    assert load_config(write(tmp_path, data), env={}).server.connections.exempt == [
        "10.0.0.0/8",
        "fd00::/8",
        "192.0.2.7",
    ]


def test_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "ext.py").write_text("def setup(node):\n    pass\n")
    data = {
        "auth": {"mode": "dev"},
        "api": {"key": "k"},
        "server": {"static": [{"path": "/site", "dir": "site"}], "extensions": ["ext.py"]},
    }
    config = load_config(write(tmp_path, data), env={})
    assert config.server.static[0].dir == str(tmp_path / "site")
    assert config.server.extensions == [str(tmp_path / "ext.py")]


def test_top_level_config_serves_the_chat_example() -> None:
    config = load_config(ROOT / "config.yaml", env={})
    assert [s.path for s in config.server.sockjs] == ["/chat-websocket"]
    assert Path(config.server.static[0].dir) == ROOT / "examples" / "chat" / "public"
    assert config.server.extensions == [
        str(ROOT / "examples" / "chat" / "backend.py"),
        str(ROOT / "examples" / "greeting" / "handlers.py"),
    ]
    assert config.destinations.application_prefixes == ["/message", "/app"]  # the seed's, the guide's
    assert config.auth.cookie == "chat_user"


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, {"server": {"prot": 1, "host": [5]}, "stomp": {"max_headers": "x"}})
    assert len(found) == 3, found


def test_yaml_and_file_errors(tmp_path: Path) -> None:
    assert "not valid YAML" in problems(tmp_path, "server: [unclosed")[0]
    assert "top level must be a mapping" in problems(tmp_path, "- a\n- b\n")[0]
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml", env={})
    assert "cannot read the file" in str(info.value)


def test_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, {"auth": {"mode": "dev"}, "api": {"key": "k"}})
    env = {
        "STOMPGATE_SERVER__PORT": "9123",
        "STOMPGATE_AUTH__MODE": "jwt",
        "STOMPGATE_AUTH__JWT__SECRET": "from-env",
        "STOMPGATE_DESTINATIONS__BROKER_PREFIXES": "[/topic, /exchange]",
        "OTHER_VAR": "ignored",
    }
    config = load_config(path, env=env)
    assert config.server.port == 9123
    assert config.auth.mode == "jwt" and config.auth.jwt.secret == "from-env"
    assert config.destinations.broker_prefixes == ["/topic", "/exchange"]
    found = problems(
        tmp_path, {"auth": {"mode": "dev"}, "api": {"key": "k"}}, env={"STOMPGATE_SERVER__PORT": "x"}
    )
    assert found == ["server.port: expected an integer, got 'x'"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stompgate", *args], capture_output=True, text=True, cwd=ROOT, timeout=30
    )


def test_check_config_command(tmp_path: Path) -> None:
    ok = run_cli("check-config", str(ROOT / "config.yaml"))
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = run_cli("check-config", str(write(tmp_path, {"auth": {"mode": "jwt"}, "api": {"key": "k"}})))
    assert bad.returncode == 2
    assert "auth.jwt.secret: required when auth.mode is jwt" in bad.stderr


def test_serve_port_override_and_bad_port(tmp_path: Path) -> None:
    """`stompgate serve --config config.yaml --port N` listens on N, not on the file's port."""
    import signal
    import time
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [*STOMPGATE, "serve", "--config", str(ROOT / "config.yaml"), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "node did not start"
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "development only" in out  # the dev-login warning
    assert f":{port}" in out
    bad = run_cli("serve", "--config", str(ROOT / "config.yaml"), "--port", "99999")
    assert bad.returncode == 2 and "--port" in bad.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli("serve", "--config", str(ROOT / "config.yaml"), "--port", str(port))
    assert result.returncode == 1
    assert "cannot start" in result.stderr


# ------------------------------------------------ dev mode cannot be switched on by accident

DEV = {"auth": {"mode": "dev"}, "api": {"key": "k"}}


@pytest.mark.parametrize(
    "server, exposed",
    [
        ({"host": "0.0.0.0"}, "server.host=0.0.0.0"),
        ({"host": "::"}, "server.host=::"),
        ({"host": ""}, "server.host=(all)"),
        ({"host": "10.1.2.3"}, "server.host=10.1.2.3"),
        ({"host": "chat.example.com"}, "server.host=chat.example.com"),
        ({"tcp": {"enabled": True, "host": "0.0.0.0"}}, "server.tcp.host=0.0.0.0"),
    ],
)
def test_dev_mode_on_a_reachable_address_needs_the_explicit_flag(
    tmp_path: Path, server: dict, exposed: str
) -> None:
    found = problems(tmp_path, {**DEV, "server": server})
    assert len(found) == 1 and found[0].startswith("auth.mode: dev"), found
    assert exposed in found[0] and "auth.dev_allow_remote: true" in found[0]
    allowed = load_config(
        write(tmp_path, {**DEV, "server": server, "auth": {"mode": "dev", "dev_allow_remote": True}}), env={}
    )
    assert allowed.auth.dev_allow_remote is True
    # the other modes check passwords: any address is fine
    jwt_mode = {"auth": {"mode": "jwt", "jwt": {"secret": "s"}}, "api": {"key": "k"}, "server": server}
    assert load_config(write(tmp_path, jwt_mode), env={}).auth.mode == "jwt"
    # loopback listeners need no flag (make run, the tests, examples/cluster)
    for loopback in [{}, {"host": "127.0.0.1"}, {"host": "127.0.0.2"}, {"host": "::1"}, {"host": "localhost"},
                     {"tcp": {"enabled": False, "host": "0.0.0.0"}}]:
        assert load_config(write(tmp_path, {**DEV, "server": loopback}), env={}).auth.mode == "dev"


def test_an_environment_override_cannot_expose_dev_mode_silently(tmp_path: Path) -> None:
    path = write(tmp_path, {**DEV})
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"STOMPGATE_SERVER__HOST": "0.0.0.0"})
    assert "auth.dev_allow_remote" in str(info.value)
    static = write(
        tmp_path,
        {"auth": {"mode": "static", "users": {"a": "b"}}, "api": {"key": "k"}, "server": {"host": "0.0.0.0"}},
    )
    with pytest.raises(ConfigError):
        load_config(static, env={"STOMPGATE_AUTH__MODE": "dev"})


def test_static_user_names_with_control_characters_are_a_config_error(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        {"auth": {"mode": "static", "users": {"ok": "1", "eve\nINFO forged": "2"}}, "api": {"key": "k"}},
    )
    assert found == ["auth.users: the user name 'eve\\nINFO forged' contains a control character (U+000A)"]


def test_environment_overrides_are_reported_by_name_never_by_value(tmp_path: Path) -> None:
    from stompgate.config import ConfigNote

    path = write(tmp_path, {"auth": {"mode": "static", "users": {"a": "b"}}, "api": {"key": "k"}})
    notes: list[ConfigNote] = []
    env = {
        "STOMPGATE_AUTH__MODE": "jwt",
        "STOMPGATE_AUTH__JWT__SECRET": "top-secret",
        "STOMPGATE_API__KEY": "hidden",
    }
    load_config(path, env=env, notes=notes)
    text = "\n".join(n.text for n in notes)
    assert "top-secret" not in text and "hidden" not in text
    assert [n.warning for n in notes] == [False, True]
    assert notes[0].text == (
        "environment overrides: api.key (STOMPGATE_API__KEY), auth.jwt.secret (STOMPGATE_AUTH__JWT__SECRET), "
        "auth.mode (STOMPGATE_AUTH__MODE)"
    )
    assert notes[1].text == "STOMPGATE_AUTH__MODE changes auth.mode from 'static' (the file) to 'jwt'"
    # a whole section replaced from the environment is caught too
    notes = []
    load_config(path, env={"STOMPGATE_AUTH": "{mode: dev}"}, notes=notes)
    assert notes[-1].text == "STOMPGATE_AUTH changes auth.mode from 'static' (the file) to 'dev'"
    notes = []
    load_config(path, env={"STOMPGATE_SERVER__PORT": "9000"}, notes=notes)
    assert [n.warning for n in notes] == [False]


def test_check_config_warns_about_dev_mode_and_env_overrides(tmp_path: Path) -> None:
    dev = run_cli("check-config", str(ROOT / "config.yaml"))
    assert dev.returncode == 0
    assert "stompgate: warning: auth.mode is dev:" in dev.stderr and "development only" in dev.stderr
    static = write(tmp_path, {"auth": {"mode": "static", "users": {"a": "b"}}, "api": {"key": "k"}})
    quiet = run_cli("check-config", str(static))
    assert quiet.returncode == 0 and quiet.stderr == ""
    import os

    switched = subprocess.run(
        [sys.executable, "-m", "stompgate", "check-config", str(static)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env={**os.environ, "STOMPGATE_AUTH__MODE": "dev"},
    )
    assert switched.returncode == 0
    assert (
        "warning: STOMPGATE_AUTH__MODE changes auth.mode from 'static' (the file) to 'dev'"
        in switched.stderr
    )
    assert "warning: auth.mode is dev" in switched.stderr


def test_serve_host_override_cannot_expose_dev_mode(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--config", str(ROOT / "config.yaml"), "--host", "0.0.0.0", "--port", str(free_port())
    )
    assert result.returncode == 2
    assert "auth.mode: dev" in result.stderr and "auth.dev_allow_remote" in result.stderr
    assert "(set by --host 0.0.0.0)" in result.stderr  # validated with the file, naming the flag


def test_dev_mode_and_a_switched_mode_are_logged_at_every_level(tmp_path: Path) -> None:
    """logging.level error hides warnings: these two are shown anyway."""
    import os
    import signal
    import time
    import urllib.request

    port = free_port()
    path = write(tmp_path, {
        "auth": {"mode": "static", "users": {"a": "b"}}, "api": {"key": "k"},
        "server": {"port": port}, "logging": {"level": "error"},
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOMPGATE_")}
    env["STOMPGATE_AUTH__MODE"] = "dev"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stompgate", "serve", "--config", str(path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "node did not start"
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert (
        "WARNING stompgate.config: STOMPGATE_AUTH__MODE changes auth.mode from 'static' (the file) to 'dev'"
        in out
    )
    assert "WARNING stompgate: auth.mode is dev:" in out and "development only" in out
    assert "listening on" not in out  # an info line: level error is in force


def test_a_connect_proxy_may_stand_in_for_auth_mode(tmp_path: Path) -> None:
    proxy = {"connect_url": "http://backend/connect", "secret": "s" * 16}
    config = load_config(write(tmp_path, {"api": {"key": "k"}, "proxy": proxy}), env={})
    assert config.auth.mode is None
    assert not config.authorization.authorizer(config.auth.mode, "/").default_allow  # production: deny
