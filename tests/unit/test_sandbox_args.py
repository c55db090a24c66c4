"""iwo_lite/sandbox.py: the bwrap command line for an attempt, built from files alone (no process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iwo_lite import sandbox
from iwo_lite.config_checks import Bad, path_list


def _layout(tmp: Path) -> sandbox.Confinement:
    """A repository with a worktree of spec s1 (the files git keeps, written by hand), a home, a HOME."""
    common = tmp / "repo" / ".git"
    admin = common / "worktrees" / "s1"
    admin.mkdir(parents=True)
    (admin / "commondir").write_text("../..\n")
    (common / "objects").mkdir()
    (admin / "HEAD").write_text("ref: refs/heads/iwo/s1\n")
    for name in ("s1", "other"):
        for base in (common / "refs" / "heads" / "iwo", common / "logs" / "refs" / "heads" / "iwo"):
            base.mkdir(parents=True, exist_ok=True)
            (base / name).write_text("0" * 40 + "\n")
    (common / "refs" / "heads" / "main").write_text("0" * 40 + "\n")
    home = tmp / "home"
    worktree = home / "worktrees" / "s1"
    worktree.mkdir(parents=True)
    (worktree / ".git").write_text(f"gitdir: {admin}\n")
    run = home / "runs" / "s1" / "02-builder" / "attempt-1"
    run.mkdir(parents=True)
    user = tmp / "user"
    (user / ".ssh").mkdir(parents=True)
    (user / ".netrc").write_text("secret")
    (user / "keys").mkdir()
    (user / ".aws").symlink_to(user / "keys")
    runtime = tmp / "runtime"
    runtime.mkdir()
    env = {"HOME": str(user), "TMPDIR": str(tmp / "elsewhere"), "SSH_AUTH_SOCK": str(runtime / "ssh" / "agent.1"),
           "XDG_RUNTIME_DIR": str(runtime)}
    return sandbox.Confinement(cwd=worktree, run_dir=run, home=home, handoff_dir=None,
                               state=(str(user / ".claude"), str(user / ".claude.json")), hide=("~/.ssh/inner",),
                               db_path=home / "iwo.sqlite", empty_file=sandbox.empty_file(home), env=env)


def _pairs(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == option]


def test_only_the_worktree_its_branch_and_what_git_needs_are_writable(tmp_path):
    c = _layout(tmp_path)
    c = sandbox.Confinement(**{**c.__dict__, "branch": sandbox.prepare_branch(c.cwd, c.run_dir)})
    args = sandbox.Sandbox("/usr/bin/bwrap").args(c)
    common = tmp_path / "repo" / ".git"
    binds = set(_pairs(args, "--bind"))
    assert {str(c.cwd), str(c.run_dir), str(common / "worktrees" / "s1"), str(common / "objects"),
            str(tmp_path / "user" / ".claude"), str(tmp_path / "user" / ".claude.json")} <= binds
    assert (tmp_path / "user" / ".claude.json").read_text() == "{}\n"  # made for the bind; "" is "corrupted"
    assert not {str(common), str(common / "refs"), str(common / "refs" / "heads")} & binds
    # the branch's ref and reflog directories are the run's private copies, holding only its own ref
    assert c.branch == {"common": str(common), "ref": "refs/heads/iwo/s1", "start": "0" * 40,
                        "refs": str(c.run_dir / "git-refs"), "logs": str(c.run_dir / "git-logs")}
    assert os.listdir(c.run_dir / "git-refs") == ["s1"] and os.listdir(c.run_dir / "git-logs") == []
    at = args.index(str(c.run_dir / "git-refs"))
    assert args[at - 1: at + 2] == ["--bind", str(c.run_dir / "git-refs"), str(common / "refs" / "heads" / "iwo")]
    at = args.index(str(c.run_dir / "git-logs"))
    assert args[at + 1] == str(common / "logs" / "refs" / "heads" / "iwo")
    # the home: hidden, then this attempt's run directory and worktree back, then read-only
    at = args.index("--tmpfs", args.index(str(tmp_path / "user" / ".claude.json")))
    assert args[at + 1] == str(c.home)
    after = args[at:]
    assert str(c.run_dir) in after and str(c.cwd) in after
    assert after.index("--remount-ro") > after.index(str(c.run_dir))
    assert args[:4] == ["/usr/bin/bwrap", "--die-with-parent", "--unshare-pid", "--new-session"]
    assert args[-5:] == ["--setenv", "IS_SANDBOX", "1", "--chdir", str(c.cwd)]


def test_a_packed_branch_is_read_from_packed_refs(tmp_path):
    c = _layout(tmp_path)
    common = tmp_path / "repo" / ".git"
    (common / "refs" / "heads" / "iwo" / "s1").unlink()
    (common / "packed-refs").write_text("# pack-refs with: peeled fully-peeled sorted\n"
                                        + "1" * 40 + " refs/heads/iwo/s1\n" + "2" * 40 + " refs/heads/main\n")
    assert sandbox.ref_value(str(common), "refs/heads/iwo/s1") == "1" * 40
    assert sandbox.prepare_branch(c.cwd, c.run_dir)["start"] == "1" * 40
    assert (c.run_dir / "git-refs" / "s1").read_text() == "1" * 40 + "\n"


def test_credentials_and_key_agents_are_hidden(tmp_path):
    c = _layout(tmp_path)
    args = sandbox.Sandbox("bwrap").args(c)
    user = tmp_path / "user"
    tmpfs = _pairs(args, "--tmpfs")
    assert str(user / ".ssh") in tmpfs and str(user / "keys") in tmpfs  # ~/.aws -> keys: the target is hidden
    assert str(user / ".ssh" / "inner") not in tmpfs  # inside a hidden one already
    assert str(tmp_path / "runtime") in tmpfs  # $XDG_RUNTIME_DIR (agent sockets)
    assert [str(user / ".netrc")] == [args[i + 2] for i, a in enumerate(args)
                                      if a == "--ro-bind" and args[i + 1] == str(c.empty_file)]
    assert _pairs(args, "--unsetenv") == ["SSH_AUTH_SOCK"]
    assert ["--setenv", "TMPDIR", "/tmp"] == args[args.index("TMPDIR") - 1: args.index("TMPDIR") + 2]


def test_choose_says_why_without_bubblewrap(tmp_path):
    auto = sandbox.choose("auto", path=str(tmp_path))
    assert not auto.on and not auto.error and "apt-get install bubblewrap" in auto.why
    required = sandbox.choose("bwrap", path=str(tmp_path))
    assert required.error and 'agent.sandbox = "bwrap"' in required.why
    assert not sandbox.choose("off").on


def test_sandbox_paths_are_absolute_or_home_relative():
    assert path_list(["~/.cache/pip", "/srv/data/"]) == ("~/.cache/pip", "/srv/data")
    with pytest.raises(Bad):
        path_list(["relative/path"])
    with pytest.raises(Bad):
        path_list("~/.cache")


def test_a_python_agents_imports_under_tmp_stay_visible(tmp_path):
    """A zipapp extracted under /tmp puts its packages on $PYTHONPATH, a venv under /tmp holds the
    interpreter's site-packages: both stay visible (read-only) in the sandbox's private /tmp."""
    import sys

    from iwo_lite.sandbox import visible_paths

    site = tmp_path / "shiv" / "site-packages"
    site.mkdir(parents=True)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = venv / "bin" / "python"
    python.symlink_to(sys.executable)
    seen = visible_paths([str(python), "-c", "pass"], {"PYTHONPATH": f"{site}:relative/path", "PATH": ""})
    assert str(site) in seen and str(venv) in seen and "relative/path" not in seen


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_what_an_agent_program_needs_under_tmp_stays_visible(tmp_path):
    """The class, one case per way a program reaches its files: an npm package (its node_modules,
    through the .bin link), the interpreter of its `#!` line (a prefix above bin/), a virtual
    environment's base installation, its `.pth` paths (absolute and relative), the packages its
    setuptools editable finders map (the way `pip install -e` of a checkout under /tmp works), and
    iwo-lite's own package, which the built-in and demo agents import."""
    from iwo_lite.sandbox import visible_paths

    modules = tmp_path / "npm" / "node_modules"
    target = _script(modules / "tool" / "bin" / "tool.js", "#!/usr/bin/env -S fakenode --flag\n")
    (modules / ".bin").mkdir()
    (modules / ".bin" / "tool").symlink_to(target)
    node_prefix = tmp_path / "node"
    _script(node_prefix / "bin" / "fakenode", "#!/bin/sh\n")
    seen = visible_paths(["tool", "--x"], {"PATH": f"{modules / '.bin'}:{node_prefix / 'bin'}"})
    assert str(modules) in seen and str(node_prefix) in seen and str(node_prefix / "bin" / "fakenode") in seen

    base, venv = tmp_path / "base", tmp_path / "venv"
    _script(base / "bin" / "python3", "")
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(base / "bin" / "python3")
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\ninclude-system-site-packages = false\n")
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "relative").mkdir(parents=True)
    for folder in ("absolute", "src/pkg", "src/ns"):
        (tmp_path / folder).mkdir(parents=True)
    (site / "paths.pth").write_text(f"# a comment\n{tmp_path / 'absolute'}\nrelative\nimport sys\n")
    (site / "__editable___pkg_1_0_finder.py").write_text(
        "import sys\n"
        f"MAPPING: dict[str, str] = {{'pkg': '{tmp_path / 'src' / 'pkg'}'}}\n"
        f"NAMESPACES: dict[str, list[str]] = {{'pkg.ns': ['{tmp_path / 'src' / 'ns'}']}}\n")
    seen = visible_paths([str(venv / "bin" / "python"), "-m", "pkg"], {"PATH": ""})
    for path in (venv, base, tmp_path / "absolute", site / "relative", tmp_path / "src" / "pkg", tmp_path / "src" / "ns"):
        assert str(path) in seen, path
    assert str(Path(sandbox.__file__).resolve().parent) in seen  # iwo_lite itself
    assert not any(p.startswith(str(tmp_path / "missing")) for p in seen)
