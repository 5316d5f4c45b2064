"""A short stable digest of a plan, so an approval is bound to exactly what the approver saw."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def plan_fingerprint(facts: Mapping[str, Any]) -> str:
    canonical = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
