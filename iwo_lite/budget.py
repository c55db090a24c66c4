"""Spending caps: `budget.per_spec_usd` (each spec; raised by a human's yes) and `budget.daily_usd`
(all specs, per UTC day).

Owns the check made before each dispatch: a spec whose spend reached its cap (spent >= cap),
or the day's, must not start another agent without a human's yes; the question says what was
spent on what. Also what a call may still spend (Claude Code's `--max-budget-usd`: the CLI
checks it between turns, so one call overshoots by at most its last turn).
"""

from __future__ import annotations

import datetime as _dt

from iwo_lite.config import Config
from iwo_lite.store import runs as run_rows
from iwo_lite.store import specs as spec_rows
from iwo_lite.store import Op

MIN_CALL_USD = 0.01  # the CLI refuses --max-budget-usd 0


def utc_day(epoch: float) -> tuple[str, str]:
    """(YYYY-MM-DD, the day's start as stored timestamps: YYYY-MM-DDT00:00:00.000Z) in UTC."""
    day = _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%d")
    return day, f"{day}T00:00:00.000Z"


def check(config: Config, spec_id: str, now: float) -> Op:
    """{"over": None | "spec" | "daily", "question": str, "left_usd": float | None, "spent_usd", "cap_usd"}."""
    row = yield from spec_rows.base(spec_id)
    by_role, spent = yield from run_rows.spent(spec_id)
    lefts = []
    cap = row["budget_usd"] if row else None
    if cap:
        if run_rows.reached(spent, cap):
            parts = ", ".join(f"{role} ${usd:.2f}" for role, usd in sorted(by_role.items(), key=lambda kv: -kv[1]))
            more = (f"by budget.per_spec_usd (${config.budget.per_spec_usd:.2f})" if config.budget.per_spec_usd
                    else f"to ${2 * cap:.2f} (budget.per_spec_usd is 0 now)")
            return {"over": "spec", "spent_usd": spent, "cap_usd": cap, "left_usd": None,
                    "question": f"This spec spent ${spent:.2f} of its ${cap:.2f} cap ({parts}). Approve to raise "
                                f"its cap {more} and go on, or reject to end it."}
        lefts.append(cap - spent)
    daily = config.budget.daily_usd
    day, day_start = utc_day(now)
    if daily and (row or {}).get("budget_day") != day:
        by_spec, today = yield from run_rows.spent_since(day_start)
        if run_rows.reached(today, daily):
            parts = ", ".join(f"{sid} ${usd:.2f}" for sid, usd in list(by_spec.items())[:5])
            return {"over": "daily", "spent_usd": today, "cap_usd": daily, "left_usd": None,
                    "question": f"Today (UTC) all specs spent ${today:.2f} of budget.daily_usd ${daily:.2f} "
                                f"({parts}). Approve to let this spec go on today, or reject to end it."}
        lefts.append(daily - today)
    return {"over": None, "question": "", "spent_usd": spent, "cap_usd": cap,
            "left_usd": max(MIN_CALL_USD, min(lefts)) if lefts else None}


def approved(config: Config, spec_id: str, over: str, now: float, cap_usd: float | None = None) -> Op:
    """A human said yes to going past a cap: raise the spec's cap by per_spec_usd, or let it go on
    today. `cap_usd` is the cap the gate showed: a re-run step (DBOS runs a step again when the
    daemon died before recording it) finds the cap already raised and raises it no further."""
    if over == "spec":
        row = yield from spec_rows.base(spec_id)
        cap = (row or {}).get("budget_usd")
        if cap_usd is None or cap is None or cap <= cap_usd + run_rows.REACHED_USD:
            yield from spec_rows.budget_raised(spec_id, config.budget.per_spec_usd or cap or 0.0)
    else:
        yield from spec_rows.budget_day_allowed(spec_id, utc_day(now)[0])
