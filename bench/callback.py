"""Benchmark of the official-account callback against a bare Tornado app.

    .venv/bin/python bench/callback.py                      # 帮助 from unbound users
    .venv/bin/python bench/callback.py --message branch     # 我的支部 from bound members

In one run on the same machine:

(a) a bare Tornado app (one process) answering ``success`` to every POST;
(b) our server (``python -m wxbackend serve``, one process, embedded
    SecantusDB and Redis as subprocesses) answering safe-mode encrypted text
    messages, each with a distinct MsgId, from many distinct users.

The load client is this process: asyncio, 32 keep-alive connections, request
bytes pre-generated (signed and encrypted with wechatpy before the clock
starts), so the servers never share its event loop. Prints requests/s of
both, the ratio (b)/(a) and the latency percentiles of (b). Target: ratio at
least 0.5 and p99 under 50 ms. With ``--naive`` a third server joins the
rounds: (c) the issue's point of reference, a naive wechatpy + Tornado echo
with no storage and no dedup.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import xmltodict  # noqa: E402
from wechatpy.crypto import WeChatCrypto  # noqa: E402
from wechatpy.utils import WeChatSigner  # noqa: E402

from bench._common import bound_members, cpu_seconds, env_context, percentile, stop_server  # noqa: E402
from wxbackend.embedded import EmbeddedServers, free_port  # noqa: E402

BARE_APP = """
import sys, tornado.ioloop, tornado.web
class H(tornado.web.RequestHandler):
    def post(self):
        self.finish("success")
tornado.web.Application([(r"/wechat/oa", H)]).listen(int(sys.argv[1]), "127.0.0.1")
print("ready", flush=True)
tornado.ioloop.IOLoop.current().start()
"""

# (c), with --naive: the point of reference, a naive wechatpy + Tornado
# echo (decrypt, parse_message, TextReply, encrypt; no storage, no dedup).
NAIVE_ECHO = """
import sys, tornado.ioloop, tornado.web
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply
port, token, aes_key, appid = sys.argv[1:5]
crypto = WeChatCrypto(token, aes_key, appid)
class H(tornado.web.RequestHandler):
    def post(self):
        a = self.get_query_argument
        xml = crypto.decrypt_message(self.request.body, a("msg_signature"), a("timestamp"), a("nonce"))
        msg = parse_message(xml)
        self.finish(crypto.encrypt_message(TextReply(content=msg.content, message=msg).render(),
                                           a("nonce"), a("timestamp")))
tornado.web.Application([(r"/wechat/oa", H)]).listen(int(port), "127.0.0.1")
print("ready", flush=True)
tornado.ioloop.IOLoop.current().start()
"""


@dataclass
class Account:
    appid: str
    token: str
    aes_key: str
    original_id: str = "gh_bench000001"


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def build_requests(account: Account, port: int, users: list[str], content: str,
                   count: int) -> list[bytes]:
    """Raw HTTP/1.1 requests, each a distinct MsgId, signed and encrypted as WeChat does."""
    crypto = WeChatCrypto(account.token, account.aes_key, account.appid)
    base_id = secrets.randbelow(10**12) * 10**6
    now = int(time.time())
    out = []
    for i in range(count):
        openid = users[i % len(users)]
        xml = (f"<xml><ToUserName><![CDATA[{account.original_id}]]></ToUserName>"
               f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{now}</CreateTime>"
               f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
               f"<MsgId>{base_id + i}</MsgId></xml>")
        nonce = str(secrets.randbelow(10**18))  # unique: a reused (timestamp, nonce) is refused
        sealed = xmltodict.parse(crypto.encrypt_message(xml, nonce, str(now)))["xml"]
        body = (f"<xml><ToUserName><![CDATA[{account.original_id}]]></ToUserName>"
                f"<Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt></xml>").encode()
        query = (f"signature={sign(account.token, str(now), nonce)}&timestamp={now}&nonce={nonce}"
                 f"&openid={openid}&encrypt_type=aes&msg_signature={sealed['MsgSignature']}")
        head = (f"POST /wechat/oa?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


# -- the load client ----------------------------------------------------------------

async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length)
    if status != b"200":
        raise RuntimeError(f"HTTP {status.decode()}: {body[:200]!r}")
    return body


async def load(port: int, requests: list[bytes], concurrency: int) -> tuple[float, list[float], bytes]:
    """Send every request over ``concurrency`` keep-alive connections; (seconds, latencies, a body)."""
    queue = iter(requests)
    latencies: list[float] = []
    sample = [b""]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                started = time.perf_counter()
                writer.write(request)
                sample[0] = await _read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, sample[0]


# -- servers under test ----------------------------------------------------------------

def wait_ready(proc: subprocess.Popen, marker: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if marker in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
    raise RuntimeError("server did not start")


def start(cmd: list[str], env: dict[str, str], marker: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    wait_ready(proc, marker)
    return proc


def server_env(servers: EmbeddedServers, data_dir: Path, account: Account, port: int,
               keys: dict[str, str]) -> dict[str, str]:
    return {"WXB_DATA_DIR": str(data_dir), "WXB_MONGODB_URI": servers.mongodb_uri,
            "WXB_REDIS_URL": servers.redis_url, "WXB_MONGODB_DATABASE": "wxbench",
            "WXB_HTTP_PORT": str(port), "WXB_LOG_LEVEL": "WARNING",
            "WXB_SECURITY_SECRET_KEY": keys["secret"], "WXB_SECURITY_FIELD_KEY": keys["field"],
            "WXB_WECHAT_OA_APPID": account.appid, "WXB_WECHAT_OA_TOKEN": account.token,
            "WXB_WECHAT_OA_AES_KEY": account.aes_key, "WXB_WECHAT_OA_SECRET": "benchsecret"}


async def seed_users(env: dict[str, str], message: str, users: int) -> list[str]:
    """Openids of the senders: unbound strangers, or bound members of one branch."""
    openids = [f"oBench{i:06d}" for i in range(users)]
    if message == "help":
        return openids
    async with env_context(env) as ctx:
        await bound_members(ctx, users, "oa", "oBench")
    return openids


@dataclass
class Round:
    seconds: float
    latencies: list[float]
    cpu: float  # CPU seconds the server used


async def measure(proc: subprocess.Popen, port: int, account: Account, users: list[str],
                  content: str, count: int, concurrency: int) -> tuple[Round, bytes]:
    requests = build_requests(account, port, users, content, count)  # before the clock starts
    cpu_before = cpu_seconds(proc.pid)
    seconds, latencies, sample = await load(port, requests, concurrency)
    return Round(seconds, latencies, cpu_seconds(proc.pid) - cpu_before), sample


async def run(args: argparse.Namespace) -> None:
    account = Account(appid="wxbench" + secrets.token_hex(5), token=secrets.token_hex(8),
                      aes_key=base64.b64encode(secrets.token_bytes(32)).decode()[:43])
    keys = {"secret": secrets.token_urlsafe(40), "field": base64.b64encode(secrets.token_bytes(32)).decode()}
    content = {"help": "帮助", "branch": "我的支部"}[args.message]
    with tempfile.TemporaryDirectory(prefix="wxb-bench-cb-") as tmp, EmbeddedServers(Path(tmp)) as servers:
        bare_port, app_port = free_port(), free_port()
        env = server_env(servers, Path(tmp), account, app_port, keys)
        users = await seed_users(env, args.message, args.users)
        contenders = [("a", start([sys.executable, "-c", BARE_APP, str(bare_port)], {}, "ready"), bare_port),
                      ("b", start([sys.executable, "-m", "wxbackend", "serve"], env, "serving on"), app_port)]
        if args.naive:
            naive_port = free_port()
            contenders.append(("c", start([sys.executable, "-c", NAIVE_ECHO, str(naive_port), account.token,
                                           account.aes_key, account.appid], {}, "ready"), naive_port))
        try:
            for _, proc, port in contenders:  # warm up each
                await measure(proc, port, account, users, content, args.warmup, args.concurrency)
            rounds: dict[str, list[Round]] = {name: [] for name, _, _ in contenders}
            sample = b""  # a reply of ours, shown decrypted
            # Alternate them so that a change in the machine's load hits all alike.
            for _ in range(args.rounds):
                for name, proc, port in contenders:
                    result, reply = await measure(proc, port, account, users, content,
                                                  args.requests, args.concurrency)
                    rounds[name].append(result)
                    if name == "b":
                        sample = reply
        finally:
            for _, proc, _ in contenders:
                stop_server(proc)
    report(args, rounds, sample, account)


def report(args: argparse.Namespace, rounds: dict[str, list[Round]], sample: bytes,
           account: Account) -> None:
    crypto = WeChatCrypto(account.token, account.aes_key, account.appid)
    fields = xmltodict.parse(sample)["xml"]
    reply = xmltodict.parse(crypto.decrypt_message(sample, fields["MsgSignature"], fields["TimeStamp"],
                                                   fields["Nonce"]))["xml"]
    rps = {k: statistics.median(args.requests / r.seconds for r in v) for k, v in rounds.items()}
    cpu = {k: sum(r.cpu for r in v) / (args.requests * len(v)) * 1000 for k, v in rounds.items()}
    latencies = [ms for r in rounds["b"] for ms in r.latencies]
    bare_latencies = [ms for r in rounds["a"] for ms in r.latencies]
    what = "帮助 from unbound users" if args.message == "help" else "我的支部 from bound members"
    print(f"message: {what} ({args.users} distinct users); {args.rounds} alternating rounds of "
          f"{args.requests} requests each, {args.concurrency} connections; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"(a) bare Tornado 'success':          {rps['a']:8.0f} requests/s (median)"
          f"   server CPU {cpu['a']:.2f} ms/request")
    print(f"(b) /wechat/oa safe-mode text reply: {rps['b']:8.0f} requests/s (median)"
          f"   server CPU {cpu['b']:.2f} ms/request")
    print(f"ratio (b)/(a): {rps['b'] / rps['a']:.2f} by requests/s, {cpu['a'] / cpu['b']:.2f} by CPU"
          f" per request   (target >= 0.5)")
    print(f"(b) latency ms: p50 {percentile(latencies, 50):.1f}  p90 {percentile(latencies, 90):.1f}"
          f"  p99 {percentile(latencies, 99):.1f}  max {max(latencies):.1f}   (target p99 < 50)")
    print(f"(a) latency ms: p50 {percentile(bare_latencies, 50):.1f}"
          f"  p99 {percentile(bare_latencies, 99):.1f}   (for comparison: the load client's share)")
    if "c" in rounds:
        naive = [ms for r in rounds["c"] for ms in r.latencies]
        print(f"(c) naive wechatpy echo:             {rps['c']:8.0f} requests/s (median)"
              f"   server CPU {cpu['c']:.2f} ms/request")
        print(f"ratio (c)/(a): {rps['c'] / rps['a']:.2f} by requests/s, {cpu['a'] / cpu['c']:.2f} by CPU;"
              f" (c) latency ms: p50 {percentile(naive, 50):.1f}  p99 {percentile(naive, 99):.1f}")
    print("sample reply (decrypted): " + reply["Content"].replace("\n", " / ")[:120])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--message", choices=["help", "branch"], default="help",
                        help="help: 帮助 from unbound users; branch: 我的支部 from bound members")
    parser.add_argument("--requests", type=int, default=10000, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=500, help="distinct senders")
    parser.add_argument("--naive", action="store_true",
                        help="also measure (c), a naive wechatpy echo (no storage, no dedup)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
