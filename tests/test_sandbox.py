"""The sandbox speaks WeChat: its own rules over raw HTTP, and its simulated users.

The users' actions are checked against a stand-in callback written here with
wechatpy, the library our real /wechat/oa uses: it verifies ``signature`` and
``msg_signature``, decrypts, parses and answers with an encrypted reply. The
signing and encryption are also checked against WeChat's official sample.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
import xmltodict
from wechatpy import create_reply, parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from tests.wechat_fixtures import Sandbox
from wxbackend.embedded import free_port
from wxbackend.wechat.sandbox import SandboxConfig
from wxbackend.wechat.sandbox.push import Pusher, sign

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "wechat-vectors"
STABLE = "/cgi-bin/stable_token"


async def stable_token(sandbox: Sandbox, kind: str = "oa", **extra: Any) -> dict[str, Any]:
    config = sandbox.config
    appid, secret = ((config.oa_appid, config.oa_secret) if kind == "oa"
                     else (config.mp_appid, config.mp_secret))
    answer = await sandbox.http.post(STABLE, json={"grant_type": "client_credential",
                                                   "appid": appid, "secret": secret, **extra})
    return answer.json()


async def user_info(sandbox: Sandbox, token: str, openid: str = "oUser1") -> dict[str, Any]:
    answer = await sandbox.http.get("/cgi-bin/user/info",
                                    params={"access_token": token, "openid": openid})
    return answer.json()


# -- credentials and tokens ----------------------------------------------------------------

async def test_token_endpoints_check_appid_and_secret(sandbox):
    config = sandbox.config
    for appid, secret, errcode in [("wxunknown", config.oa_secret, 40013),
                                   (config.oa_appid, "wrong", 40125),
                                   (config.mp_appid, config.oa_secret, 40125)]:
        plain = await sandbox.http.get("/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": appid, "secret": secret})
        stable = await sandbox.http.post(STABLE, json={
            "grant_type": "client_credential", "appid": appid, "secret": secret})
        assert plain.status_code == stable.status_code == 200  # WeChat answers errors with 200
        assert plain.json()["errcode"] == stable.json()["errcode"] == errcode
        assert " rid: " in stable.json()["errmsg"]
    bad_grant = await stable_token(sandbox, grant_type="password")
    assert bad_grant["errcode"] == 40002
    assert sandbox.world.tokens == {}


async def test_stable_token_is_the_same_while_valid_and_force_refresh_revokes(sandbox):
    await sandbox.follow("oUser1")
    first = await stable_token(sandbox)
    again = await stable_token(sandbox)
    assert first["access_token"] == again["access_token"]
    assert 7190 <= first["expires_in"] <= 7200
    forced = await stable_token(sandbox, force_refresh=True)
    assert forced["access_token"] != first["access_token"]
    assert (await user_info(sandbox, first["access_token"]))["errcode"] == 40001
    assert (await user_info(sandbox, forced["access_token"]))["subscribe"] == 1
    # A second force within 30 s does not refresh (WeChat's rule).
    assert (await stable_token(sandbox, force_refresh=True))["access_token"] == forced["access_token"]


async def test_force_refresh_has_a_daily_quota(sandbox):
    sandbox.config.daily_quota["/cgi-bin/stable_token#force_refresh"] = 1
    assert "access_token" in await stable_token(sandbox, force_refresh=True)
    sandbox.world.last_force.clear()  # as if 30 s had passed
    assert (await stable_token(sandbox, force_refresh=True))["errcode"] == 45009


async def test_tokens_expire_after_their_ttl(sandbox):
    await sandbox.follow("oUser1")
    sandbox.config.token_ttl = 1
    token = (await stable_token(sandbox))["access_token"]
    assert (await user_info(sandbox, token))["subscribe"] == 1
    await asyncio.sleep(1.1)
    assert (await user_info(sandbox, token))["errcode"] == 42001
    renewed = await stable_token(sandbox)
    assert renewed["access_token"] != token
    assert (await user_info(sandbox, renewed["access_token"]))["subscribe"] == 1


async def test_plain_token_replaces_the_previous_one_after_a_grace_period(sandbox):
    await sandbox.follow("oUser1")
    params = {"grant_type": "client_credential", "appid": sandbox.config.oa_appid,
              "secret": sandbox.config.oa_secret}
    first = (await sandbox.http.get("/cgi-bin/token", params=params)).json()["access_token"]
    second = (await sandbox.http.get("/cgi-bin/token", params=params)).json()["access_token"]
    assert first != second
    assert (await user_info(sandbox, first))["subscribe"] == 1  # within the 5 min grace
    sandbox.config.token_grace_seconds = 0
    third = (await sandbox.http.get("/cgi-bin/token", params=params)).json()["access_token"]
    assert (await user_info(sandbox, second))["errcode"] == 40001
    assert (await user_info(sandbox, third))["subscribe"] == 1


async def test_api_calls_need_the_right_token(sandbox):
    await sandbox.follow("oUser1")
    assert (await sandbox.http.get("/cgi-bin/user/info?openid=oUser1")).json()["errcode"] == 41001
    assert (await user_info(sandbox, "SBX_made_up"))["errcode"] == 40001
    mp_token = (await stable_token(sandbox, "mp"))["access_token"]
    assert (await user_info(sandbox, mp_token))["errcode"] == 48001
    oa_token = (await stable_token(sandbox))["access_token"]
    wxacode = await sandbox.http.post(f"/wxa/getwxacodeunlimit?access_token={oa_token}",
                                      json={"scene": "a=1"})
    assert wxacode.json()["errcode"] == 48001
    assert (await user_info(sandbox, oa_token, "oNobody"))["errcode"] == 40003


async def test_stable_token_wants_a_json_body(sandbox):
    answer = await sandbox.http.post(STABLE, content=b"grant_type=client_credential")
    assert answer.json()["errcode"] == 47001


# -- API argument rules ---------------------------------------------------------------------

@pytest.mark.parametrize("menu, errcode", [
    ({"button": []}, 40016),
    ({"button": [{"type": "click", "name": "一二三四五六", "key": "K"}]}, 40018),
    ({"button": [{"type": "click", "name": "帮助"}]}, 40019),
    ({"button": [{"type": "teleport", "name": "帮助", "key": "K"}]}, 40017),
    ({"button": [{"type": "view", "name": "帮助"}]}, 40020),
    ({"button": [{"name": "我的", "sub_button": [
        {"type": "click", "name": "绑", "key": f"K{i}"} for i in range(6)]}]}, 40023),
    ({"button": [{"name": "我的", "sub_button": [
        {"type": "click", "name": "长" * 21, "key": "K"}]}]}, 40025),
])
async def test_menu_rules(sandbox, menu, errcode):
    token = (await stable_token(sandbox))["access_token"]
    answer = await sandbox.http.post(f"/cgi-bin/menu/create?access_token={token}", json=menu)
    assert answer.json()["errcode"] == errcode
    assert (await sandbox.http.get("/sandbox/menu")).json()["menu"] is None
    missing = await sandbox.http.get(f"/cgi-bin/menu/get?access_token={token}")
    assert missing.json()["errcode"] == 46003


@pytest.mark.parametrize("body, errcode", [
    ({"scene": "x" * 33}, 40169), ({"scene": "含中文"}, 40169), ({}, 40169),
    ({"scene": "a=1", "page": "/pages/index/index"}, 41030),
    ({"scene": "a=1", "page": "pages/index/index?x=1"}, 41030),
])
async def test_wxacode_rules(sandbox, body, errcode):
    token = (await stable_token(sandbox, "mp"))["access_token"]
    answer = await sandbox.http.post(f"/wxa/getwxacodeunlimit?access_token={token}", json=body)
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["errcode"] == errcode


@pytest.mark.parametrize("body, errcode", [
    ({"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": ""}}}, 40097),
    ({"action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 100_001}}}, 40097),
    ({"action_name": "QR_SCENE", "expire_seconds": 2_592_001,
      "action_info": {"scene": {"scene_id": 7}}}, 40097),
    ({"action_name": "QR_MAGIC", "action_info": {"scene": {"scene_str": "x"}}}, 40097),
])
async def test_qrcode_rules(sandbox, body, errcode):
    token = (await stable_token(sandbox))["access_token"]
    answer = await sandbox.http.post(f"/cgi-bin/qrcode/create?access_token={token}", json=body)
    assert answer.json()["errcode"] == errcode
    assert sandbox.world.qrcodes == {}


async def test_temporary_qrcode_defaults_to_60_seconds_and_expires(sandbox):
    token = (await stable_token(sandbox))["access_token"]
    answer = await sandbox.http.post(f"/cgi-bin/qrcode/create?access_token={token}", json={
        "action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 123}}})
    code = answer.json()
    assert code["expire_seconds"] == 60
    sandbox.world.qrcodes[code["ticket"]]["expires_at"] = 0
    image = await sandbox.http.get("/cgi-bin/showqrcode", params={"ticket": code["ticket"]})
    assert image.status_code == 404


async def test_subscribe_message_data_must_have_values(sandbox):
    await sandbox.login_code("oMini1")
    await sandbox.http.post("/sandbox/mp/users/oMini1/grant-subscribe", json={"template_id": "T"})
    token = (await stable_token(sandbox, "mp"))["access_token"]
    answer = await sandbox.http.post(f"/cgi-bin/message/subscribe/send?access_token={token}",
                                     json={"touser": "oMini1", "template_id": "T",
                                           "data": {"thing1": {"value": ""}}})
    assert answer.json()["errcode"] == 47003
    assert sandbox.world.mp_users["oMini1"].grants["T"] == 1  # not spent
    assert await sandbox.outbox() == []


async def test_codes_expire(sandbox):
    sandbox.config.code_ttl = 0
    code = await sandbox.login_code("oMini1")
    answer = await sandbox.http.get("/sns/jscode2session", params={
        "appid": sandbox.config.mp_appid, "secret": sandbox.config.mp_secret,
        "js_code": code, "grant_type": "authorization_code"})
    assert answer.json()["errcode"] == 40029


async def test_code2session_refuses_the_official_account(sandbox):
    code = await sandbox.login_code("oMini1")
    answer = await sandbox.http.get("/sns/jscode2session", params={
        "appid": sandbox.config.oa_appid, "secret": sandbox.config.oa_secret,
        "js_code": code, "grant_type": "authorization_code"})
    assert answer.json()["errcode"] == 40013
    assert not sandbox.world.codes[code].used


# -- control API ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"errcode": 45009}, {"api": "/cgi-bin/user/info"},
    {"api": "/cgi-bin/user/info", "errcode": "45009"},
    {"api": "/cgi-bin/user/info", "delay_seconds": -1},
    {"api": "/cgi-bin/user/info", "errcode": -1, "times": 0},
])
async def test_bad_faults_are_refused_and_nothing_is_injected(sandbox, body):
    answer = await sandbox.http.post("/sandbox/faults", json=body)
    assert answer.status_code == 400
    assert "error" in answer.json()
    assert (await sandbox.http.get("/sandbox/faults")).json() == {"faults": {}}


async def test_faults_are_consumed_in_order_and_can_be_cleared(sandbox):
    await sandbox.follow("oUser1")
    token = (await stable_token(sandbox))["access_token"]
    await sandbox.fault("/cgi-bin/user/info", errcode=45009, times=2)
    await sandbox.fault("/cgi-bin/user/info", errcode=-1)
    listed = (await sandbox.http.get("/sandbox/faults")).json()["faults"]["/cgi-bin/user/info"]
    assert [f["errcode"] for f in listed] == [45009, -1]
    codes = [(await user_info(sandbox, token)).get("errcode", 0) for _ in range(4)]
    assert codes == [45009, 45009, -1, 0]
    await sandbox.fault("/cgi-bin/user/info", errcode=-1)
    assert (await sandbox.http.delete("/sandbox/faults")).status_code == 200
    assert (await user_info(sandbox, token))["subscribe"] == 1


async def test_outbox_can_be_cleared(sandbox):
    await sandbox.follow("oUser1")
    token = (await stable_token(sandbox))["access_token"]
    await sandbox.http.post(f"/cgi-bin/message/custom/send?access_token={token}",
                            json={"touser": "oUser1", "msgtype": "text", "text": {"content": "好"}})
    assert len(await sandbox.outbox(openid="oUser1")) == 1
    assert (await sandbox.http.delete("/sandbox/outbox")).json() == {"cleared": 1}
    assert await sandbox.outbox() == []


async def test_custom_message_needs_content(sandbox):
    await sandbox.follow("oUser1")
    token = (await stable_token(sandbox))["access_token"]
    for body, errcode in [({"msgtype": "text", "text": {"content": ""}}, 44004),
                          ({"msgtype": "hologram", "hologram": {}}, 40008)]:
        answer = await sandbox.http.post(f"/cgi-bin/message/custom/send?access_token={token}",
                                         json={"touser": "oUser1", **body})
        assert answer.json()["errcode"] == errcode
    assert await sandbox.outbox() == []


async def test_oauth_authorize_checks_its_parameters(sandbox):
    base = {"appid": sandbox.config.oa_appid, "redirect_uri": "https://example.org/b",
            "response_type": "code", "scope": "snsapi_base", "state": "s"}
    for bad in [{"appid": sandbox.config.mp_appid}, {"scope": "snsapi_login"},
                {"redirect_uri": "javascript:alert(1)"}]:
        answer = await sandbox.http.get("/connect/oauth2/authorize", params={**base, **bad,
                                                                             "sandbox_openid": "o1"})
        assert answer.status_code == 400
    assert sandbox.world.codes == {}
    page = await sandbox.http.get("/connect/oauth2/authorize", params=base)
    assert page.status_code == 200 and "模拟微信网页授权" in page.text


async def test_control_api_rejects_bad_bodies(sandbox):
    for path, body in [("/sandbox/mp/users/oMini1/phone-code", {"phone": "138-0013"}),
                       ("/sandbox/mp/users/oMini1/grant-subscribe", {}),
                       ("/sandbox/users/oUser1", [1, 2])]:
        answer = await sandbox.http.post(path, json=body)
        assert answer.status_code == 400, path
    assert sandbox.world.mp_users == {} and sandbox.world.oa_users == {}


# -- simulated users against a stand-in callback ------------------------------------------

class StandInCallback(tornado.web.RequestHandler):
    """The protocol half of /wechat/oa, with wechatpy: verify, decrypt, parse, reply."""

    def initialize(self, config: SandboxConfig, seen: list[dict[str, Any]],
                   behaviour: dict[str, Any]) -> None:
        self.config = config
        self.seen = seen
        self.behaviour = behaviour

    def _verified(self) -> bool:
        query = {k: self.get_query_argument(k, "") for k in ("signature", "timestamp", "nonce")}
        try:
            check_signature(self.config.oa_token, query["signature"], query["timestamp"],
                            query["nonce"])
        except InvalidSignatureException:
            self.send_error(403)
            return False
        return True

    def get(self) -> None:
        if self._verified():
            self.write(self.get_query_argument("echostr"))

    async def post(self) -> None:
        if not self._verified():
            return
        crypto = WeChatCrypto(self.config.oa_token, self.config.oa_aes_key, self.config.oa_appid)
        safe = self.get_query_argument("encrypt_type", "") == "aes"
        timestamp, nonce = self.get_query_argument("timestamp"), self.get_query_argument("nonce")
        xml = self.request.body.decode()
        if safe:  # raises (500) on a wrong msg_signature
            xml = crypto.decrypt_message(xml, self.get_query_argument("msg_signature"),
                                         timestamp, nonce)
        message = parse_message(xml)
        self.seen.append({"message": message, "xml": xml, "raw": self.request.body.decode(),
                          "query": {k: v[0].decode() for k, v in self.request.query_arguments.items()}})
        delays = self.behaviour.setdefault("delays", [])
        if delays:
            await asyncio.sleep(delays.pop(0))
        if self.behaviour.get("answer") is not None:
            self.write(self.behaviour["answer"])
            return
        text = (f"收到：{message.content}" if message.type == "text"
                else f"事件：{message.event}:{getattr(message, 'key', '') or getattr(message, 'scene_id', '')}")
        reply = create_reply(text, message).render()
        self.write(crypto.encrypt_message(reply, nonce) if safe and not self.behaviour.get("plain_reply")
                   else reply)


@pytest.fixture
async def callback(sandbox: Sandbox) -> AsyncIterator[dict[str, Any]]:
    """A stand-in /wechat/oa on a free port; the sandbox's users call it."""
    state: dict[str, Any] = {"seen": [], "behaviour": {}}
    # Its own copy of the account: the sandbox's config may change under a test.
    app = tornado.web.Application([(r"/wechat/oa", StandInCallback, {
        "config": dataclasses.replace(sandbox.config), "seen": state["seen"], "behaviour": state["behaviour"]})])
    port = free_port()
    server = app.listen(port, "127.0.0.1")
    sandbox.config.callback_url = f"http://127.0.0.1:{port}/wechat/oa"
    try:
        yield state
    finally:
        server.stop()
        await server.close_all_connections()


async def act(sandbox: Sandbox, openid: str, action: str, **body: Any) -> dict[str, Any]:
    answer = await sandbox.http.post(f"/sandbox/users/{openid}/{action}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_user_round_trip_in_safe_mode(sandbox, callback):
    gh = sandbox.config.oa_original_id
    result = await act(sandbox, "oUser1", "subscribe")
    assert result["status"] == 200 and result["error"] is None
    assert result["reply"]["Content"] == "事件：subscribe:"
    assert result["reply"]["ToUserName"] == "oUser1" and result["reply"]["FromUserName"] == gh
    first = callback["seen"][0]
    assert first["query"]["encrypt_type"] == "aes" and first["query"]["openid"] == "oUser1"
    # On the wire only ToUserName and Encrypt; the rest is inside the ciphertext.
    assert set(xmltodict.parse(first["raw"])["xml"]) == {"ToUserName", "Encrypt"}
    event = first["message"]
    assert (event.event, event.source, event.target) == ("subscribe", "oUser1", gh)

    said = await act(sandbox, "oUser1", "say", content="你好 <b> & 再见")
    assert said["reply"]["Content"] == "收到：你好 <b> & 再见"
    text = callback["seen"][1]["message"]
    assert text.type == "text" and text.id == said["message"]["MsgId"]
    clicked = await act(sandbox, "oUser1", "click", key="HELP")
    assert clicked["reply"]["Content"] == "事件：click:HELP"
    gone = await act(sandbox, "oUser1", "unsubscribe")
    assert callback["seen"][-1]["message"].event == "unsubscribe"
    assert gone["status"] == 200
    assert (await sandbox.http.get("/sandbox/users/oUser1")).json()["following"] is False


async def test_passive_replies_the_user_saw_are_in_the_outbox(sandbox, callback):
    await act(sandbox, "oUser1", "subscribe")
    said = await act(sandbox, "oUser1", "say", content="帮助")
    replies = await sandbox.outbox(openid="oUser1", kind="reply")
    assert [r["body"]["Content"] for r in replies] == ["事件：subscribe:", "收到：帮助"]
    assert replies[1]["body"] == said["reply"]
    assert replies[0]["appid"] == sandbox.config.oa_appid and replies[0]["msgid"] is None
    assert [m["kind"] for m in await sandbox.outbox(openid="oUser1")] == ["reply", "reply"]
    # What WeChat refuses never reaches the user, and "success" shows nothing.
    callback["behaviour"]["plain_reply"] = True
    assert (await act(sandbox, "oUser1", "say", content="hi"))["error"]
    callback["behaviour"].update(plain_reply=False, answer="success")
    await act(sandbox, "oUser1", "say", content="hi")
    assert len(await sandbox.outbox(kind="reply")) == 2


async def test_mini_program_users_can_be_made_known_with_their_grants(ctx, sandbox):
    from wxbackend.wechat.client import mp_client

    answer = await sandbox.http.post("/sandbox/mp/users/oMini1",
                                     json={"unionid": "oUnion1", "grants": {"TPL_A": 2}})
    assert answer.json() == {"openid": "oMini1", "unionid": "oUnion1", "grants": {"TPL_A": 2}}
    data = {"thing1": {"value": "支部党员大会"}}
    await mp_client(ctx).send_subscribe("oMini1", "TPL_A", data)
    assert (await sandbox.http.get("/sandbox/mp/users/oMini1")).json()["grants"] == {"TPL_A": 1}
    # Posting again sets the grants (the state WeChat keeps), it does not add to them.
    await sandbox.http.post("/sandbox/mp/users/oMini1", json={"grants": {"TPL_A": 1}})
    assert sandbox.world.mp_users["oMini1"].grants["TPL_A"] == 1
    assert (await sandbox.http.get("/sandbox/mp/users/oNobody")).status_code == 404
    for bad in ({"grants": {"TPL_A": -1}}, {"grants": ["TPL_A"]}, {"grants": {"TPL_A": True}}):
        refused = await sandbox.http.post("/sandbox/mp/users/oMini2", json=bad)
        assert refused.status_code == 400, bad
    assert "oMini2" not in sandbox.world.mp_users


async def test_qr_scan_by_a_new_user_subscribes_and_by_a_follower_scans(ctx, sandbox, callback):
    from wxbackend.wechat.client import oa_client

    qr = await oa_client(ctx).create_qrcode("bind:5f1c", expire_seconds=600)
    new = await act(sandbox, "oUser2", "scan", ticket=qr["ticket"])
    assert new["message"]["Event"] == "subscribe"
    assert new["message"]["EventKey"] == "qrscene_bind:5f1c"
    assert new["message"]["Ticket"] == qr["ticket"]
    event = callback["seen"][0]["message"]
    assert (event.event, event.scene_id, event.ticket) == ("subscribe_scan", "bind:5f1c", qr["ticket"])
    again = await act(sandbox, "oUser2", "scan", scene="bind:5f1c")
    assert (again["message"]["Event"], again["message"]["EventKey"]) == ("SCAN", "bind:5f1c")
    assert again["message"]["Ticket"] == qr["ticket"]
    assert callback["seen"][1]["message"].event == "scan"
    info = await oa_client(ctx).user_info("oUser2")
    assert (info["subscribe_scene"], info["qr_scene_str"]) == ("ADD_SCENE_QR_CODE", "bind:5f1c")
    # The live codes, as a camera would read them from the printout: scanning the url works.
    [listed] = (await sandbox.http.get("/sandbox/qrcodes")).json()["codes"]
    assert (listed["ticket"], listed["scene"], listed["url"]) == (qr["ticket"], "bind:5f1c", qr["url"])
    assert (await act(sandbox, "oUser2", "scan", url=listed["url"]))["message"]["EventKey"] == "bind:5f1c"
    sandbox.world.qrcodes[qr["ticket"]]["expires_at"] = sandbox.world.clock() - 1
    assert (await sandbox.http.get("/sandbox/qrcodes")).json()["codes"] == []


async def test_plain_mode_sends_clear_xml(sandbox, callback):
    sandbox.config.mode = "plain"
    result = await act(sandbox, "oUser1", "subscribe")
    seen = callback["seen"][0]
    assert "encrypt_type" not in seen["query"] and "msg_signature" not in seen["query"]
    assert xmltodict.parse(seen["raw"])["xml"]["Event"] == "subscribe"
    assert result["reply"]["MsgType"] == "text" and result["error"] is None


async def test_replies_wechat_would_refuse_are_reported(sandbox, callback):
    await act(sandbox, "oUser1", "subscribe")
    callback["behaviour"]["plain_reply"] = True
    result = await act(sandbox, "oUser1", "say", content="hi")
    assert result["reply"]["Content"] == "收到：hi"
    assert "encrypted" in result["error"] and "该公众号暂时无法提供服务" in result["error"]
    callback["behaviour"]["answer"] = '{"json": "is not XML"}'
    assert "not WeChat XML" in (await act(sandbox, "oUser1", "say", content="hi"))["error"]
    callback["behaviour"]["answer"] = "success"
    quiet = await act(sandbox, "oUser1", "say", content="hi")
    assert (quiet["reply"], quiet["error"], quiet["body"]) == (None, None, "success")


async def test_cdata_terminator_in_text_reaches_the_callback_intact(sandbox, callback):
    await act(sandbox, "oUser1", "subscribe")
    result = await act(sandbox, "oUser1", "say", content="a ]]> b")
    assert callback["seen"][1]["message"].content == "a ]]> b"
    # wechatpy's reply render does not split "]]>", so echoing it breaks the XML.
    assert result["reply"] is None and "not WeChat XML" in result["error"]


async def test_slow_callback_is_retried_with_the_same_message(sandbox, callback):
    await act(sandbox, "oUser1", "subscribe")
    sandbox.config.callback_timeout_seconds = 0.3
    callback["behaviour"]["delays"] = [0.6]
    result = await act(sandbox, "oUser1", "say", content="慢一点")
    assert result["attempts"] == 2 and result["reply"]["Content"] == "收到：慢一点"
    ids = [seen["message"].id for seen in callback["seen"][1:]]
    assert ids == [result["message"]["MsgId"]] * 2
    await asyncio.sleep(0.4)


async def test_callback_down_is_tried_four_times(sandbox):
    sandbox.config.callback_url = f"http://127.0.0.1:{free_port()}/wechat/oa"
    result = await act(sandbox, "oUser1", "subscribe")
    assert result["status"] is None and result["attempts"] == 4
    assert "该公众号暂时无法提供服务" in result["error"]


async def test_user_actions_follow_wechat_rules(sandbox, callback):
    async def refused(action: str, status: int, **body: Any) -> None:
        answer = await sandbox.http.post(f"/sandbox/users/oUser1/{action}", json=body)
        assert answer.status_code == status, (action, answer.text)

    await refused("say", 409, content="not following yet")
    await refused("click", 409, key="HELP")
    await refused("unsubscribe", 409)
    await act(sandbox, "oUser1", "subscribe")
    await refused("subscribe", 409)
    await refused("say", 400)
    await refused("scan", 400)
    await refused("scan", 410, ticket="no-such-ticket")
    sandbox.world.menus[sandbox.config.oa_appid] = {"button": [
        {"name": "我的", "sub_button": [{"type": "click", "name": "帮助", "key": "HELP"}]}]}
    await refused("click", 400, key="NOT_IN_MENU")
    assert len(callback["seen"]) == 1  # only the subscribe reached the callback
    assert (await act(sandbox, "oUser1", "click", key="HELP"))["reply"]["Content"] == "事件：click:HELP"


async def test_user_actions_need_a_callback(sandbox):
    answer = await sandbox.http.post("/sandbox/users/oUser1/subscribe")
    assert answer.status_code == 409
    assert sandbox.world.oa_users == {}


async def test_url_verification(sandbox, callback):
    assert (await sandbox.http.post("/sandbox/verify")).json()["ok"] is True
    sandbox.config.oa_token = "another-token"  # the callback keeps the old one
    refused = (await sandbox.http.post("/sandbox/verify")).json()
    assert (refused["ok"], refused["status"]) == (False, 403)


# -- official vectors -----------------------------------------------------------------------

def official() -> dict[str, Any]:
    return json.loads((VECTORS / "mp_crypto_official_sample.json").read_text())


def test_signatures_match_the_official_vectors():
    sample = official()
    query = sample["decrypt_case"]["query"]
    assert sign(sample["token"], query["timestamp"], query["nonce"]) == query["signature"]
    assert sign(sample["token"], query["timestamp"], query["nonce"],
                sample["decrypt_case"]["encrypt"]) == query["msg_signature"]
    plain = json.loads((VECTORS / "mp_signature_plain_vectors.json").read_text())
    for case in plain["vectors"]:
        assert sign(case["token"], case["timestamp"], case["nonce"]) == case["signature"]
    for case in plain["negative"]:
        assert sign(case["token"], case["timestamp"], case["nonce"]) != case["signature"]


def test_sandbox_envelope_decrypts_like_the_official_sample():
    sample = official()
    case = sample["decrypt_case"]
    crypto = WeChatCrypto(sample["token"], sample["encoding_aes_key"], sample["appid"])
    # What our callback does with WeChat's own message ...
    assert crypto.decrypt_message(case["post_body_xml_safe_mode_minimal"], case["query"]["msg_signature"],
                                  case["query"]["timestamp"], case["query"]["nonce"]) == \
        case["expected_decrypted_xml"]
    # ... it does with the sandbox's, built with the same account.
    pusher = Pusher(SandboxConfig(oa_appid=sample["appid"], oa_secret="s", oa_token=sample["token"],
                                  oa_aes_key=sample["encoding_aes_key"], mp_appid="wxmp",
                                  mp_secret="s", oa_original_id="gh_10f6c3c3ac5a"))
    query, body = pusher.envelope("oyORnuP8q7ou2gfYjqLzSIWZf0rs", case["expected_decrypted_xml"])
    check_signature(sample["token"], query["signature"], query["timestamp"], query["nonce"])
    assert crypto.decrypt_message(body, query["msg_signature"], query["timestamp"],
                                  query["nonce"]) == case["expected_decrypted_xml"]
    assert xmltodict.parse(body)["xml"]["ToUserName"] == "gh_10f6c3c3ac5a"
