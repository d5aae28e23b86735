"""Node types and artifacts against the real PostgreSQL, MariaDB and loopback servers."""
