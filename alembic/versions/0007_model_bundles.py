"""models.bundle_format and model_parts: models uploaded with their external data

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bundle_format', sa.String(length=10), nullable=True))
    op.create_table(
        'model_parts',
        sa.Column('model_id', sa.String(length=40), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=1000), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('blob_key', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['blob_key'], ['blobs.key']),
        sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('model_id', 'position'),
    )
    with op.batch_alter_table('model_parts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_parts_blob_key'), ['blob_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_parts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_parts_blob_key'))
    op.drop_table('model_parts')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('bundle_format')
