"""Paging on-call: the PagerDuty Events API v2 adapter (I/O). What to page is decided in the core
(`bot/domain/paging_policy.py`) and when, by the engine's follow-through watcher."""
