"""The scheduler's Alembic environment (a package so that installs carry it)."""
