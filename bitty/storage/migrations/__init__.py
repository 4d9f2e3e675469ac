"""Alembic migrations of bitty's schema (see docs/storage.md); ``bitty.storage.migrate`` runs them."""
