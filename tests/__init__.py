"""figway's tests; every folder is a package imported by its full name (``tests.support``)."""
