"""Deliveries claimed before the outside call, not inside its transaction.

A page, a thread notice or an escalation mention is claimed in a short committed transaction
(a row with an expiry, renewed while the call is in flight), sent with no transaction open, then
recorded in `event_deliveries`. `takes` counts the claims: above 1, an earlier claim lapsed
unrecorded and the delivery is examined before it is sent again.

Revision ID: 0006_delivery_claims
Revises: 0005_targets
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_delivery_claims"
down_revision: str | Sequence[str] | None = "0005_targets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_claims",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("takes", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.CheckConstraint("target IN ('pagerduty', 'slack')",
                           name=op.f("ck_delivery_claims_target")),
        sa.ForeignKeyConstraint(["event_id"], ["incident_events.id"],
                                name=op.f("fk_delivery_claims_event_id_incident_events")),
        sa.PrimaryKeyConstraint("event_id", "target", name=op.f("pk_delivery_claims")),
    )


def downgrade() -> None:
    op.drop_table("delivery_claims")
