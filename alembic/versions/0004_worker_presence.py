"""worker_presence

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('worker_presence',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('queues', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('capabilities', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_worker_presence'))
    )
    with op.batch_alter_table('worker_presence', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_worker_presence_seen_at'), ['seen_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('worker_presence', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_worker_presence_seen_at'))

    op.drop_table('worker_presence')
