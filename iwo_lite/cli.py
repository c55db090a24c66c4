"""The command line: parse arguments, load the config once, call one module, map errors to exit codes.

Exit codes: 0 success; 1 a failure while working; 2 a usage, config or input error (one line
naming the file, key or id at fault; `--debug` adds the traceback). Modules that import DBOS
are imported inside the commands that need them, so `status` and `--help` stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import sys
from pathlib import Path

from iwo_lite import __version__, output
from iwo_lite.config import Config, ConfigError, load_config, resolve_home
from iwo_lite.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UserError, first_line


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (exit 2) like every other input error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def spec_id_arg(text: str) -> str:
    """A spec ID on the command line: never empty (an empty ID is a mistake in a script, not "all")."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a spec ID, got {text!r}")
    return text


def nonempty_arg(text: str) -> str:
    """A path on the command line (--config, submit's FILE): never empty (Path("") is ".")."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return text


def _common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    default = None if defaults else argparse.SUPPRESS
    parser.add_argument("--home", metavar="DIR", default=default,
                        help="the iwo-lite home (default: $IWO_HOME, else ~/.iwo-lite)")
    parser.add_argument("--config", metavar="FILE", default=default, type=nonempty_arg,
                        help="config file (default: <home>/config.toml; missing = defaults)")
    parser.add_argument("--debug", action="store_true", default=False if defaults else argparse.SUPPRESS,
                        help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="iwo-lite",
        description="A durable loop of six coding agents (planner, builder, reviewer, tester, deployer, docs) "
        "on DBOS and one SQLite file.",
    )
    parser.add_argument("--version", action="version", version=f"iwo-lite {__version__}")
    _common(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = Parser(add_help=False)
    _common(common, defaults=False)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common])

    command("run", "the daemon: recover unfinished specs, work the queue; stop with Ctrl-C / SIGTERM")
    submit = command("submit", "queue a spec file (- reads it from standard input); prints its id (last line)")
    submit.add_argument("file", type=nonempty_arg)  # a str: Path("./-") would be "-"
    submit.add_argument("--id", dest="spec_id", help="the spec id (default: <file-stem>-<content hash>)")
    status = command("status", "specs, or one spec's trace, from the database (read-only)")
    status.add_argument("spec_id", nargs="?", metavar="ID", type=spec_id_arg)
    status.add_argument("--all", action="store_true", help="every spec, not only the 50 most recent")
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    status.add_argument("--sql", metavar="QUERY", help="run a read-only SQL query and print its rows")
    status.add_argument("--watch", action="store_true", help="redraw live until Ctrl-C")
    for name, help_text in (("approve", "approve the gate a spec is waiting on"),
                            ("reject", "reject the gate a spec is waiting on (the spec ends rejected)")):
        answer = command(name, help_text)
        answer.add_argument("spec_id", metavar="ID", type=spec_id_arg)
        answer.add_argument("-m", dest="note", default="", metavar="NOTE", help="a note recorded with the answer")
    revise = command("revise", "send a waiting spec back to the builder with instructions")
    revise.add_argument("spec_id", metavar="ID", type=spec_id_arg)
    revise.add_argument("-m", dest="note", required=True, metavar="TEXT", help="instructions for the builder")
    for name, help_text in (("cancel", "cancel a spec's workflow"), ("resume", "resume a cancelled or failed spec")):
        command(name, help_text).add_argument("spec_id", metavar="ID", type=spec_id_arg)
    fork = command("fork", "re-run a spec from a role's most recent step, as a new spec")
    fork.add_argument("spec_id", metavar="ID", type=spec_id_arg)
    fork.add_argument("--from", dest="from_role", required=True, metavar="ROLE")
    diff = command("diff", "the spec's change: its branch against where it started, or one dispatch's commit")
    diff.add_argument("spec_id", metavar="ID", type=spec_id_arg)
    diff.add_argument("--dispatch", type=int, metavar="NN", help="only the commit of dispatch NN")
    diff.add_argument("--stat", action="store_true", help="files changed, not the lines")
    logs = command("logs", "the running (or last) agent's tool calls, one a line")
    logs.add_argument("spec_id", metavar="ID", type=spec_id_arg)
    logs.add_argument("--follow", "-f", action="store_true", help="print new ones as they come, until it ends")
    web = command("web", "serve the dashboard (the first line printed is the URL to open, with its token)")
    web.add_argument("--port", type=int, metavar="N", help="the port (default [web] port, 8765; 0 = a free one)")
    web.add_argument("--host", metavar="H", help="the address to listen on (default [web] host, 127.0.0.1)")
    clean = command("clean", "remove the worktrees of finished specs (and with --branches their iwo/<id> branches)")
    clean.add_argument("spec_ids", nargs="*", metavar="ID", type=spec_id_arg,
                       help="only these specs (default: every finished spec)")
    clean.add_argument("--branches", action="store_true", help="also delete the specs' branches iwo/<id>")
    clean.add_argument("--force", action="store_true",
                       help="with --branches: also delete branches whose work is not merged into their base branch")
    command("demo", "the whole loop on a sample spec with a built-in offline agent, in a temporary home")
    command("doctor", "check config, agent command, database, tmux and Telegram settings")
    service = command("service", "run the daemon as a user service: systemd (Linux) or launchd (macOS)")
    service.add_argument("action", choices=["install"], help="install: write the unit / plist file")
    service.add_argument("--print", dest="print_only", action="store_true",
                         help="print the file instead of writing it")
    return parser


def main(argv: list[str] | None = None) -> int:
    output.install()  # nothing printed can drive the terminal (output.py), a usage error's echo included
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.debug)
    try:
        _check_compiled_modules()
        return _dispatch(args) or EXIT_OK
    except BrokenPipeError:  # `iwo-lite status --all | head -1`: the reader has what it wanted
        output.quiet_broken_pipe()
        return EXIT_OK
    except (UserError, ConfigError) as error:
        if args.debug:
            raise
        print(f"iwo-lite: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a failure while working: one line, traceback only with --debug
        if args.debug:
            raise
        if _is_corrupt_database(error):  # bad input: the file at fault, exit 2
            print(f"iwo-lite: {_db_path_hint(args)}: {first_line(error)} (restore it from a backup: see README)",
                  file=sys.stderr)
            return EXIT_USAGE
        if _is_unreachable_postgres(error):  # the server is down, or the URL is wrong
            print(f"iwo-lite: database_url: cannot reach the Postgres server: {first_line(error)}", file=sys.stderr)
            return EXIT_USAGE
        print(f"iwo-lite: {args.command} failed: {type(error).__name__}: {first_line(error)} (--debug shows more)",
              file=sys.stderr)
        return EXIT_FAILURE


def _check_compiled_modules() -> None:
    """A zipapp built for another Python minor version (its compiled wheels do not load here): one line
    naming both, instead of an ImportError from deep inside SQLAlchemy at the first DBOS call. Reads
    greenlet's directory without importing it (<1 ms; status stays fast)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("greenlet")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(next(iter(spec.submodule_search_locations)))
    tags = {m.group(1): p.name for p in folder.glob("_greenlet.*")
            if (m := re.search(r"\.(cpython-\d+)", p.name))}
    if not tags or sys.implementation.cache_tag in tags:
        return
    tag, name = sorted(tags.items())[0]
    for_python = f"Python 3.{tag.removeprefix('cpython-3')}"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    where = sys.argv[0] if sys.argv and sys.argv[0].endswith(".pyz") else folder.parent
    raise UserError(f"{where}: built for {for_python} (compiled modules such as {name}), "
                    f"run with Python {here}: run it with the Python it was built with, or build it again with "
                    f"this one (PYTHON=python{here} bash build/shiv.sh)")


def _is_corrupt_database(error: BaseException) -> bool:
    """SQLite's (or SQLAlchemy's wrapping of) "file is not a database" / "malformed"."""
    text = str(error)
    kind = type(error)
    is_db_error = kind.__name__ == "DatabaseError" or any(k.__name__ == "DatabaseError" for k in kind.__mro__)
    return is_db_error and ("file is not a database" in text or "disk image is malformed" in text)


def _is_unreachable_postgres(error: BaseException) -> bool:
    """psycopg's (or SQLAlchemy's wrapping of) "connection failed": never a traceback."""
    while error is not None:
        kind = type(error)
        if kind.__name__ == "OperationalError" and ("connection" in str(error) or "connect" in str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _db_path_hint(args: argparse.Namespace) -> str:
    try:
        return str(resolve_home(args.home) / "iwo.sqlite")
    except Exception:
        return "the database"


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "dbos", "sqlalchemy", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    home = resolve_home(args.home)
    if home.exists() and not home.is_dir():
        raise UserError(f"{home}: the home is not a directory (--home, $IWO_HOME)")
    return load_config(home, Path(args.config) if args.config else None)


@contextlib.contextmanager
def heavy_imports():
    """Around the import of DBOS (and SQLAlchemy): the cyclic garbage collector off while its ~200k
    objects are made (it scans them over and over: ~7% of the import), then those objects frozen
    out of every later collection (a long-running daemon's collections skip them)."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _dispatch(args: argparse.Namespace) -> int | None:
    if args.command == "demo":
        from iwo_lite.demo import run_demo

        return run_demo()
    config = _config(args)
    if args.command == "run":
        import asyncio

        with heavy_imports():
            from iwo_lite.daemon import serve

        companions = []
        if config.web.enabled:  # the dashboard in the daemon's own loop: one process is enough
            from iwo_lite.web.server import companion

            companions.append(companion)
        asyncio.run(serve(config, companions=companions))
        return EXIT_OK
    if args.command == "web":
        import asyncio

        from iwo_lite.config_checks import Bad, host as check_host, int_at_least
        from iwo_lite.web.server import serve as serve_web

        checked = {}
        for flag, value, check in (("port", args.port, int_at_least(0, 65535)), ("host", args.host, check_host)):
            try:
                checked[flag] = check(value) if value is not None else None
            except Bad as error:
                raise UserError(f"--{flag}: {error}") from None
        asyncio.run(serve_web(config, checked["host"], checked["port"]))
        return EXIT_OK
    if args.command == "submit":
        from iwo_lite.intake import load_spec, load_spec_from_stdin, submit

        if args.file == "-":  # a file named "-": ./-
            spec = load_spec_from_stdin(sys.stdin.buffer, args.spec_id)
        else:
            spec = load_spec(Path(args.file), args.spec_id)
        if not submit(config, spec):
            print(f"iwo-lite: spec {spec.id} already exists; nothing new started", file=sys.stderr)
        print(spec.id)
        return EXIT_OK
    if args.command in ("diff", "logs"):
        from iwo_lite import views

        return getattr(views, args.command)(config, args)
    if args.command == "status":
        from iwo_lite.status import show

        from iwo_lite.home import Home

        tools = None
        if args.spec_id:  # each attempt's tool calls, read from its output by its agent kind
            from functools import partial

            from iwo_lite import views

            tools = partial(views.tool_counts, config)
        show(config.database_url, spec_id=args.spec_id, show_all=args.all, as_json=args.json, sql=args.sql,
             watch=args.watch, lock_path=Home(config.home).lock, tools=tools)
        return EXIT_OK
    if args.command in ("approve", "reject", "revise"):
        from iwo_lite.gates import answer_from_shell

        gate = answer_from_shell(config, args.spec_id, args.command, args.note)
        print(f"{args.command}: gate {gate} of spec {args.spec_id}")
        return EXIT_OK
    if args.command in ("cancel", "resume", "fork", "clean"):
        from iwo_lite import operations

        if args.command != "clean":  # the three that reach the spec's DBOS workflow
            with heavy_imports():
                importlib.import_module("iwo_lite.durable")  # operations imports it again, at no cost

        return getattr(operations, args.command)(config, args)
    if args.command == "doctor":
        from iwo_lite.doctor import run_doctor

        return run_doctor(config)
    if args.command == "service":
        from iwo_lite.service import install

        return install(config, args)
    raise UserError(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it first
