"""Paging: never stops a rollback, but nobody being paged is worth a warning."""

from __future__ import annotations

from bot.domain.paging_policy import paging_status
from bot.preflight.lines import CheckLine
from bot.settings import Settings


def check_paging(settings: Settings) -> CheckLine:
    key = settings.pagerduty_routing_key
    status = paging_status(key is not None, settings.page_on, settings.pagerduty_events_url)
    group = settings.escalation_usergroup_id
    status += "; Escalate mentions " + (f"<!subteam^{group}>" if group else "nobody "
                                        "(ESCALATION_USERGROUP_ID is not set)")
    if key is None:
        return CheckLine("paging", False, status, "set PAGERDUTY_ROUTING_KEY to an Events API "
                         "v2 integration key", blocking=False)
    if len(key.get_secret_value().strip()) != 32:
        return CheckLine("paging", False, status + "; the routing key is not 32 characters, "
                         "PagerDuty will refuse every page", "copy the Integration Key of the "
                         "service's Events API v2 integration", blocking=False)
    return CheckLine("paging", True, status)
