"""Continuity: sequences, gaps, REST backfill and the audit."""
