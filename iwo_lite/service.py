"""`iwo-lite service install [--print]`: run the daemon as a user service.

Owns: the command line that starts this same iwo-lite again (the zipapp, the console script,
or `python -m iwo_lite`, with absolute paths and `--home`), a systemd user unit for Linux
(`~/.config/systemd/user/iwo-lite.service`, Restart=on-failure) and a launchd agent for macOS
(`~/Library/LaunchAgents/dev.iwo-lite.plist`, KeepAlive). It writes the file (or prints it with
`--print`) and says which command enables it; it never calls systemctl or launchctl itself.
Standard library only: no DBOS import.

Agent runs are detached (their own session) so that they outlive a daemon crash and are
re-attached by the next start: the systemd unit therefore says KillMode=process (the default,
control-group, would kill the agents with the daemon) and the launchd agent AbandonProcessGroup.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import sys
import zipfile
from pathlib import Path

from iwo_lite.config import Config
from iwo_lite.errors import EXIT_OK, UserError

UNIT_NAME = "iwo-lite.service"
LAUNCHD_LABEL = "dev.iwo-lite"


def launch_command(argv0: str | None = None) -> list[str]:
    """The argv that starts the iwo-lite running now, with absolute paths.

    A shiv zipapp: the interpreter running it and the .pyz (the .pyz is tied to that Python).
    A console script (`iwo-lite` in a venv's bin/): the script itself, its shebang names its venv.
    Otherwise (`python -m iwo_lite`): this interpreter with `-m iwo_lite`.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    path = Path(os.path.abspath(argv0))  # not resolved: a symlink to the current build stays one
    if path.is_file():
        if zipfile.is_zipfile(path):
            return [sys.executable, str(path)]
        if path.suffix != ".py":
            return [str(path)]
    return [sys.executable, "-m", "iwo_lite"]


def daemon_command(config: Config, config_file: str | None = None, argv0: str | None = None) -> list[str]:
    command = launch_command(argv0) + ["--home", str(config.home)]
    if config_file:
        command += ["--config", os.path.abspath(config_file)]
    return command + ["run"]


def _systemd_word(word: str, *, exec_line: bool = True) -> str:
    """One word of ExecStart= (or, exec_line=False, of Environment=): quoted when it must be.

    Both lines split words at whitespace, unquote "..." with C escapes, and expand specifiers
    (`%` is written `%%`); only ExecStart= expands `$VAR` (a literal `$` is `$$` there) —
    in Environment= "the $ character has no special meaning" (systemd.exec(5)).
    """
    word = word.replace("%", "%%")
    if word and not any(c in word for c in ' \t\n"\'\\;$'):
        return word
    inner = word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + (inner.replace("$", "$$") if exec_line else inner) + '"'


def _systemd_path(path: Path) -> str:
    """A path for WorkingDirectory= or EnvironmentFile=: these take the rest of the line as it is
    (no quotes, no escapes: a quoted path is "not absolute" and ignored), specifiers expanded."""
    text = str(path)
    if "\n" in text or text != text.strip() or text.endswith("\\"):
        raise UserError(f"{text!r}: a systemd unit cannot name this path (a line break, a trailing "
                        "backslash or surrounding blanks); use another directory")
    return text.replace("%", "%%")


def systemd_unit(command: list[str], home: Path, workdir: Path, path_env: str) -> str:
    env_file = home / "service.env"
    env_file_text, workdir_text = _systemd_path(env_file), _systemd_path(workdir)
    return "\n".join([
        "# iwo-lite daemon as a systemd user service (written by `iwo-lite service install`).",
        f"# Secrets (e.g. IWO_TELEGRAM_TOKEN=...) go in {env_file} (mode 0600), not here.",
        "[Unit]",
        f"Description=iwo-lite daemon (home {_systemd_path(home)})",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_systemd_word(word) for word in command),
        f"WorkingDirectory={workdir_text}",
        "Restart=on-failure",
        "RestartSec=5",
        "# Agent runs are detached and re-attached after a restart: stop only the daemon itself.",
        "KillMode=process",
        "TimeoutStopSec=60",
        f"Environment={_systemd_word('PATH=' + path_env, exec_line=False)}",
        "Environment=PYTHONUNBUFFERED=1",
        f"EnvironmentFile=-{env_file_text}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def launchd_plist(command: list[str], home: Path, workdir: Path, path_env: str) -> str:
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": command,
        "WorkingDirectory": str(workdir),
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 10,
        # Agent runs are detached and re-attached after a restart: leave them running.
        "AbandonProcessGroup": True,
        "ProcessType": "Background",
        "EnvironmentVariables": {"PATH": path_env, "PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(home / "daemon.log"),
        "StandardErrorPath": str(home / "daemon.log"),
    }
    return plistlib.dumps(agent, sort_keys=False).decode()


def service_file(platform: str | None = None) -> Path:
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return Path.home() / ".config" / "systemd" / "user" / UNIT_NAME
    if platform == "darwin":
        return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    raise UserError(f"service install supports Linux (systemd) and macOS (launchd), not {platform}")


def render(config: Config, config_file: str | None = None, platform: str | None = None,
           argv0: str | None = None) -> str:
    platform = platform or sys.platform
    service_file(platform)  # rejects other platforms
    home = Path(config.home)
    command = daemon_command(config, config_file, argv0)
    render_for = systemd_unit if platform.startswith("linux") else launchd_plist
    return render_for(command, home, Path.cwd(), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"))


def install(config: Config, args: argparse.Namespace) -> int:
    text = render(config, getattr(args, "config", None))
    if args.print_only:
        sys.stdout.write(text)
        return EXIT_OK
    target = service_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    print(f"{'updated' if existed else 'wrote'} {target}")
    if sys.platform == "darwin":
        print(f"start it now and at every login:  launchctl bootstrap gui/{os.getuid()} {target}")
        print(f"stop it:                          launchctl bootout gui/{os.getuid()}/{LAUNCHD_LABEL}")
    else:
        print(f"start it now and at every login:  systemctl --user daemon-reload && "
              f"systemctl --user enable --now {UNIT_NAME}")
        print(f"keep it running after logout:     loginctl enable-linger {os.environ.get('USER', '$USER')}")
        print(f"its log:                          journalctl --user -u {UNIT_NAME}")
    return EXIT_OK
