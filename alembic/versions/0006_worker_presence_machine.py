"""worker_presence.machine: the CPU each worker measures on

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('worker_presence', schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            'machine',
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
            nullable=False,
            server_default='{}',
        ))


def downgrade() -> None:
    with op.batch_alter_table('worker_presence', schema=None) as batch_op:
        batch_op.drop_column('machine')
