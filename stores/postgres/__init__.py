"""Distributed-mode adapters on PostgreSQL: event log, task store, take numbering."""
