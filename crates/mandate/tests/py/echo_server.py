"""Upstreams that echo the secret a gateway injects into their requests, for the tests that
check the agent never gets it back.

    python echo_server.py --mcp --port P     # an MCP server (official SDK) at /mcp
    python echo_server.py --http --port P    # a plain HTTP API (Starlette)

Once it accepts connections, prints exactly one line to stdout, `listening on
http://127.0.0.1:P`, with the real port.

MCP tools, each echoing the request's `Authorization` header (and all the headers):

- `echo.raw`: the headers as JSON text;
- `echo.base64`: base64 of that JSON, and of the header value alone;
- `echo.base64url`: URL-safe base64 (unpadded) of the same;
- `echo.percent`: the header value percent-encoded (`quote`, `quote_plus`, lower-case hex);
- `echo.hex`: the header value in hex;
- `echo.json_escaped`: the header value, with every character of the response written as a
  JSON `\\uXXXX` escape on the wire;
- `echo.error`: fails, quoting the header in its error;
- `echo.stream`: sends the headers as log messages on the session's GET stream, written in
  small pieces so that the value is cut across chunks.

HTTP API: any `GET` answers `{"headers": {...}, "base64": ..., "percent": ...}` with the
header value in an `X-Echo` response header; `/text/...` answers the same as `text/plain`.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import sys
import urllib.parse
from typing import Any

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


def _auth(ctx: Context) -> tuple[str, dict[str, str]]:
    headers = dict(ctx.headers or {})
    return headers.get("authorization", ""), headers


def build_mcp() -> MCPServer:
    mcp = MCPServer("mandate-echo-server", version="1.0.0", log_level="WARNING")

    @mcp.tool(name="echo.raw")
    def echo_raw(ctx: Context) -> str:
        _, headers = _auth(ctx)
        return json.dumps(headers)

    @mcp.tool(name="echo.base64")
    def echo_base64(ctx: Context) -> dict[str, str]:
        auth, headers = _auth(ctx)
        return {
            "dump": base64.b64encode(json.dumps(headers).encode()).decode(),
            "value": base64.b64encode(auth.encode()).decode(),
            "token": base64.b64encode(auth.partition(" ")[2].encode()).decode(),
        }

    @mcp.tool(name="echo.base64url")
    def echo_base64url(ctx: Context) -> dict[str, str]:
        auth, headers = _auth(ctx)
        enc = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
        return {"dump": enc(json.dumps(headers).encode()), "value": enc(auth.encode()), "token": enc(auth.partition(" ")[2].encode())}

    @mcp.tool(name="echo.percent")
    def echo_percent(ctx: Context) -> dict[str, str]:
        auth, _ = _auth(ctx)
        return {
            "quote": urllib.parse.quote(auth, safe=""),
            "plus": urllib.parse.quote_plus(auth),
            "lower": "".join(f"%{b:02x}" for b in auth.encode()),
            "query": urllib.parse.urlencode({"auth": auth}),
        }

    @mcp.tool(name="echo.hex")
    def echo_hex(ctx: Context) -> dict[str, str]:
        auth, _ = _auth(ctx)
        token = auth.partition(" ")[2]
        return {"lower": token.encode().hex(), "upper": token.encode().hex().upper()}

    @mcp.tool(name="echo.json_escaped")
    def echo_json_escaped(ctx: Context) -> dict[str, str]:
        auth, _ = _auth(ctx)
        # EscapeJson (below) writes the value as \\u escapes in the response bytes.
        return {"authorization": auth}

    @mcp.tool(name="echo.error")
    def echo_error(ctx: Context) -> str:
        auth, _ = _auth(ctx)
        raise ToolError(f"refused the credential {auth!r}")

    @mcp.tool(name="echo.stream")
    async def echo_stream(ctx: Context) -> str:
        auth, headers = _auth(ctx)
        # No related request: the message goes to the session's GET stream.
        await ctx.request_context.session.send_log_message(level="info", data={"headers": headers, "again": auth}, related_request_id=None)
        return "sent"

    return mcp


def _header(scope: dict[str, Any], name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return ""


class EscapeJson:
    """Writes the request's `Authorization` value as JSON `\\uXXXX` escapes in the answer to
    `echo.json_escaped` (valid JSON, the same string once decoded), and cuts the GET stream
    into small writes so that a value lands across chunks."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization")
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed() -> dict[str, Any]:
            return replay.pop(0) if replay else await receive()

        escape = b"echo.json_escaped" in body and auth
        cut = scope.get("method") == "GET"
        escaped = "".join(f"\\u{ord(c):04x}" for c in auth).encode()

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and escape:
                message = {**message, "headers": [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]}
            if message["type"] == "http.response.body":
                data = message.get("body", b"")
                if escape:
                    data = data.replace(auth.encode(), escaped)
                if cut and len(data) > 7:
                    more = message.get("more_body", False)
                    for i in range(0, len(data), 7):
                        last = i + 7 >= len(data)
                        await send({"type": "http.response.body", "body": data[i : i + 7], "more_body": more or not last})
                        await anyio.sleep(0.002)
                    return
                message = {**message, "body": data}
            await send(message)

        await self.app(scope, replayed, sending)


def build_http() -> Starlette:
    async def echo(request: Request) -> Any:
        headers = dict(request.headers)
        key = headers.get("x-api-key", "")
        auth = headers.get("authorization", "")
        extra = {"x-echo": key or auth, "x-echo-b64": base64.b64encode(auth.encode()).decode()}
        if request.url.path.startswith("/text"):
            return PlainTextResponse(f"you sent {json.dumps(headers)} and {urllib.parse.quote(key or auth, safe='')}", headers=extra)
        body = {
            "headers": headers,
            "base64": base64.b64encode(json.dumps(headers).encode()).decode(),
            "percent": urllib.parse.quote(key or auth, safe=""),
            "escaped": "".join(f"\\u{ord(c):04x}" for c in (key or auth)),
        }
        # The last value is written as \\u escapes on the wire: valid JSON, decoded by a reader.
        text = json.dumps(body).replace(json.dumps(body["escaped"]), '"' + body["escaped"] + '"')
        return PlainTextResponse(text, media_type="application/json", headers=extra)

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


async def serve(app: Any, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.01)
        sys.stdout.write(f"listening on http://127.0.0.1:{port}\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--mcp", action="store_true", help="an MCP server at /mcp")
    mode.add_argument("--http", action="store_true", help="a plain HTTP API")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.mcp:
        mcp = build_mcp()
        # DNS-rebinding protection off: only the gateway on loopback talks to it.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        app: Any = EscapeJson(mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security, host="127.0.0.1"))
    else:
        app = build_http()
    anyio.run(serve, app, args.port)


if __name__ == "__main__":
    main()
