"""Notifiers: where the daemon tells a human about gates and finished specs, and hears back.

A notifier is small (see `Notifier`): it starts and stops with the daemon, sends a gate's
question (or a reminder) and returns references to the messages it sent (text: the loop
records them in the step's output and in iwo_messages, so a reply maps to its gate after a
restart), marks a gate's messages answered, tells of a spec's events (done, failed, rejected,
paused), and names the environment variables that hold its secrets (the agents never see
them). What a human asks for through a notifier goes through the daemon's `Actions`: answers
take the same path as the shell's (gates.Gates.answer), submissions and cancels the daemon's.
Telegram (notify/telegram.py) is the first implementation.
"""

from __future__ import annotations

import logging
from typing import Protocol

from iwo_lite.config import Config

log = logging.getLogger("iwo_lite")


class Actions(Protocol):
    """What a notifier may ask the daemon to do; each `by` names the human ("@alice")."""

    async def answer(self, gate_id: str, answer: str, note: str, by: str, via: str) -> "str | None":
        """Record an answer: None when recorded, else the one-line refusal (gates.Gates.answer)."""

    async def submit_text(self, text: str, filename: "str | None", by: str) -> tuple[str, bool]:
        """Submit a spec sent as a message (filename None) or a document: (spec id, created).

        The daemon validates (text.validate_spec_text) and chooses the id (intake.derive_id for a
        document, intake.text_spec_id for a message); UserError with one line on bad input."""

    async def cancel(self, spec_id: str, by: str) -> str:
        """Cancel a spec: one line saying what was done; UserError when unknown or finished."""


class Notifier(Protocol):
    name: str

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def is_ready(self) -> bool:
        """Whether messages can be handed over now (False while connecting or while the service is down)."""

    async def send_gate(self, gate: dict, kind: str) -> list[str]:
        """Send the gate's question (kind "question") or a reminder; the references sent."""

    async def mark_answered(self, gate: dict) -> None:
        """Edit the gate's messages to say how it was answered (gate holds answer, by, via, note)."""

    async def send_event(self, event: dict) -> list[str]:
        """Tell of a spec's event (kind done | failed | rejected | paused); the references sent.

        Never raises: a notifier that cannot send logs a warning and returns what it sent."""


def secret_env_names(config: Config) -> tuple[str, ...]:
    """Variables holding notifier secrets: removed from every agent's environment."""
    return (config.telegram.token_env,)


def from_config(config: Config, store, actions: Actions) -> list[Notifier]:
    """The notifiers this config turns on (Telegram: a token and at least one allowed chat)."""
    notifiers: list[Notifier] = []
    token = config.telegram.token()
    if token and config.telegram.allowed_chat_ids:
        from iwo_lite.notify.telegram import TelegramNotifier, install_redaction

        install_redaction(token)
        notifiers.append(TelegramNotifier(config, token, store, actions))
    elif token or config.telegram.allowed_chat_ids:
        log.warning("telegram: needs both $%s and telegram.allowed_chat_ids; the bot is off", config.telegram.token_env)
    return notifiers
