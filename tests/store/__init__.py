"""The system of record and what writes it, on SQLite and on the real PostgreSQL."""
