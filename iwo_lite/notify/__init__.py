"""Notifiers: where the daemon tells a human about a gate, and hears the answer back.

A notifier is small (see `Notifier`): it starts and stops with the daemon, sends a gate's
question (or a reminder) and returns references to the messages it sent (text: the loop
records them in the step's output and in iwo_messages, so a reply maps to its gate after a
restart), marks a gate's messages answered, and names the environment variables that hold
its secrets (the agents never see them). Answers come back through `gates.Gates.answer`, the
same path as the shell's. Telegram (notify/telegram.py) is the first implementation.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Protocol

from iwo_lite.config import Config

log = logging.getLogger("iwo_lite")
AnswerFn = Callable[[str, str, str, str, str], Awaitable["str | None"]]  # gate, answer, note, by, via


class Notifier(Protocol):
    name: str

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_gate(self, gate: dict, kind: str) -> list[str]:
        """Send the gate's question (kind "question") or a reminder; the references sent."""

    async def mark_answered(self, gate: dict) -> None:
        """Edit the gate's messages to say how it was answered (gate holds answer, by, via, note)."""


def secret_env_names(config: Config) -> tuple[str, ...]:
    """Variables holding notifier secrets: removed from every agent's environment."""
    return (config.telegram.token_env,)


def from_config(config: Config, store, answer: AnswerFn) -> list[Notifier]:
    """The notifiers this config turns on (Telegram: a token and at least one allowed chat)."""
    notifiers: list[Notifier] = []
    token = config.telegram.token()
    if token and config.telegram.allowed_chat_ids:
        from iwo_lite.notify.telegram import TelegramNotifier, install_redaction

        install_redaction(token)
        notifiers.append(TelegramNotifier(config, token, store, answer))
    elif token or config.telegram.allowed_chat_ids:
        log.warning("telegram: needs both $%s and telegram.allowed_chat_ids; the bot is off", config.telegram.token_env)
    return notifiers
