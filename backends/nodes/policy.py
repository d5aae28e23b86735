"""What a definition may reach: the operator's policy for code, hosts and databases.

A workflow engine runs its users' code; what it adds is that a definition cannot
reach further than its operator allowed. The policy is read from the environment of
every figway process (the gateway checks a definition when it is defined, and every
worker checks it again before a node runs, for definitions stored before the policy
changed), so gateway and workers must be given the same settings:

``FIGWAY_PYTHON_CALLABLES``
    Comma-separated globs on ``module:function`` that ``python`` nodes may call.
    Default: only the demonstration callables figway ships (``backends.nodes.demo:*``).
    Modules that reach the operating system, the interpreter or figway itself
    (:data:`GUARDED_MODULES`: ``os``, ``subprocess``, ``builtins``, ``importlib``,
    ``backends``, ...) are never matched by a glob: only by their exact name
    (``builtins:print``).

``FIGWAY_HTTP_ALLOW``
    Comma-separated hosts (``api.internal``, ``*.corp.example``) and networks
    (``10.1.0.0/16``) an ``http_request`` node may reach although they are on a
    loopback, link-local, private or unique-local address, which are refused by default.

``FIGWAY_SECRETS_POLICY``
    The secrets policy file (``secrets.yaml``): which workspaces may use each secret,
    for what, and to which hosts it may be sent (see ``backends/runtime/secrets.py``).

``FIGWAY_DB_ALLOW``
    Comma-separated host globs a database node may name in a plain connection URL.
    Unset: any host on the embedded default, none in production (a configured
    ``FIGWAY_DATABASE_URL``): there, connections are ``secret:`` references only.

``FIGWAY_NODE_DEFAULT_MEMORY_MB``, ``FIGWAY_NODE_DEFAULT_CPU_SECONDS``
    The resource limits of a node attempt whose definition sets none (``limits:``);
    a worker's own, so each pool's workers can be given theirs.

``FIGWAY_NODE_MAX_MEMORY_MB``, ``FIGWAY_NODE_MAX_CPU_SECONDS``
    The most a definition's ``limits:`` may ask for (422 when it asks more); they also
    bound the defaults. See :mod:`backends.runtime.limits`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backends.runtime.secrets import SecretsPolicy

__all__ = ["DEMO_CALLABLES", "GUARDED_MODULES", "NodePolicy", "split_list"]

#: Top-level modules a glob never opens: each reaches the OS, the interpreter, the
#: network or figway's own records. Only an exact ``module:function`` allows one.
GUARDED_MODULES = frozenset(
    {
        "asyncio", "backends", "builtins", "code", "codeop", "concurrent", "ctypes",
        "duckdb", "fsspec", "ftplib", "gateway", "gc", "http", "httpx", "importlib",
        "inspect", "io", "marshal", "multiprocessing", "nt", "os", "pathlib", "pickle",
        "platform", "posix", "prefect", "psycopg", "pty", "pyarrow", "pymysql", "redis",
        "requests", "rq", "runpy", "shutil", "signal", "smtplib", "socket", "sqlalchemy",
        "subprocess", "sys", "telnetlib", "tempfile", "threading", "types", "urllib",
        "webbrowser",
    }
)  # fmt: skip

#: The callables figway ships for demonstrations; the default allows exactly these.
DEMO_CALLABLES = ("backends.nodes.demo:*",)


def split_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated setting as its items.

    >>> split_list(" a, b ,,c "), split_list(None)
    (('a', 'b', 'c'), ())
    """
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


@dataclass(frozen=True)
class NodePolicy:
    """The operator's limits on what node configs may reach (see the module docstring)."""

    python_callables: tuple[str, ...] = DEMO_CALLABLES
    http_allow: tuple[str, ...] = ()
    #: None: any host may be named in a plain connection URL (the embedded default).
    db_allow: tuple[str, ...] | None = ()
    #: Which workspaces may use each secret, for what, and where it may be sent.
    secrets: SecretsPolicy = field(default_factory=SecretsPolicy.undeclared)
    #: The operator's caps on what one node may ask for (None: the node type's own maximum):
    #: http_request's max_response_bytes, sql_transform's memory_limit_mb and threads.
    max_response_bytes: int | None = None
    memory_limit_mb: int | None = None
    threads: int | None = None
    #: The caps on a definition's ``limits:`` per node attempt (None: no cap).
    max_memory_mb: int | None = None
    max_cpu_seconds: int | None = None
    #: The limits of an attempt whose definition sets none (None: unlimited).
    default_memory_mb: int | None = None
    default_cpu_seconds: int | None = None
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        networks = []
        for item in self.http_allow:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue  # a host name, matched by name
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> NodePolicy:
        """The policy the ``FIGWAY_*`` settings of this process describe."""
        env = os.environ if environ is None else environ
        callables = split_list(env.get("FIGWAY_PYTHON_CALLABLES")) or DEMO_CALLABLES
        db_allow: tuple[str, ...] | None = split_list(env.get("FIGWAY_DB_ALLOW"))
        if not db_allow and not env.get("FIGWAY_DATABASE_URL"):
            db_allow = None  # the embedded default: a developer's own databases
        policy_file = env.get("FIGWAY_SECRETS_POLICY")
        return cls(
            python_callables=callables,
            http_allow=split_list(env.get("FIGWAY_HTTP_ALLOW")),
            db_allow=db_allow,
            secrets=SecretsPolicy.load(Path(policy_file) if policy_file else None),
            max_response_bytes=_cap(env, "FIGWAY_NODE_MAX_RESPONSE_BYTES"),
            memory_limit_mb=_cap(env, "FIGWAY_NODE_MEMORY_LIMIT_MB"),
            threads=_cap(env, "FIGWAY_NODE_THREADS"),
            max_memory_mb=_cap(env, "FIGWAY_NODE_MAX_MEMORY_MB"),
            max_cpu_seconds=_cap(env, "FIGWAY_NODE_MAX_CPU_SECONDS"),
            default_memory_mb=_cap(env, "FIGWAY_NODE_DEFAULT_MEMORY_MB"),
            default_cpu_seconds=_cap(env, "FIGWAY_NODE_DEFAULT_CPU_SECONDS"),
        )

    def capped(self, field_name: str, value: int) -> int:
        """``value``, lowered to the operator's cap on ``field_name`` (a node type's
        default may be above it; what a definition sets explicitly is refused instead)."""
        cap = getattr(self, field_name)
        return value if cap is None else min(value, cap)

    def cap_refusal(self, field_name: str, value: int) -> str | None:
        """Why ``value`` is over the operator's cap on ``field_name``, or None.

        >>> NodePolicy(threads=2).cap_refusal("threads", 4)
        'at most 2 (FIGWAY_NODE_THREADS)'
        """
        cap = getattr(self, field_name)
        if cap is None or value <= cap:
            return None
        return f"at most {cap} ({_CAP_SETTINGS[field_name]})"

    # -- python nodes ----------------------------------------------------------------

    def callable_refusal(self, reference: str) -> str | None:
        """Why a ``python`` node may not call ``reference`` (``module:function``), or None.

        >>> policy = NodePolicy(python_callables=("mypkg.*:*", "builtins:print"))
        >>> policy.callable_refusal("mypkg.etl:run") is None
        True
        >>> policy.callable_refusal("builtins:print") is None
        True
        >>> print(policy.callable_refusal("os:system"))
        callable 'os:system' is not allowed: FIGWAY_PYTHON_CALLABLES allows mypkg.*:*, builtins:print (modules such as os, subprocess and builtins only by their exact name)
        """
        module = reference.partition(":")[0]
        guarded = module.split(".")[0] in GUARDED_MODULES
        for pattern in self.python_callables:
            if pattern == reference:
                return None
            # figway's own demo callables live in a guarded package: their glob is figway's.
            if (not guarded or pattern in DEMO_CALLABLES) and fnmatch.fnmatchcase(
                reference, pattern
            ):
                return None
        return (
            f"callable {reference!r} is not allowed: FIGWAY_PYTHON_CALLABLES allows "
            f"{', '.join(self.python_callables)} (modules such as os, subprocess and builtins "
            "only by their exact name)"
        )

    # -- outbound HTTP ---------------------------------------------------------------

    def http_host_allowed(self, host: str) -> bool:
        """Whether ``host`` (a name) is opened by ``FIGWAY_HTTP_ALLOW`` by name."""
        host = host.lower().rstrip(".")
        return any(
            fnmatch.fnmatchcase(host, item.lower()) for item in self.http_allow if "/" not in item
        )

    def http_address_refusal(
        self, host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> str | None:
        """Why ``host`` at ``address`` may not be reached, or None when it may.

        >>> import ipaddress as ip
        >>> NodePolicy().http_address_refusal("x", ip.ip_address("93.184.216.34")) is None
        True
        >>> NodePolicy().http_address_refusal("metadata", ip.ip_address("169.254.169.254"))
        'a link-local address'
        >>> NodePolicy(http_allow=("10.0.0.0/8",)).http_address_refusal("x", ip.ip_address("10.1.2.3")) is None
        True
        """
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        kind = _restricted_kind(address)
        if kind is None:
            return None
        if self.http_host_allowed(host) or any(address in net for net in self._networks):
            return None
        return kind

    # -- database connections --------------------------------------------------------

    def db_host_allowed(self, host: str) -> bool:
        """Whether a plain connection URL may name ``host`` (``secret:`` ones always may)."""
        if self.db_allow is None:
            return True
        return any(fnmatch.fnmatchcase(host.lower(), item.lower()) for item in self.db_allow)

    def describe(self) -> Iterable[str]:
        """One line per part of the policy, for the start-up banner and log."""
        yield "python nodes may call: " + ", ".join(self.python_callables)
        yield (
            "outbound HTTP: public addresses"
            + (f", and {', '.join(self.http_allow)}" if self.http_allow else " only")
        )
        if self.db_allow is None:
            yield "database nodes: any host (embedded default)"
        elif self.db_allow:
            yield f"database nodes: secret: connections, and hosts {', '.join(self.db_allow)}"
        else:
            yield "database nodes: secret: connections only"
        yield self.secrets.describe()
        caps = [
            f"{name} {getattr(self, name)}"
            for name in _CAP_SETTINGS
            if getattr(self, name) is not None
        ]
        yield "node caps: " + (", ".join(caps) or "none (each node type's own maximum)")
        defaults = [
            f"{name} {getattr(self, f'default_{name}')}"
            for name in ("memory_mb", "cpu_seconds")
            if getattr(self, f"default_{name}") is not None
        ]
        yield "node attempt limits by default: " + (", ".join(defaults) or "none")


_CAP_SETTINGS = {
    "max_response_bytes": "FIGWAY_NODE_MAX_RESPONSE_BYTES",
    "memory_limit_mb": "FIGWAY_NODE_MEMORY_LIMIT_MB",
    "threads": "FIGWAY_NODE_THREADS",
    "max_memory_mb": "FIGWAY_NODE_MAX_MEMORY_MB",
    "max_cpu_seconds": "FIGWAY_NODE_MAX_CPU_SECONDS",
}


def _cap(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    return int(value) if value else None


def _restricted_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of address an outbound request may not reach by default, or None."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or address.is_reserved:
        return "a private address"
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if address in _SHARED_ADDRESS_SPACE:
        return "a private address"
    return None


_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
