"""The targets one Slack front serves: each with its own engine and its own approvers.

One `rollback-bot serve` serves every configured target. A command names its target
(`/rollback-phase3 production <reason>`); a click is routed by the run its button belongs to,
read from the bot database, never from anything the click says: a button of production's run is
decided by production's engine and production's approvers, whichever target the clicker may
approve on. With one target (`default`, today's settings) nothing is named and nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.engine.engine import Engine
from bot.settings import Settings
from bot.slack.people import Engineers
from bot.targets import DEFAULT_TARGET, TargetRefused, UnknownTarget


@dataclass(frozen=True)
class ServedTarget:
    engine: Engine
    engineers: Engineers  # who may start and approve on this target (its own lists)

    @property
    def name(self) -> str:
        return self.engine.target

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    @property
    def label(self) -> str:
        """" on production" for a named target, nothing for `default`."""
        return "" if self.name == DEFAULT_TARGET else f" on {self.name}"


@dataclass(frozen=True)
class ServedTargets:
    """Every target served, in the configured order; `refused` (name → why) are configured
    but not served, so a command naming one says what is missing."""

    served: Sequence[ServedTarget]
    refused: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.served:
            raise ValueError("a Slack front serves at least one target")

    @property
    def names(self) -> tuple[str, ...]:
        return (*(t.name for t in self.served), *self.refused)

    @property
    def several(self) -> bool:
        """More than one target configured: every start and plan must name one."""
        return len(self.names) > 1

    @property
    def named(self) -> bool:
        """Targets have names (TARGETS is set): a command may start with one."""
        return self.names != (DEFAULT_TARGET,)

    @property
    def first(self) -> ServedTarget:
        return self.served[0]

    def is_target_word(self, word: str) -> bool:
        return self.named and word.strip().lower() in self.names

    def get(self, name: str | None) -> ServedTarget:
        """The target `name` (None: the only one), or an error naming the known ones or
        saying what is missing."""
        if name is None:
            if self.several:
                raise UnknownTarget(f"several targets are configured; name one of "
                                    f"{', '.join(self.names)}")
            return self.first
        key = name.strip().lower()
        if key in self.refused:
            raise TargetRefused(f"target {key} is refused: {self.refused[key]}")
        for target in self.served:
            if target.name == key:
                return target
        raise UnknownTarget(f"unknown target {name!r}; known targets: {', '.join(self.names)}")

    async def of_run(self, run_id: str) -> ServedTarget | None:
        """The target a run belongs to, as the bot database records it; None when there is
        no such run, or its target is not served here."""
        target = await self.first.engine.run_target(run_id)
        return next((t for t in self.served if t.name == target), None)
