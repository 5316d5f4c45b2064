"""Crash tests run real bot processes; the fixture that reaps them lives with the harness."""

from tests.crash.bot_process import bots

__all__ = ["bots"]
