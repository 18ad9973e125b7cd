"""Late chat replies that WeChat refused for a passing reason are tried again by a worker.

The callback sends a late reply itself, at once (the member is waiting;
:mod:`wxbackend.wechat.background`). When that send fails for a reason that
passes (-1, a timeout, a refused token), the text goes onto the job queue
and a worker tries again with backoff, for a few minutes, after which an
answer to a chat message is no longer worth sending. A full quota (45009)
or a rule error (45015: the member left the 48-hour window) is not retried::

    await retry_later(ctx, openid, "这是迟到的回复", exc)
"""

from __future__ import annotations

import logging
import time

from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.wechat.errors import AccessTokenExpired, InvalidCredential, WeChatError

log = logging.getLogger("wxbackend.wechat.late_reply")

# After this long a reply to a chat message is stale: not sent any more (seconds).
GIVE_UP_SECONDS = 600
FIRST_DELAY_SECONDS = 5.0


def _passing(exc: BaseException) -> bool:
    return isinstance(exc, WeChatError) and (
        exc.retryable or isinstance(exc, InvalidCredential | AccessTokenExpired))


async def retry_later(ctx: AppContext, openid: str, text: str, exc: BaseException) -> bool:
    """Queue another try when ``exc`` passes; True if queued. Never raises."""
    if not _passing(exc):
        return False
    try:
        await jobs.enqueue(ctx, "late_reply", openid, text, time.time(), _defer_by=FIRST_DELAY_SECONDS)
    except Exception:  # Redis down too: the reply is lost, as it was before the queue
        log.warning("late reply not queued for retry", extra={"fields": {"openid": openid}})
        return False
    return True


@jobs.job(name="late_reply", max_tries=5)
async def late_reply(ctx: AppContext, openid: str, text: str, first_at: float) -> bool:
    """One more try of a late reply; arq retries it (``Retry``) with backoff."""
    if time.time() - first_at > GIVE_UP_SECONDS:
        log.warning("late reply given up", extra={"fields": {"openid": openid}})
        return False
    from wxbackend.wechat.client import oa_client

    try:
        await oa_client(ctx).send_custom_text(openid, text)
    except WeChatError as exc:
        if _passing(exc):
            raise jobs.Retry(defer=FIRST_DELAY_SECONDS * 4) from exc
        log.warning("late reply not delivered", extra={"fields": {
            "openid": openid, "errcode": exc.errcode, "errmsg": exc.errmsg}})
        return False
    log.info("late reply sent by a worker", extra={"fields": {"openid": openid}})
    return True
