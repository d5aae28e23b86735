"""Python node callables for test_secrets: nodes that do everything wrong with a secret.

Each reveals ``secret:leak-test`` and then prints it, logs it, returns it or
raises with it, as careless node code (or a driver quoting its connection
string) would. The runtime must mask the value in everything it records.
"""

from __future__ import annotations

import base64
import logging
import sys
import time
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from backends.nodes import NodeContext

SECRET = "secret:leak-test"


def here(function_name: str) -> str:
    """The ``module:function`` reference of a function in this file."""
    return f"{__name__}:{function_name}"


def leak(context: NodeContext) -> dict[str, Any]:
    """Puts the value on stdout, stderr, the node logger, a library logger and the output."""
    value = context.reveal(SECRET)
    print(f"stdout: {value}")
    print(f"stdout without a newline: {value}", end="")
    sys.stderr.write(f"stderr: {value}\n")
    context.logger.info("node logger: %s", value)
    logging.getLogger("some.driver").warning("driver logger: %s", value)
    return {
        "value": value,
        value: "as a key",
        "nested": [f"postgresql://etl:{value}@db/sales", {"again": value}],
        "count": 3,
    }


def leak_and_fail(context: NodeContext) -> None:
    """Logs the value, then fails with an error that quotes it."""
    value = context.reveal(SECRET)
    print(f"connecting with {value}")
    raise RuntimeError(f"connection to postgresql://etl:{value}@db/sales failed")


def leak_password(context: NodeContext) -> dict[str, str]:
    """The secret is a URL: a driver quotes its password alone, percent-decoded or not."""
    url = context.reveal(SECRET)
    password = urlsplit(url).password or ""
    print(f"password as written: {password}")
    print(f"password decoded: {unquote(password)}")
    return {"password": unquote(password)}


def leak_across_a_heartbeat(context: NodeContext) -> None:
    """Prints the value in two writes, the line ending long after the first half."""
    value = context.reveal(SECRET)
    half = len(value) // 2
    sys.stdout.write(f"token {value[:half]}")
    time.sleep(0.5)  # several heartbeats flush the logs meanwhile
    sys.stdout.write(f"{value[half:]} end\n")


def ask_for_a_missing_secret(context: NodeContext) -> None:
    context.reveal("secret:never_set-anywhere")
    print("unreachable")


def echo(context: NodeContext, extra: Any = None) -> dict[str, Any]:
    """Returns the value (alone and in a list) next to ``extra``, and prints it."""
    value = context.reveal(SECRET)
    print(f"value: {value}")
    return {"value": value, "listed": [f"in a list: {value}"], "extra": extra}


def quote_back(context: NodeContext, text: str) -> None:
    """Fails quoting ``text``, as a cast error quotes a value it could not convert: the
    value arrived from another node, this one never revealed anything."""
    print(f"converting {text!r}")
    raise ValueError(f"could not convert string to float: {text!r}")


def print_encoded(context: NodeContext) -> dict[str, str]:
    """Prints and returns its secret in base64, URL-encoded and hex, as an echoing API would."""
    value = context.reveal(SECRET)
    encoded = {
        "base64": base64.b64encode(f"user:{value}".encode()).decode(),
        "url": quote(value, safe=""),
        "hex": value.encode().hex(),
    }
    for form, text in encoded.items():
        print(f"{form}: {text}")
    return encoded
