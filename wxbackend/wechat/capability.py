"""What the WeChat plumbing itself runs: replies that missed the callback's 5 s."""

from __future__ import annotations

from wxbackend.capability import Capability
from wxbackend.wechat import late_reply

CAPABILITY = Capability(name="wechat", jobs=(late_reply.late_reply,))
