"""The request's database deadline: past it, the answer is a 503, never a longer wait."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apikeys.api.problems import database_problem
from apikeys.storage.database import task_with_deadline

# How long past the deadline a request's own clean-up (returning its connection) may delay
# its answer. Against a database that accepts connections and never answers, that clean-up
# can wait as long again; the answer does not wait for it.
CLEANUP_SECONDS = 0.2


class DeadlineMiddleware:
    """Gives each request's handling, once its body is read, the database timeout in all,
    however many connection waits, statements and queued writes it takes; the key writer
    keeps to the same deadline (see KeyWriter). Past it the handling is cancelled and the
    request answered 503 at once, its clean-up left to finish in the background: which is
    why the handling runs in a task of its own."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False
        answered_here = False

        async def send_unless_answered(message: Message) -> None:
            nonlocal response_started
            if answered_here:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        handling = task_with_deadline(deadline, self.app(scope, receive, send_unless_answered))
        finished = loop.create_future()
        expired = False

        def wake(_: object = None) -> None:
            if not finished.done():
                finished.set_result(None)

        def expire() -> None:
            nonlocal expired
            expired = True
            handling.cancel()
            timers.append(loop.call_at(deadline + CLEANUP_SECONDS, wake))

        handling.add_done_callback(wake)
        timers = [loop.call_at(deadline, expire)]
        try:
            await finished
        except asyncio.CancelledError:
            # The server is stopping past its grace period: the caller answers for us.
            answered_here = not response_started
            handling.cancel()
            abandon(handling)
            raise
        finally:
            for timer in timers:
                timer.cancel()
        if not expired:
            error = handling.exception()
            if error is not None:
                raise error
            return
        if not handling.done():
            abandon(handling)
        if not response_started:
            answered_here = True
            await database_problem(scope, TimeoutError())(scope, receive, send)


# Tasks given up on but not yet ended: asyncio keeps only weak references to tasks.
_abandoned: set[asyncio.Future[Any]] = set()


def abandon(task: asyncio.Future[Any]) -> None:
    """Let a task end in the background, its outcome wanted by no one: a request's clean-up
    against a database that never answers, say."""
    _abandoned.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()
