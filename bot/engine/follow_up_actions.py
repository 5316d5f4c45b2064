"""What a person asks of the follow-through, from any front: escalate a run, own or close one of
its post-rollback actions. Each is a row and an incident-log entry in one transaction; the
thread and PagerDuty learn of it from the log (the follow-through watcher, the Slack notices).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.db import repo_events, repo_follow_ups, repo_runs
from bot.domain.approvals import Refusal
from bot.domain.events import EventKind
from bot.domain.follow_ups import (
    FollowUpAction,
    FollowUpItem,
    FollowUpView,
    follow_up_refusal,
)
from bot.domain.states import FINAL_RUN_STATUSES, RunStatus
from bot.domain.steps import StepName, step_number
from bot.engine.answers import Actor, Answer

if TYPE_CHECKING:
    from bot.engine.engine import Engine


def _answer(accepted: bool, message: str, run_id: str | None = None) -> Answer:
    return Answer(accepted, message, run_id=run_id)


async def escalate(engine: Engine, actor: Actor, run_id: str | None, why: str) -> Answer:
    """Mention the escalation group in the thread and page at high severity, with the run's
    state; recorded who and when. Only for an active run, only by an authorised engineer."""
    if not actor.authorised:
        return Answer.refused(Refusal.NOT_AUTHORISED)
    why = " ".join(why.split())[:500] or "escalated without a reason given"
    async with engine.sessions() as session, session.begin():
        run = await (repo_runs.get_run(session, run_id, for_update=True) if run_id
                     else repo_runs.get_active_run(session, engine.target))
        if run is None or RunStatus(run.status) is not RunStatus.ACTIVE:
            return _answer(False, "there is no active rollback to escalate")
        run_id = str(run.id)
        view_state = []
        for execution in await repo_runs.executions_for_run(session, run_id):
            view_state.append(f"{execution.step} attempt {execution.attempt}: {execution.status}")
        await repo_events.append_event(
            session, run_id, actor.user_id, actor.source, EventKind.ESCALATED,
            run.current_step, {"user_name": actor.user_name, "why": why,
                               "usergroup_id": engine.settings.escalation_usergroup_id,
                               "current_step": run.current_step,
                               "current_step_number": step_number_of(run.current_step),
                               "state": view_state, **actor.proof()},
        )
    engine.changed(run_id)
    group = engine.settings.escalation_usergroup_id
    return _answer(True, "escalated: " + ("the escalation group is mentioned in the thread"
                                          if group else "no ESCALATION_USERGROUP_ID is set, so "
                                          "nobody is mentioned") + "; a high-severity page "
                   "goes out if paging is on", run_id)


def step_number_of(step: str | None) -> int | None:
    return step_number(StepName(step)) if step else None


async def act_on_follow_up(
    engine: Engine, actor: Actor, run_id: str, item: FollowUpItem, action: FollowUpAction
) -> Answer:
    """Own an item ("I'll own it") or close it ("Done"), for any authorised engineer."""
    async with engine.sessions() as session, session.begin():
        run = await repo_runs.get_run(session, run_id)
        if run is None:
            return _answer(False, "no such rollback")
        finished = RunStatus(run.status) in FINAL_RUN_STATUSES
        current = await repo_follow_ups.lock_follow_up(session, run_id, item) if finished \
            else None
        why = follow_up_refusal(action, authorised=actor.authorised, run_finished=finished,
                                current=current or FollowUpView(item), user_id=actor.user_id)
        if why is not None:
            return _answer(False, why, run_id)
        assert current is not None
        if action is FollowUpAction.OWN:
            await repo_follow_ups.set_owner(session, run_id, item, actor.user_id,
                                            actor.user_name)
        else:
            await repo_follow_ups.set_done(session, run_id, item, actor.user_id,
                                           actor.user_name)
        await repo_events.append_event(
            session, run_id, actor.user_id, actor.source,
            EventKind.FOLLOW_UP_OWNED if action is FollowUpAction.OWN
            else EventKind.FOLLOW_UP_DONE, None,
            {"item": item.value, "title": current.title, "user_name": actor.user_name,
             "previous_owner": current.owner_name, **actor.proof()},
        )
    engine.changed(run_id)
    verb = "you own" if action is FollowUpAction.OWN else "done:"
    return _answer(True, f"{verb} {current.number}. {current.title}", run_id)
