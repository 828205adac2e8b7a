"""A socket's pump and receiver: whichever ends first ends the other, and nothing outlives them."""

from __future__ import annotations

import asyncio

import pytest

from server.socket_tasks import run_until_one_ends


class Side:
    """A coroutine that runs until told to stop (or to fail), and notes how it ended."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.ended = ""

    async def run(self) -> None:
        try:
            await self.stop.wait()
            if self.error is not None:
                raise self.error
            self.ended = "returned"
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise


def test_the_first_to_end_cancels_the_other_and_both_are_done() -> None:
    async def scenario() -> None:
        pump, receiver = Side(), Side()
        running = asyncio.create_task(
            run_until_one_ends({"pump": pump.run(), "recv": receiver.run()})
        )
        await asyncio.sleep(0.01)
        assert {t.get_name() for t in asyncio.all_tasks()} >= {"pump", "recv"}
        receiver.stop.set()  # the client went away
        assert await running == []
        assert (pump.ended, receiver.ended) == ("cancelled", "returned")
        assert {t.get_name() for t in asyncio.all_tasks()} & {"pump", "recv"} == set()

    asyncio.run(scenario())


def test_what_the_first_one_raised_is_returned() -> None:
    async def scenario() -> None:
        pump, receiver = Side(), Side()
        pump.error = OSError("connection reset")
        pump.stop.set()
        ended = await run_until_one_ends({"pump": pump.run(), "recv": receiver.run()})
        assert [str(e) for e in ended] == ["connection reset"]
        assert receiver.ended == "cancelled"

    asyncio.run(scenario())


def test_cancelling_the_handler_cancels_both() -> None:
    async def scenario() -> None:
        pump, receiver = Side(), Side()
        running = asyncio.create_task(
            run_until_one_ends({"pump": pump.run(), "recv": receiver.run()})
        )
        await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert (pump.ended, receiver.ended) == ("cancelled", "cancelled")

    asyncio.run(scenario())
