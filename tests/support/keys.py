"""API keys for tests: made straight in the gateway's database, as `figway keys create` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from backends.store import create_database_engine
from backends.store.api_keys import ApiKeys, NewKey

__all__ = ["api_keys", "one_key_per_scope"]


@contextmanager
def api_keys(database_url: str) -> Iterator[ApiKeys]:
    """The key store of the database at ``database_url``, its engine closed afterwards."""
    engine = create_database_engine(database_url)
    try:
        yield ApiKeys(engine)
    finally:
        engine.dispose()


def one_key_per_scope(database_url: str, *scopes: str, name: str = "test") -> dict[str, NewKey]:
    """A key for each scope, holding that scope alone, by scope."""
    with api_keys(database_url) as store:
        return {
            scope: store.create(name=f"{name} {scope}", scopes=[scope], created_by="test")
            for scope in scopes
        }


def bearer(key: NewKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.token}"}


def client_from(base_url: str, address: str) -> httpx.Client:
    """A client whose requests come from ``address`` (any of 127.0.0.0/8 is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=base_url, transport=transport, timeout=30)


def check_forged_keys_run_out_of_their_address_allowance(base_url: str, good: NewKey) -> None:
    """Ten forged keys from one address: the first spends the address's whole allowance
    (a refused key costs ten requests' worth) and the rest, a good key's too, are refused
    without a lookup; another address is not concerned."""
    with client_from(base_url, "127.0.0.2") as forger:
        codes = [
            forger.get(
                "/workflow_runs/stats", headers={"Authorization": f"Bearer fgw_{i:012x}_forged"}
            ).status_code
            for i in range(10)
        ]
        assert codes == [401] + [429] * 9
        limited = forger.get("/workflow_runs/stats", headers=bearer(good))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "127.0.0.2" in limited.json()["detail"]
    with client_from(base_url, "127.0.0.3") as other:
        assert other.get("/workflow_runs/stats", headers=bearer(good)).status_code == 200
