"""A small MCP tool server built on the official Python SDK (`mcp` 2.3.0, `MCPServer`).

Used by the test suite as a real, independently written upstream: the Rust SDK's client and
Mandate's gateway talk to it over streamable HTTP or stdio.

    python mcp_server.py --port P [--require-bearer SECRET] [--record-headers FILE]
    python mcp_server.py --stdio

HTTP: serves MCP at http://127.0.0.1:P/mcp (P = 0 picks a free port) and, once it accepts
connections, prints exactly one line to stdout, `listening on http://127.0.0.1:P/mcp`, with the
real port. Nothing else is written to stdout; logs go to stderr.

`--require-bearer SECRET`: every HTTP request without `Authorization: Bearer SECRET` is answered
401 with a `WWW-Authenticate: Bearer` challenge before the SDK sees it.

`--record-headers FILE`: for every HTTP request (also the refused ones), one JSON line is
appended to FILE before the response starts, so it is on disk by the time the client reads the
status: {"method", "path", "status", "rpc_method", "headers": {lowercased name: value}}.
`rpc_method` is the JSON-RPC method of a POSTed message (a list for a batch, null otherwise);
repeated headers are joined with ", ".

Tools: `notes.read` (read-only), `notes.write`, `shell.exec` (destructive; it executes nothing,
it only echoes the command). Resource: `notes://1`. Prompt: `summarise` (argument `topic`).
`--reserved-name-tools` adds tools named `resources.read` and `tools.call`, which overwrite note 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from typing import Any

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations

SERVER_NAME = "mandate-py-test-server"

# Shared by every session (and every stateless 2026-07-28 request) of this process.
NOTES: dict[str, str] = {"1": "Customer asked for a refund on order 1001."}


def build_server(reserved_name_tools: bool = False) -> MCPServer:
    mcp = MCPServer(
        SERVER_NAME,
        version="1.0.0",
        instructions="Test notes server: read and write notes, echo shell commands.",
        log_level="WARNING",
    )

    @mcp.tool(
        name="notes.read",
        description="Read a note by id.",
        annotations=ToolAnnotations(title="Read note", read_only_hint=True, destructive_hint=False, idempotent_hint=True),
    )
    def notes_read(id: str) -> dict[str, str]:
        if id not in NOTES:
            raise ToolError(f"no note with id {id!r}")
        return {"id": id, "text": NOTES[id]}

    @mcp.tool(
        name="notes.write",
        description="Create or replace a note.",
        annotations=ToolAnnotations(title="Write note", read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    )
    def notes_write(id: str, text: str) -> dict[str, Any]:
        NOTES[id] = text
        return {"id": id, "written": True, "length": len(text)}

    @mcp.tool(
        name="shell.exec",
        description="Pretends to run a shell command. Executes nothing; echoes the command back.",
        annotations=ToolAnnotations(title="Run shell command", read_only_hint=False, destructive_hint=True),
    )
    def shell_exec(command: str) -> dict[str, Any]:
        return {"command": command, "executed": False, "echo": command}

    if reserved_name_tools:
        # Tools named like MCP methods (a gateway must neither list nor call them). Each one
        # overwrites note 1, so a call that got through would show.
        def overwriter(reserved: str) -> Any:
            def overwrite(text: str = "") -> dict[str, Any]:
                NOTES["1"] = f"overwritten by {reserved}: {text}"
                return {"overwritten": True}

            return overwrite

        for reserved in ("resources.read", "tools.call"):
            mcp.tool(name=reserved, description=f"A tool named {reserved}.")(overwriter(reserved))

    @mcp.resource("notes://1", name="note-1", description="The first note.", mime_type="text/plain")
    def note_one() -> str:
        return NOTES.get("1", "")

    @mcp.prompt(name="summarise", description="Ask for a summary of a topic.")
    def summarise(topic: str) -> str:
        return f"Summarise the notes about {topic} in three sentences."

    return mcp


# ---------------------------------------------------------------------------------------------
# ASGI middleware
# ---------------------------------------------------------------------------------------------


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class RequireBearer:
    """401 for any HTTP request without `Authorization: Bearer <secret>`."""

    def __init__(self, app: Any, secret: str) -> None:
        self.app = app
        self.expected = f"bearer {secret}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = _headers(scope).get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if f"{scheme.lower()} {token.strip()}" == self.expected:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized", "message": "missing or wrong bearer secret"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="mandate-py-test-server"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RecordHeaders:
    """Appends one JSON line per HTTP request to a file, before the response starts."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # Buffer the body so the JSON-RPC method can be recorded, then replay it.
        chunks: list[bytes] = []
        trailing: list[dict[str, Any]] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                trailing.append(message)
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replay: list[dict[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}, *trailing]

        async def replay_receive() -> dict[str, Any]:
            if replay:
                return replay.pop(0)
            return await receive()

        rpc_method: Any = None
        if body:
            try:
                parsed = json.loads(body)
                if isinstance(parsed, dict):
                    rpc_method = parsed.get("method")
                elif isinstance(parsed, list):
                    rpc_method = [m.get("method") for m in parsed if isinstance(m, dict)]
            except ValueError:
                pass

        entry = {
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": None,
            "rpc_method": rpc_method,
            "headers": _headers(scope),
        }
        written = False

        def write() -> None:
            nonlocal written
            if written:
                return
            written = True
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")
                f.flush()

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message.get("status")
                write()
            await send(message)

        try:
            await self.app(scope, replay_receive, recording_send)
        finally:
            write()


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


async def serve_http(mcp: MCPServer, port: int, require_bearer: str | None, record_headers: str | None) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]

    # DNS-rebinding protection stays on; the Host values a loopback client (or a gateway
    # forwarding to this URL) sends are allowed explicitly.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}"],
        allowed_origins=[f"http://127.0.0.1:{port}", f"http://localhost:{port}"],
    )
    app: Any = mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security, host="127.0.0.1")
    if require_bearer is not None:
        app = RequireBearer(app, require_bearer)
    if record_headers is not None:
        app = RecordHeaders(app, record_headers)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.01)
        sys.stdout.write(f"listening on http://127.0.0.1:{port}/mcp\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--port", type=int, help="serve streamable HTTP on 127.0.0.1:PORT at /mcp (0: a free port)")
    mode.add_argument("--stdio", action="store_true", help="serve over stdin/stdout")
    parser.add_argument("--require-bearer", metavar="SECRET", help="answer 401 to HTTP requests without this bearer")
    parser.add_argument("--record-headers", metavar="FILE", help="append each HTTP request's headers as a JSON line")
    parser.add_argument("--reserved-name-tools", action="store_true", help="also offer tools named `resources.read` and `tools.call`")
    args = parser.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    mcp = build_server(args.reserved_name_tools)
    if args.stdio:
        if args.require_bearer or args.record_headers:
            parser.error("--require-bearer and --record-headers apply to HTTP only")
        mcp.run("stdio")
    else:
        anyio.run(serve_http, mcp, args.port, args.require_bearer, args.record_headers)


if __name__ == "__main__":
    main()
