"""A Python + SQLite on which DBOS cannot write its tables: `doctor` names it with the remedy, and
`run`, `demo` and the DBOS operations refuse it with one line (exit 2) before they cost anything.
On this machine's SQLite 3.40 and Python >= 3.12 that is the case once iwo-lite's unixepoch('subsec')
stand-in is left out ($IWO_SQLITE_UNIXEPOCH=off); on Python 3.11 DBOS never needs it."""

from __future__ import annotations

import sqlite3
import sys

from iwo_lite.store import sqlite_compat

PYTHON = ".".join(map(str, sys.version_info[:3]))


def test_doctor_reports_python_and_sqlite_and_commands_refuse_what_cannot_work(home):
    home.env["COLUMNS"] = "1000"
    doctor = home.cli("doctor")
    assert f"python {PYTHON}, sqlite {sqlite3.sqlite_version} (" in doctor.stdout, doctor.stdout
    spec_id = home.submit()  # submit writes only iwo_ tables: it works either way
    home.env[sqlite_compat.KNOB] = "off"
    doctor = home.cli("doctor")
    if sys.version_info < (3, 12) or sqlite3.sqlite_version_info >= (3, 42):
        assert f"python {PYTHON}, sqlite {sqlite3.sqlite_version} (" in doctor.stdout
        assert "✗ Python" not in doctor.stdout
        return
    assert doctor.returncode == 1
    assert (f"✗ Python {PYTHON} with SQLite {sqlite3.sqlite_version}: DBOS writes unixepoch('subsec')"
            in doctor.stdout), doctor.stdout
    assert "fix: unset IWO_SQLITE_UNIXEPOCH, use Python 3.11" in doctor.stdout
    for args in (["run"], ["demo"], ["cancel", spec_id]):
        refused = home.cli(*args, timeout=60)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "SQLite < 3.42" in lines[0] and "use Python 3.11" in lines[0]
    assert home.spec(spec_id)["state"] == "queued"  # nothing was lost
    del home.env[sqlite_compat.KNOB]
    daemon = home.start()
    home.wait_state(spec_id, "done", timeout=90)
    daemon.stop()


def test_a_build_for_another_python_is_named_in_one_line(home, tmp_path):
    """The zipapp carries compiled wheels of the Python it was built with: run by another Python
    every command says so in one line (exit 2), instead of an ImportError at the first DBOS call.
    Here a greenlet compiled for "Python 3.99" stands first on the path, as a 3.12 build's is under 3.11."""
    fake = tmp_path / "other-python" / "greenlet"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "_greenlet.cpython-399-x86_64-linux-gnu.so").write_bytes(b"")
    home.env["PYTHONPATH"] = str(fake.parent)
    for args in (["run"], ["status"], ["doctor"]):
        refused = home.cli(*args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "built for Python 3.99" in lines[0] and f"run with Python {sys.version_info[0]}.{sys.version_info[1]}" in lines[0]
        assert "bash build/shiv.sh" in lines[0]
    del home.env["PYTHONPATH"]
    assert home.cli("status").returncode == 0
