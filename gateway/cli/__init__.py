"""The ``figway`` command, one module per command group; commands call the services and
hold no logic of their own. ``main`` is the entry point, ``support`` what every
command shares (settings, errors as messages, logging).
"""
