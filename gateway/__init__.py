"""figway."""
