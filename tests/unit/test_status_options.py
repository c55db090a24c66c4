"""status.mixed_options: which mixes of `status` options are refused (pure, no database)."""

from __future__ import annotations


def test_status_refuses_every_mix_of_options_where_one_would_be_ignored():
    """All 32 mixes of `status [ID] [--all] [--json] [--sql Q] [--watch]`: refused (exit 2, one line
    naming the options) exactly when an option would otherwise be dropped silently."""
    import itertools

    from iwo_lite.status import mixed_options

    for spec_id, show_all, as_json, sql, watch in itertools.product(("s1", None), (True, False), (True, False),
                                                                     ("SELECT 1", None), (True, False)):
        ignored = (sql is not None and (spec_id or show_all or watch)) or (watch and as_json) or (spec_id and show_all)
        refused = mixed_options(spec_id=spec_id, show_all=show_all, as_json=as_json, sql=sql, watch=watch)
        assert bool(refused) == bool(ignored), (spec_id, show_all, as_json, sql, watch, refused)
        assert refused is None or ("\n" not in refused and refused.startswith("status "))
