"""An MCP upstream built on the official Python SDK (`mcp` 2.3.0) that executes what it is
sent the way careless real servers do, for the gateway's fidelity tests.

    python fidelity_server.py --port P --record FILE

Serves MCP at http://127.0.0.1:P/mcp and prints `listening on http://127.0.0.1:P/mcp` once.

- `payments.send(to, amount, memo=None, cc=None)`: records the arguments exactly as it parsed
  them (nulls, floats, nesting) and echoes them back.
- Resources: any `file://` URI is read the way a file server reads a path: percent-decoded
  (`%2F` becomes `/`), backslashes taken as separators, `..` resolved (`posixpath.normpath`).
  `/data/public/a.txt` is public; `/data/secret.txt` is not.

Every call and read is appended to FILE as one JSON line: {"kind": "call", "arguments": ...}
or {"kind": "read", "uri": ..., "path": ...}.
"""

from __future__ import annotations

import argparse
import json
import logging
import posixpath
import socket
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.transport_security import TransportSecuritySettings

FILES = {
    "/data/public/a.txt": "public note",
    "/data/secret.txt": "TOP-SECRET-CONTENT-7731",
}


class FileServer(MCPServer):
    def __init__(self, record: str) -> None:
        super().__init__("mandate-fidelity-upstream", version="1.0.0", log_level="WARNING")
        self.record_file = record

    def record(self, entry: dict[str, Any]) -> None:
        with open(self.record_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        text = str(uri)
        if not text.startswith("file://"):
            return await super().read_resource(uri, context)
        path = posixpath.normpath(unquote(urlsplit(text).path).replace("\\", "/"))
        self.record({"kind": "read", "uri": text, "path": path})
        if path not in FILES:
            raise ResourceError(f"no file {path}")
        return [ReadResourceContents(content=FILES[path], mime_type="text/plain")]


def build(record: str) -> MCPServer:
    mcp = FileServer(record)

    @mcp.tool(name="payments.send", description="Send a payment.")
    def payments_send(to: str, amount: float, memo: Any = None, cc: Any = None) -> dict[str, Any]:
        received = {"to": to, "amount": amount, "memo": memo, "cc": cc}
        mcp.record({"kind": "call", "arguments": received})
        return received

    @mcp.resource("file:///data/public/a.txt", name="a", mime_type="text/plain")
    def public_a() -> str:
        return FILES["/data/public/a.txt"]

    return mcp


async def serve(mcp: MCPServer, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}"],
        allowed_origins=[f"http://127.0.0.1:{port}", f"http://localhost:{port}"],
    )
    app = mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security, host="127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.01)
        sys.stdout.write(f"listening on http://127.0.0.1:{port}/mcp\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    anyio.run(serve, build(args.record), args.port)


if __name__ == "__main__":
    main()
