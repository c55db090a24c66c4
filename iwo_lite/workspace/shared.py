"""The "shared" workspace kind: every dispatch runs in the workdir itself.

Nothing to make before a dispatch, commit after it, or end: the agents change the user's
directory as it is (no branch of its own; `diff` says so).
"""

from __future__ import annotations


class Shared:
    name = "shared"
    commits = False
    ends = False

    def settings(self, config, spec_row: dict) -> dict:
        return {"workspace": "shared", "repo": None, "prefix": "", "base": None, "base_branch": None}

    async def admitted(self, ctx, spec_id: str, settings: dict) -> None:
        return None

    async def prepare(self, ctx, spec_id: str, settings: dict, head: str | None) -> dict:
        return {"cwd": str(ctx.config.workdir), "start": None, "blocked": None}

    async def adopt(self, ctx, spec_id: str) -> None:
        return None

    async def commit(self, ctx, spec_id, step, role, summary, settings, start) -> dict:
        return {"commit": None, "head": start}

    async def repair(self, ctx, spec_id: str, settings: dict, head: str | None) -> dict:
        return {"head": head, "repaired": []}

    async def finish(self, ctx, spec_id: str, state: str, settings: dict, title: str) -> dict:
        return {"ok": True, "question": ""}
