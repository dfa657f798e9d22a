"""datasets.dedup_key: the same bytes, kind and label of one tenant are one dataset, also when uploaded at once

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedup_key', sa.String(length=300), nullable=True))
    # existing rows: the earliest of each group of equal uploads gets the key; later duplicates keep NULL
    op.execute(
        "UPDATE datasets SET dedup_key = sha256 || ':' || kind || ':' || COALESCE(label, '') "
        "WHERE id IN (SELECT MIN(id) FROM datasets GROUP BY tenant_id, sha256, kind, COALESCE(label, ''))"
    )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_datasets_tenant_id_dedup_key'), ['tenant_id', 'dedup_key'])


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_datasets_tenant_id_dedup_key'), type_='unique')
        batch_op.drop_column('dedup_key')
