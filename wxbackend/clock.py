"""The application's one clock: what time and what day it is.

Every rule that depends on the calendar (which month's meetings are due, whether
a meeting has started, a term's end, a day's digest, when a record was made)
reads the time from ``ctx.clock``, never from ``datetime.now()`` or
``date.today()``, so that tests and rehearsals can run the application on any
date::

    ctx.clock.now()    # aware datetime in UTC
    ctx.clock.today()  # the date in Asia/Shanghai, where the party's calendar runs
    ctx.clock.month()  # "2026-12", the month in Asia/Shanghai

Production runs with no offset. The test suite starts each test's clock at
``WXB_TEST_TODAY`` (or now), and a test that cares about the date sets it::

    ctx.clock.set(datetime(2027, 3, 31, 23, 59, tzinfo=SHANGHAI))

The clock keeps running after ``set`` (it is the system clock shifted), so
timeouts and durations still behave. What deliberately stays on the wall clock
(``time.time()``): instants another party compares with its own clock, namely
WeChat signature timestamps, Redis TTLs and worker heartbeats. The driver stamps
ObjectIds with the wall clock too, so a range over ``_id`` that starts from a
calendar instant goes through :meth:`Clock.id_at`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bson import ObjectId

SHANGHAI = ZoneInfo("Asia/Shanghai")

# A bare date means this time of that day in Shanghai: mid-morning, far from
# either midnight, so a suite that runs for minutes stays on the date it asked for.
BARE_DATE_TIME = time(10, 0)


class Clock:
    """The system clock shifted by an offset (zero in production)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    @classmethod
    def starting_at(cls, instant: datetime) -> Clock:
        """A clock that reads ``instant`` now and runs on from there."""
        clock = cls()
        clock.set(instant)
        return clock

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def today(self) -> date:
        return self.now().astimezone(SHANGHAI).date()

    def month(self) -> str:
        return self.now().astimezone(SHANGHAI).strftime("%Y-%m")

    def to_system(self, instant: datetime) -> datetime:
        """The system clock's reading at ``instant`` of this clock (for Redis expiry times)."""
        return instant - self.offset

    def id_at(self, instant: datetime) -> ObjectId:
        """The lowest ObjectId the driver stamps at ``instant`` of this clock (for ``_id`` ranges)."""
        return ObjectId.from_datetime(self.to_system(instant))

    def set(self, instant: datetime) -> None:
        """Make the clock read ``instant`` (aware) now; it keeps running afterwards."""
        if instant.tzinfo is None:
            raise ValueError("Clock.set needs an aware datetime")
        self.offset = instant - datetime.now(UTC)

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


def parse_instant(text: str) -> datetime:
    """An ISO date or date-time as an aware instant; a bare date or a naive time is Shanghai's.

    ``"2027-03-31"`` is 10:00 that day in Shanghai; ``"2027-06-30T23:30+08:00"`` is
    taken as written. Raises ValueError on anything else.
    """
    text = text.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), BARE_DATE_TIME, SHANGHAI)
    instant = datetime.fromisoformat(text)
    return instant if instant.tzinfo else instant.replace(tzinfo=SHANGHAI)
