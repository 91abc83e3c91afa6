"""What counts as an outage of a dependency (PostgreSQL, Redis), as opposed to a bug.

An outage is worth retrying: the client gets the typed, retryable ``unavailable`` error (HTTP 503 with
``Retry-After``; on the socket an ``error`` frame with ``retry_after_ms``) and the server logs one
warning line, not a traceback. Anything else that escapes a handler stays ``internal_error``.
"""

from __future__ import annotations

import errno

import asyncpg
from redis import exceptions as redis_errors

# How long clients are told to wait before retrying; the pool's own timeouts bound every attempt.
RETRY_AFTER_MS = 1000

# Lost or refused connections; the server shutting down, restarting or cancelling a statement that ran
# past its timeout; out of connections or resources; serialisation failures and deadlocks (retrying the
# whole transaction is the documented cure); timeouts (pool acquire, connect, command) and socket errors.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    TimeoutError,
    ConnectionError,
)

# asyncpg reports a connection that died under it, or a pool being torn down, as InterfaceError.
_INTERFACE_OUTAGES = ("connection is closed", "connection was closed", "pool is closing", "pool is closed")


_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
    }
)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means a dependency is down or overloaded, not that our code is wrong."""
    if isinstance(exc, OUTAGE_ERRORS):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc)
        return any(marker in text for marker in _INTERFACE_OUTAGES)
    if isinstance(exc, OSError):
        # A network-level failure; asyncio reports several failed addresses as one plain OSError.
        return exc.errno in _NETWORK_ERRNOS or str(exc).startswith("Multiple exceptions")
    return False
