"""Step 5's canary: no email leaves until the keys it carries are known to open the api.

Before step 5 writes anything to its ledger, a sample (`VERIFY_SAMPLE_SIZE`) of the new keys it
is about to mail — drawn only from clients with a contact, and so in `KEY_MODEL=service` from
the door key's client(s) alone, the one key mailed — is tried the way step 6 tries keys
(`steps.key_probes`): each must answer 200 listing only that client's own sessions, and a
random never-issued key must be refused (401 or 403), or a 200 proves nothing. Otherwise the
step fails saying which check failed, how many of the sample, with status and error codes, and
nobody is mailed; a Retry probes again before mailing anyone. The keys are read from the
target at probe time, held in memory for the probes only, and never shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.domain.step_protocol import OutputSink, StepError
from bot.settings import Settings
from steps.directory import Directory
from steps.key_probes import probe_sample, read_sample, sessions_url

REFUSED = (401, 403)
SHOWN_FAILURES = 5


def mailed_new_hashes(recipients: Mapping[str, str], directory: Directory) -> list[str]:
    """The new hashes whose keys step 5 mails: those of recipients with a contact."""
    return sorted({new for rid, new in recipients.items() if rid in directory.contacts})


def canary_plan_line(settings: Settings, recipients: Mapping[str, str],
                     directory: Directory) -> str:
    keys = min(settings.verify_sample_size, len(mailed_new_hashes(recipients, directory)))
    return (f"before any email, a canary: GET {sessions_url(settings)} with {keys} of the new "
            f"keys to be mailed (each must answer 200 with only its own sessions) and a random "
            f"never-issued key (must be refused, 401/403); if either fails nobody is mailed")


async def canary(settings: Settings, recipients: Mapping[str, str], directory: Directory,
                 emit: OutputSink) -> dict[str, Any]:
    """The canary's facts, or StepError saying which check failed (nobody mailed yet)."""
    new_hashes = mailed_new_hashes(recipients, directory)
    if not new_hashes:
        emit("canary: no client with a contact, so no key to try (and none to mail)")
        return {"sampled": 0}
    sample, owned = await read_sample(settings, new_hashes)
    report = await probe_sample(settings, sample, owned, lambda line: emit(f"canary: {line}"))
    problems = []
    if report.failed:
        reasons = "; ".join(f"{prefix}: {why}" for prefix, why
                            in sorted(report.failed.items())[:SHOWN_FAILURES])
        problems.append(f"{len(report.failed)} of {report.sampled} sampled new keys failed "
                        f"({reasons})")
    if report.random_key.status not in REFUSED:
        problems.append(f"a random never-issued key {report.random_key.describe_status()}, "
                        f"not 401/403, so the api's 200s prove nothing about the new keys")
    if problems:
        raise StepError(f"canary failed at {sessions_url(settings)}, nobody was mailed: "
                        + "; ".join(problems) + ". Retry probes again before mailing anyone.")
    emit(f"canary passed: {report.sampled} of {len(new_hashes)} new keys tried, each let in "
         f"to only its own sessions; a random key refused ({report.random_key.status})")
    return {"sampled": report.sampled, "of": len(new_hashes),
            "random_key_status": report.random_key.status}
