"""Fixtures for the distributed-mode tests (real PostgreSQL, Redis and processes)."""
