"""Ids clients choose (workspaces, folders, jobs, workflows, runs): printable text only.

A control character in an id cannot be shown, logged or typed back, and PostgreSQL
refuses NUL in text outright, so every id is checked at the door and refused naming
the field (422), never handed to the database.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = ["PRINTABLE_PATTERN", "PrintableId", "control_character_problem", "printable"]

#: The JSON Schema pattern of an id: no C0 control character and no DEL.
PRINTABLE_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def control_character_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an id, or None.

    >>> control_character_problem("job-1"), control_character_problem("a\\x00b")
    (None, 'control character 0x00 at position 1: an id is printable text')
    """
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"control character 0x{ord(found.group()):02x} at position {found.start()}: an id is printable text"


def printable(value: str) -> str:
    """A pydantic validator: ``value`` unchanged, or ValueError naming the character."""
    problem = control_character_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: An id of 1 to 128 printable characters, documented with its pattern.
PrintableId = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra={"pattern": PRINTABLE_PATTERN}),
    AfterValidator(printable),
]
