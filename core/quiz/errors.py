"""What the quiz refuses, in words for the player."""

from __future__ import annotations

MAX_PLAYER_NAME = 120


class QuizError(ValueError):
    """A request the quiz cannot serve; ``str(exc)`` is the message for the player."""


class AlreadyAnswered(QuizError):
    """The round already has an answer (a double click, a second tab, a race)."""


def check_player_name(name: str) -> str:
    """The cleaned player name; ``QuizError`` when it cannot be used."""
    name = (name or "").strip()
    if not name:
        raise QuizError("a player name is needed")
    if len(name) > MAX_PLAYER_NAME:
        raise QuizError(f"player names are at most {MAX_PLAYER_NAME} characters")
    return name
