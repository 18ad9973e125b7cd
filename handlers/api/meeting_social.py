"""``/api/v1``: comments (心得体会) and votes (投票表决) of a meeting, for members.

Thin: each endpoint finds the member behind the token and calls
:mod:`wxbackend.services.meetings.comments` or :mod:`wxbackend.services.meetings.votes`, which
hold every rule (who may read, write and vote; one ballot each; results only
once closed)::

    GET  /api/v1/meetings/{meeting_id}/comments     a page of comments
    POST /api/v1/meetings/{meeting_id}/comments     {"text": "..."}
    GET  /api/v1/meetings/{meeting_id}/votes        the meeting's votes
    GET  /api/v1/votes/{vote_id}                    one vote (results when closed)
    POST /api/v1/votes/{vote_id}/ballot             {"choices": [0]}
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from handlers.api.base import ApiHandler, api_route, endpoint
from handlers.api.schemas import Page, PageQuery, Schema
from handlers.base import OBJECT_ID
from wxbackend.services.meetings import comments, votes
from wxbackend.services.orgs import mpauth

CommentText = Annotated[str, msgspec.Meta(min_length=1, max_length=comments.MAX_TEXT,
                                          description="心得内容，1-1000字")]
Choice = Annotated[int, msgspec.Meta(ge=0, le=votes.MAX_OPTIONS - 1)]
Choices = Annotated[list[Choice], msgspec.Meta(min_length=1, max_length=votes.MAX_OPTIONS,
                                               description="所选选项的序号（从0开始）；单选时只能一个")]


class CommentRequest(Schema):
    text: CommentText


class CommentView(Schema):
    id: str
    name: str
    text: str
    at: str
    mine: bool
    hidden: bool = False
    hidden_reason: str | None = None


class BallotRequest(Schema):
    choices: Choices


class VoteView(Schema):
    id: str
    meeting_id: str
    title: str
    options: list[str]
    multiple: bool
    anonymous: bool
    status: str  # open | closed
    ballots: int
    voted: bool
    results: list[int] | None = None  # per option; null until closed
    closed_at: str | None = None


class VoteList(Schema):
    items: list[VoteView]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def comment_view(row: dict[str, Any], member: dict[str, Any]) -> CommentView:
    return CommentView(id=str(row["_id"]), name=row["name"], text=row["text"], at=row["at"].isoformat(),
                       mine=row["member_id"] == member["_id"], hidden=row["hidden"],
                       hidden_reason=row.get("hidden_reason") if row["hidden"] else None)


def vote_view(vote: dict[str, Any], voted: bool) -> VoteView:
    return VoteView(id=str(vote["_id"]), meeting_id=str(vote["meeting_id"]), title=vote["title"],
                    options=list(vote["options"]), multiple=vote["multiple"], anonymous=vote["anonymous"],
                    status=vote["status"], ballots=vote["ballots"], voted=voted,
                    results=votes.results(vote), closed_at=_iso(vote.get("closed_at")))


class CommentsHandler(ApiHandler):
    @endpoint("会议心得列表", query=PageQuery, response=Page[CommentView], bound=True, errors=(404,),
              tags=("meetings",), description="本支部、在参会范围内的党员可查看；被隐藏的心得只对作者本人显示（附原因）。")
    async def get(self, meeting_id: str, query: PageQuery) -> Page[CommentView]:
        member = await mpauth.current_member(self.ctx, self.session)
        rows, cursor = await comments.for_member(self.ctx, member, meeting_id, query.cursor, query.limit)
        return Page(items=[comment_view(r, member) for r in rows], next_cursor=cursor)

    @endpoint("发表会议心得", request=CommentRequest, response=CommentView, status=201, bound=True,
              idempotent=True, errors=(404, 422), tags=("meetings",),
              description="只有出席（含线上参会）的党员可以在会议开始后发表心得。")
    async def post(self, meeting_id: str, body: CommentRequest) -> CommentView:
        member = await mpauth.current_member(self.ctx, self.session)
        row = await comments.post(self.ctx, member, meeting_id, body.text)
        return comment_view(row, member)


class MeetingVotesHandler(ApiHandler):
    @endpoint("会议的表决事项", response=VoteList, bound=True, errors=(404,), tags=("meetings",))
    async def get(self, meeting_id: str) -> VoteList:
        member = await mpauth.current_member(self.ctx, self.session)
        found, voted = await votes.of_meeting_for_member(self.ctx, member, meeting_id)
        return VoteList(items=[vote_view(v, v["_id"] in voted) for v in found])


class VoteHandler(ApiHandler):
    @endpoint("表决详情", response=VoteView, bound=True, errors=(404,), tags=("meetings",),
              description="表决结束前不公布结果（results 为 null）。")
    async def get(self, vote_id: str) -> VoteView:
        member = await mpauth.current_member(self.ctx, self.session)
        vote, _ = await votes.visible_vote(self.ctx, member, vote_id)
        return vote_view(vote, bool(await votes.voted_in(self.ctx, member, [vote])))


class BallotHandler(ApiHandler):
    @endpoint("投票", request=BallotRequest, response=VoteView, bound=True, idempotent=True,
              errors=(404, 409), tags=("meetings",),
              description="出席会议的党员每项表决只能投一次（重复投票返回 409 already_voted）；"
              "无记名表决不保存投票人与选项的对应关系。")
    async def post(self, vote_id: str, body: BallotRequest) -> VoteView:
        member = await mpauth.current_member(self.ctx, self.session)
        return vote_view(await votes.cast(self.ctx, member, vote_id, body.choices), True)


ROUTES = [
    api_route("/api/v1/meetings/{meeting_id}/comments", CommentsHandler, meeting_id=OBJECT_ID),
    api_route("/api/v1/meetings/{meeting_id}/votes", MeetingVotesHandler, meeting_id=OBJECT_ID),
    api_route("/api/v1/votes/{vote_id}", VoteHandler, vote_id=OBJECT_ID),
    api_route("/api/v1/votes/{vote_id}/ballot", BallotHandler, vote_id=OBJECT_ID),
]
