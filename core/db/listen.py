"""LISTEN on a PostgreSQL channel for as long as the task runs, reconnecting when the connection
drops. Used by the key-revocation cache, the WatchJob broker and the workers' queue wake-up: each
passes what to do on (re)connect, on a notification and on a lost connection, and each keeps a
fallback (a TTL, a poll) for the notifications missed between a drop and the reconnect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)


async def listen_forever(dsn: str, channel: str, on_notify: Callable[[str], None], *,
                         on_connect: Callable[[], None] = lambda: None,
                         on_lost: Callable[[], None] = lambda: None, retry_seconds: float = 1.0) -> None:
    """Calls on_connect once LISTEN is in place (anything may have changed while not listening),
    on_notify(payload) per notification, on_lost() when the connection fails; retries after
    retry_seconds. Returns only by cancellation."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {channel}")
                on_connect()
                async for notice in conn.notifies():
                    on_notify(notice.payload)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - reconnect; the caller's fallback covers the gap
            log.warning("LISTEN %s lost its connection; reconnecting in %.0f s", channel, retry_seconds,
                        exc_info=True)
            on_lost()
        await asyncio.sleep(retry_seconds)
