"""Cluster mode: several Tandem nodes sharing Redis and PostgreSQL (docs/architecture.md)."""
