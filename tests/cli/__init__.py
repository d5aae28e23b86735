"""The ``figway`` command, in this process and as a real process."""
