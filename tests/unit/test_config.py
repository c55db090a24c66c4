"""Tests for iwo_lite.config: defaults, the example file, overrides, and one-line errors."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from iwo_lite.config import (
    ROLES,
    AgentConfig,
    ApprovalsConfig,
    Config,
    ConfigError,
    LoopConfig,
    RoleConfig,
    TelegramConfig,
    load_config,
    parse_duration,
    resolve_home,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: nothing from the real one leaks into the tests."""
    return {"HOME": str(tmp_path / "user")}


def write(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(home: Path, text: str, env: dict[str, str]) -> Config:
    write(home, text)
    return load_config(home, environ=env)


def error_for(home: Path, text: str, env: dict[str, str]) -> str:
    path = write(home, text)
    with pytest.raises(ConfigError) as info:
        load_config(home, environ=env)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    return message


# --------------------------------------------------------------------------- defaults


def test_defaults_without_a_file(home: Path, env: dict[str, str]) -> None:
    cfg = load_config(home, environ=env)
    assert cfg.home == home
    assert cfg.config_path is None
    assert cfg.database_url == f"sqlite:///{home}/iwo.sqlite"
    assert cfg.database_url.startswith("sqlite:////")
    assert cfg.is_sqlite
    assert cfg.db_path == home / "iwo.sqlite"
    assert cfg.executor_id == (socket.gethostname() or "localhost")
    assert cfg.workdir == Path.cwd()
    assert cfg.agent == AgentConfig()
    assert cfg.agent.command == ("claude", "-p", "--output-format", "json")
    assert cfg.agent.timeout == 2700.0
    assert cfg.agent.max_concurrent == 2
    assert cfg.agent.retries == 2
    assert cfg.agent.dispatch == "subprocess"
    assert tuple(cfg.roles) == ROLES
    assert all(cfg.roles[r] == RoleConfig() for r in ROLES)
    assert cfg.loop == LoopConfig(max_rework=3)
    assert cfg.approvals == ApprovalsConfig(timeout=86400.0, on_timeout="reject", remind_every=14400.0)
    assert cfg.telegram == TelegramConfig()
    assert cfg.telegram.token_env == "IWO_TELEGRAM_TOKEN"
    assert cfg.telegram.base_url == "https://api.telegram.org/bot"


def test_config_is_frozen(home: Path, env: dict[str, str]) -> None:
    cfg = load_config(home, environ=env)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workdir = Path("/")  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.roles["planner"] = RoleConfig()  # type: ignore[index]


def test_example_file_gives_exactly_the_defaults(home: Path, env: dict[str, str]) -> None:
    defaults = load_config(home, environ=env)
    example = load_config(home, EXAMPLE, environ=env)
    assert example.config_path == EXAMPLE
    assert dataclasses.replace(example, config_path=None) == defaults


def test_example_file_documents_every_key() -> None:
    import tomllib

    from iwo_lite.config import _KIND_KEYS, _ROLE_KEYS, _SECTION_KEYS, _TOP_KEYS

    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(data) == set(_TOP_KEYS)  # the keys come from the dataclasses: each written once
    for section, keys in _SECTION_KEYS.items():
        assert set(data[section]) == set(keys), section
    assert set(data["agents"]) == set(_KIND_KEYS)
    for kind, keys in _KIND_KEYS.items():
        assert set(data["agents"][kind]) == set(keys), kind
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in _ROLE_KEYS:
        assert f"# {key} = " in text


def test_home_config_toml_is_read(home: Path, env: dict[str, str]) -> None:
    path = write(home, "[loop]\nmax_rework = 5\n")
    cfg = load_config(home, environ=env)
    assert cfg.config_path == path
    assert cfg.loop.max_rework == 5


def test_explicit_config_wins_over_home_file(home: Path, tmp_path: Path, env: dict[str, str]) -> None:
    write(home, "[loop]\nmax_rework = 5\n")
    other = tmp_path / "other.toml"
    other.write_text("[loop]\nmax_rework = 7\n")
    cfg = load_config(home, other, environ=env)
    assert cfg.config_path == other
    assert cfg.loop.max_rework == 7


# --------------------------------------------------------------------------- overrides


def test_every_override(home: Path, tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    cfg = load(
        home,
        f"""
database_url = "postgresql://iwo:secret@db.example/iwo"
executor_id = "laptop-1"
workdir = "{repo}"

[agent]
command = ["/usr/local/bin/fake-claude", "--json"]
timeout = "90s"
max_concurrent = 4
retries = 0
dispatch = "tmux"

[roles.reviewer]
extra_args = ["--allowedTools", "Read"]
prompt_file = "prompts/reviewer.md"
model = "opus"

[roles.docs]
model = "haiku"

[loop]
max_rework = 0

[approvals]
timeout = "2d"
on_timeout = "approve"
remind_every = ""

[telegram]
token_env = "MY_BOT_TOKEN"
allowed_chat_ids = [-1001234, 42]
allowed_user_ids = [7]
base_url = "http://127.0.0.1:8081/bot"
""",
        env,
    )
    assert cfg.database_url == "postgresql://iwo:secret@db.example/iwo"
    assert not cfg.is_sqlite and cfg.db_path is None
    assert cfg.database_url_redacted == "postgresql://iwo:***@db.example/iwo"
    assert cfg.executor_id == "laptop-1"
    assert cfg.workdir == repo
    assert cfg.agent == AgentConfig(("/usr/local/bin/fake-claude", "--json"), 90.0, 4, 0, "tmux")
    assert cfg.roles["reviewer"] == RoleConfig(("--allowedTools", "Read"), home / "prompts" / "reviewer.md", "opus")
    assert cfg.roles["docs"] == RoleConfig(model="haiku")
    assert cfg.roles["planner"] == RoleConfig()
    assert tuple(cfg.roles) == ROLES
    assert cfg.loop.max_rework == 0
    assert cfg.approvals == ApprovalsConfig(172800.0, "approve", None)
    assert cfg.telegram == TelegramConfig("MY_BOT_TOKEN", (-1001234, 42), (7,), "http://127.0.0.1:8081/bot")


def test_integer_durations_are_seconds(home: Path, env: dict[str, str]) -> None:
    cfg = load(home, "[agent]\ntimeout = 30\n[approvals]\nremind_every = 600\n", env)
    assert cfg.agent.timeout == 30.0
    assert cfg.approvals.remind_every == 600.0


def test_relative_paths(home: Path, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = conf_dir / "iwo.toml"
    path.write_text(
        'workdir = "repo"\ndatabase_url = "sqlite:///data/iwo.db"\n'
        '[roles.tester]\nprompt_file = "~/tester.md"\n'
    )
    cfg = load_config(home, Path("../conf/iwo.toml"), environ=env)
    assert cfg.config_path == path
    assert cfg.workdir == cwd / "repo"  # workdir: relative to the cwd
    assert cfg.db_path == conf_dir / "data" / "iwo.db"  # sqlite path: relative to the config file
    assert cfg.database_url == f"sqlite:///{conf_dir}/data/iwo.db"
    assert cfg.roles["tester"].prompt_file == Path(env["HOME"]) / "tester.md"


def test_postgres_scheme_is_normalised(home: Path, env: dict[str, str]) -> None:
    cfg = load(home, 'database_url = "postgres://u@h/db"\n', env)
    assert cfg.database_url == "postgresql://u@h/db"


def test_env_database_url_overrides_key(home: Path, tmp_path: Path, env: dict[str, str]) -> None:
    write(home, 'database_url = "postgresql://h/db"\n')
    env["IWO_DATABASE_URL"] = f"sqlite:///{tmp_path}/other.sqlite"
    cfg = load_config(home, environ=env)
    assert cfg.db_path == tmp_path / "other.sqlite"
    env["IWO_DATABASE_URL"] = ""  # empty = unset
    assert load_config(home, environ=env).database_url == "postgresql://h/db"


def test_env_database_url_error_names_the_variable(home: Path, env: dict[str, str]) -> None:
    env["IWO_DATABASE_URL"] = "mysql://u:pw@h/db"
    with pytest.raises(ConfigError) as info:
        load_config(home, environ=env)
    message = str(info.value)
    assert message.startswith("$IWO_DATABASE_URL: database_url: ")
    assert "pw" not in message


def test_env_executor_id_overrides_key(home: Path, env: dict[str, str]) -> None:
    write(home, 'executor_id = "from-file"\n')
    assert load_config(home, environ=env).executor_id == "from-file"
    env["IWO_EXECUTOR_ID"] = "from-env"
    assert load_config(home, environ=env).executor_id == "from-env"


def test_resolve_home(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    user = Path(env["HOME"])
    assert resolve_home(None, env) == user / ".iwo-lite"
    env["IWO_HOME"] = "~/iwo"
    assert resolve_home(None, env) == user / "iwo"
    assert resolve_home("rel/home", env) == tmp_path / "rel" / "home"  # --home wins, made absolute
    env["IWO_HOME"] = ""
    assert resolve_home(None, env) == user / ".iwo-lite"
    assert not (user / ".iwo-lite").exists()  # not created
    with pytest.raises(ConfigError, match="--home"):
        resolve_home("", env)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("45m", 2700.0), ("24h", 86400.0), ("2d", 172800.0), ("1.5s", 1.5), (" 4h ", 14400.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_empty() -> None:
    assert parse_duration("", allow_empty=True) is None
    with pytest.raises(ValueError, match="empty"):
        parse_duration("")


@pytest.mark.parametrize("text", ["soon", "45", "45 minutes", "m", "45M", "1w", "4h30m", "1e3s"])
def test_parse_duration_bad(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90s, 45m, 24h or 2d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "0m", "-5m", "-1d"])
def test_parse_duration_zero_or_negative(text: str) -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        parse_duration(text)


def test_parse_duration_hints() -> None:
    with pytest.raises(ValueError, match='"45s"'):
        parse_duration("45")
    with pytest.raises(ValueError, match='"45m"'):
        parse_duration("45M")


# --------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('[agent]\ntimeout = "soon"\n', "agent.timeout", 'expected a duration like 90s, 45m, 24h or 2d, got "soon"'),
        ('[agent]\ntimeout = "0s"\n', "agent.timeout", "greater than zero"),
        ("[agent]\ntimeout = -5\n", "agent.timeout", "greater than zero"),
        ("[agent]\ntimeout = true\n", "agent.timeout", "a boolean"),
        ('[agent]\nretries = "2"\n', "agent.retries", "expected an integer >= 0"),
        ("[agent]\nretries = true\n", "agent.retries", "got true (a boolean)"),
        ("[agent]\nretries = -1\n", "agent.retries", "expected an integer >= 0, got -1"),
        ("[agent]\nretries = 1.5\n", "agent.retries", "a float"),
        ("[agent]\nmax_concurrent = 0\n", "agent.max_concurrent", "expected an integer >= 1"),
        ("[agent]\nmax_concurrent = false\n", "agent.max_concurrent", "a boolean"),
        ('[agent]\ndispatch = "screen"\n', "agent.dispatch", 'expected "subprocess" or "tmux", got "screen"'),
        ("[agent]\ncommand = []\n", "agent.command", "empty array"),
        ('[agent]\ncommand = "claude -p"\n', "agent.command", "expected an array of strings"),
        ('[agent]\ncommand = ["claude", 1]\n', "agent.command[1]", "expected a string"),
        ('[agent]\ncommand = ["claude", ""]\n', "agent.command[1]", "non-empty"),
        ("[agent]\ntimout = 5\n", "agent.timout", "unknown key; did you mean 'timeout'?"),
        ('agent = "x"\n', "agent", "expected a table"),
        ("[loop]\nmax_rework = -1\n", "loop.max_rework", "expected an integer >= 0"),
        ("[loop]\nmax_rework = true\n", "loop.max_rework", "a boolean"),
        ("[loop]\nmax_reworks = 1\n", "loop.max_reworks", "did you mean 'max_rework'?"),
        ('[approvals]\non_timeout = "ignore"\n', "approvals.on_timeout", 'expected "reject" or "approve"'),
        ('[approvals]\nremind_every = "0s"\n', "approvals.remind_every", "greater than zero"),
        ('[approvals]\ntimeout = ""\n', "approvals.timeout", "empty string"),
        ('[approvals]\nremind_every = "often"\n', "approvals.remind_every", "expected a duration"),
        ("[roles.reviwer]\nmodel = \"x\"\n", "roles.reviwer", "unknown role; did you mean 'reviewer'?"),
        ("[roles.critic]\n", "roles.critic", "unknown role; expected one of: planner, builder"),
        ("[roles.builder]\nmodle = \"x\"\n", "roles.builder.modle", "did you mean 'model'?"),
        ('[roles.builder]\nmodel = ""\n', "roles.builder.model", "non-empty string"),
        ("[roles.builder]\nmodel = 4\n", "roles.builder.model", "expected a string"),
        ('[roles.builder]\nextra_args = "--x"\n', "roles.builder.extra_args", "expected an array of strings"),
        ("[roles.builder]\nextra_args = [1]\n", "roles.builder.extra_args[0]", "expected a string"),
        ("[roles.builder]\nprompt_file = 3\n", "roles.builder.prompt_file", "expected a string"),
        ('roles = "all"\n', "roles", "expected a table of roles"),
        ('[roles]\nbuilder = "x"\n', "roles.builder", "expected a table"),
        ('[telegram]\nallowed_chat_ids = ["123"]\n', "telegram.allowed_chat_ids[0]", "expected an integer id"),
        ("[telegram]\nallowed_user_ids = [true]\n", "telegram.allowed_user_ids[0]", "a boolean"),
        ("[telegram]\nallowed_chat_ids = 5\n", "telegram.allowed_chat_ids", "expected an array"),
        ('[telegram]\nbase_url = "api.telegram.org"\n', "telegram.base_url", "http:// or https://"),
        ('[telegram]\nbase_url = "ftp://x/bot"\n', "telegram.base_url", "http:// or https://"),
        ('[telegram]\ntoken_env = "has space"\n', "telegram.token_env", "name of an environment variable"),
        ('database_url = "mysql://h/db"\n', "database_url", "postgresql://"),
        ('database_url = "sqlite://"\n', "database_url", "sqlite:///"),
        ('database_url = "sqlite:///:memory:"\n', "database_url", "in-memory"),
        ('database_url = "postgresql://"\n', "database_url", "no host"),
        ("database_url = 5\n", "database_url", "expected a string"),
        ("executor_id = 5\n", "executor_id", "expected a string"),
        ('workdir = ""\n', "workdir", "non-empty"),
        ("wrkdir = '.'\n", "wrkdir", "unknown key; did you mean 'workdir'?"),
        ("max_rework = 2\n", "max_rework", "did you mean 'loop.max_rework'?"),
        ('[agent]\nworkdir = "."\n', "agent.workdir", "did you mean 'workdir'? (top-level keys go above"),
        ('[agent]\n"a.b" = 1\n', 'agent."a.b"', "unknown key"),
        ('[git]\non_done = "command"\n', "git.done_command", 'required with git.on_done = "command"'),
        ('[git]\non_done = "command"\ndone_command = " "\n', "git.done_command", "required with"),
        ("[git]\ndone_command = \"gh pr create --title 'x\"\n", "git.done_command", "cannot be split"),
        ("[git]\ndone_command = \"sh -c 'gh pr create -t {title}'\"\n", "git.done_command", "run as shell code"),
        ("[git]\ndone_command = \"bash -ec 'echo {branch}'\"\n", "git.done_command", "run as shell code"),
        ("[git]\ndone_command = 5\n", "git.done_command", "expected a string"),
    ],
)
def test_bad_values(home: Path, env: dict[str, str], text: str, key: str, fragment: str) -> None:
    message = error_for(home, text, env)
    assert f": {key}: " in message, message
    assert fragment in message, message


def test_toml_syntax_error_names_file_and_line(home: Path, env: dict[str, str]) -> None:
    message = error_for(home, '[agent]\nretries = 2\ntimeout = \n', env)
    assert "line 3" in message and "invalid TOML" in message


def test_toml_duplicate_table(home: Path, env: dict[str, str]) -> None:
    message = error_for(home, "[agent]\n[agent]\n", env)
    assert "line 2" in message and "invalid TOML" in message


def test_toml_error_at_end_of_document(home: Path, env: dict[str, str]) -> None:
    message = error_for(home, "a = 1\na = 2", env)
    assert "invalid TOML" in message and "end of file" in message


def test_not_utf8(home: Path, env: dict[str, str]) -> None:
    (home / "config.toml").write_bytes(b'workdir = "\xff"\n')
    with pytest.raises(ConfigError, match="line 1: not valid UTF-8"):
        load_config(home, environ=env)


def test_missing_explicit_config(home: Path, tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(home, missing, environ=env)
    assert str(info.value) == f"{missing}: config file not found"


def test_config_is_a_directory(home: Path, tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(home, tmp_path, environ=env)


def test_error_carries_source_and_key(home: Path, env: dict[str, str]) -> None:
    path = write(home, "[agent]\nretries = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(home, environ=env)
    assert info.value.source == str(path)
    assert info.value.key == "agent.retries"


def test_file_key_checked_even_when_env_overrides(home: Path, env: dict[str, str]) -> None:
    env["IWO_DATABASE_URL"] = "postgresql://h/db"
    message = error_for(home, 'database_url = "nonsense"\n', env)
    assert ": database_url: " in message


# --------------------------------------------------------------------------- the token


def test_token_is_read_from_env_and_never_stored(home: Path, env: dict[str, str]) -> None:
    token = "123456789:AAH-secret-token-value"
    env["IWO_TELEGRAM_TOKEN"] = token
    cfg = load(home, "[telegram]\nallowed_chat_ids = [42]\n", env)
    assert cfg.telegram.token(env) == token
    assert cfg.telegram.enabled(env)
    assert token not in repr(cfg) and token not in str(cfg)
    assert all(token not in repr(getattr(cfg, f.name)) for f in dataclasses.fields(cfg))


def test_telegram_enabled_needs_token_and_chat(env: dict[str, str]) -> None:
    tg = TelegramConfig(allowed_chat_ids=(42,))
    assert not tg.enabled(env)
    assert tg.token(env) is None
    env["IWO_TELEGRAM_TOKEN"] = "  "
    assert tg.token(env) is None
    env["IWO_TELEGRAM_TOKEN"] = "1:x"
    assert tg.enabled(env)
    assert not TelegramConfig().enabled(env)  # no allowed chat


@pytest.mark.parametrize(
    "text",
    ['[telegram]\ntoken_env = "123456789:AAH-secret"\n', '[telegram]\ntoken = "123456789:AAH-secret"\n'],
)
def test_token_in_config_is_refused_without_echo(home: Path, env: dict[str, str], text: str) -> None:
    message = error_for(home, text, env)
    assert "secret" not in message and "123456789" not in message
    assert "environment variable" in message


def test_bad_url_error_hides_password(home: Path, env: dict[str, str]) -> None:
    message = error_for(home, 'database_url = "postgresq://u:hunter2@h/db"\n', env)
    assert "hunter2" not in message


def test_an_unreadable_prompt_file_is_named_with_its_key(home: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """config.unreadable_prompt_files: what `run` refuses to start with and `doctor` marks ✗."""
    from iwo_lite.config import unreadable_prompt_files

    brief = tmp_path / "brief.md"
    brief.write_text("Be brief.\n")
    (home / "config.toml").write_text(f'[roles.builder]\nprompt_file = "{brief}"\n[roles.reviewer]\n'
                                      f'prompt_file = "missing.md"\n[roles.tester]\nprompt_file = "{tmp_path}"\n')
    lines = unreadable_prompt_files(load_config(home, environ=env))
    assert [line.split(": ")[1] for line in lines] == ["roles.reviewer.prompt_file", "roles.tester.prompt_file"]
    assert all(line.startswith(str(home / "config.toml")) for line in lines)
    assert "No such file" in lines[0] and "directory" in lines[1]


def test_the_database_password_s_variables_never_reach_an_agent(home: Path, env: dict[str, str]) -> None:
    """config.database_secret_env, which the daemon removes from every agent's environment: on
    Postgres without a password in the URL, libpq reads it from $PGPASSWORD."""
    from iwo_lite.config import database_secret_env

    def names(url: str) -> tuple[str, ...]:
        return database_secret_env(load_config(home, environ=dict(env, IWO_DATABASE_URL=url)))

    assert names(f"sqlite:///{home / 'iwo.sqlite'}") == ("IWO_DATABASE_URL",)
    assert names("postgresql://iwo@db.example/iwo") == ("IWO_DATABASE_URL", "PGPASSWORD")
    assert names("postgresql://iwo:secret@db.example/iwo") == ("IWO_DATABASE_URL",)  # the URL's own, already unset
