"""The SQL written SQLite's way, as psycopg gets it on Postgres (no server needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("psycopg")

from iwo_lite.store.pg import libpq_url, pg_schema_sql, translate  # noqa: E402


@pytest.mark.parametrize("sqlite, postgres", [
    ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s"),
    ("SELECT :id, :id2", "SELECT %(id)s, %(id2)s"),
    ("SELECT '?' , 'it''s ?', ?", "SELECT '?' , 'it''s ?', %s"),
    ("SELECT x::text", "SELECT x::text"),
    ("SELECT '50%' LIKE ?", "SELECT '50%%' LIKE %s"),
    ("SELECT a % 2 FROM t WHERE b = ?", "SELECT a %% 2 FROM t WHERE b = %s"),
    ('SELECT "col?" FROM t', 'SELECT "col?" FROM t'),
])
def test_parameters_and_percent_signs(sqlite, postgres):
    assert translate(sqlite) == postgres


def test_schema_types_and_urls():
    assert pg_schema_sql("a INTEGER, b REAL, c TEXT") == "a BIGINT, b DOUBLE PRECISION, c TEXT"
    assert libpq_url("postgresql+psycopg://u:p@h/d") == "postgresql://u:p@h/d"
    assert libpq_url("postgresql://u@h/d") == "postgresql://u@h/d"
