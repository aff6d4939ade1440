"""A plain HTTP API on Starlette that reads requests the way attacked frameworks do.

Used by the test suite as the upstream behind Mandate's HTTP API gateway, to show that what
the gateway decided is what the upstream executed:

- the path is routed after percent-decoding, `%2F` and `%5C` included (`\\` is a `/`), as
  servers that decode before routing do;
- `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, a `_method` query key and a
  `_method` field of a form (urlencoded or multipart) or of a JSON object body change the
  method executed;
- a repeated query key is read as its first value;
- `_` in header names is read as `-` (CGI/WSGI style), the first of two wins.

    python http_upstream.py --port P --record FILE

Serves on http://127.0.0.1:P (P = 0 picks a free port) and, once it accepts connections,
prints exactly one line to stdout, `listening on http://127.0.0.1:P`. Every request is
appended to FILE as one JSON line before the response starts:
{"raw_path", "raw_query", "method" (as received), "executed" (after overrides), "route",
 "params", "query" (first values), "query_pairs", "headers" (as received: [name, value]),
 "folded_headers" (after `_` → `-`), "body" (text, latin-1)}.

Routes: GET/DELETE /invoices/{id}, POST /invoices, GET /files/{name}, GET /files/admin/{name}
(what no gateway route names), GET /docs/{path:path}, GET /accounts/{id}/statement,
POST /payments, POST /notes.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


def override_from_body(content_type: str, body: bytes) -> str | None:
    media = content_type.split(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
            if k == "_method":
                return v
    if media == "multipart/form-data":
        boundary = None
        for p in content_type.split(";")[1:]:
            k, _, v = p.partition("=")
            if k.strip().lower() == "boundary":
                boundary = v.strip().strip('"')
        if boundary:
            for part in body.split(b"--" + boundary.encode()):
                head, _, value = part.partition(b"\r\n\r\n")
                if b'name="_method"' in head:
                    return value.rsplit(b"\r\n", 1)[0].decode("latin-1")
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("_method"), str):
        return doc["_method"]
    return None


class Lenient:
    """Rewrites the ASGI scope the way lenient frameworks read a request, then records it."""

    def __init__(self, app: Any, record: str) -> None:
        self.app = app
        self.record = record

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        raw_query = scope.get("query_string", b"")
        received = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]

        # `_` is `-`; for a name sent twice, the first wins.
        folded: dict[str, str] = {}
        for k, v in received:
            folded.setdefault(k.lower().replace("_", "-"), v)
        pairs = parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)
        first: dict[str, str] = {}
        for k, v in pairs:
            first.setdefault(k, v)

        received_method = method = scope["method"]
        for h in OVERRIDE_HEADERS:
            if h in folded:
                method = folded[h].upper()
        if "_method" in first:
            method = first["_method"].upper()
        body_override = override_from_body(folded.get("content-type", ""), body)
        if body_override:
            method = body_override.upper()

        # Decode everything before routing, `%2F` and `%5C` included.
        path = unquote_to_bytes(raw_path).decode("utf-8", "replace").replace("\\", "/")

        scope = dict(scope)
        scope["method"] = method
        scope["path"] = path
        scope["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in folded.items()]
        scope["state"] = {
            "record": {
                "raw_path": raw_path.decode("latin-1"),
                "raw_query": raw_query.decode("latin-1"),
                "method": received_method,
                "executed": method,
                "query": first,
                "query_pairs": [list(p) for p in pairs],
                "headers": [list(h) for h in received],
                "folded_headers": folded,
                "body": body.decode("latin-1"),
            }
        }
        state = scope["state"]["record"]
        state["route"] = None
        state["params"] = {}
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                with open(self.record, "a", encoding="utf-8") as f:
                    f.write(json.dumps(state) + "\n")
            await send(message)

        await self.app(scope, replay, recording_send)


def handler(name: str):
    async def handle(request: Request) -> JSONResponse:
        record = request.scope["state"]["record"]
        record["route"] = name
        record["params"] = dict(request.path_params)
        return JSONResponse(
            {
                "upstream": "starlette",
                "route": name,
                "executed": record["executed"],
                "params": record["params"],
                "query": record["query"],
                "api_key": record["folded_headers"].get("x-api-key"),
            }
        )

    return handle


ROUTES = [
    Route("/invoices/{id}", handler("invoices.read"), methods=["GET"]),
    Route("/invoices/{id}", handler("invoices.delete"), methods=["DELETE"]),
    Route("/invoices", handler("invoices.create"), methods=["POST"]),
    Route("/files/admin/{name}", handler("files.admin"), methods=["GET"]),
    Route("/files/{name}", handler("files.read"), methods=["GET"]),
    Route("/docs/{path:path}", handler("docs.read"), methods=["GET"]),
    Route("/accounts/{id}/statement", handler("accounts.statement"), methods=["GET"]),
    Route("/payments", handler("payments.create"), methods=["POST"]),
    Route("/notes", handler("notes.create"), methods=["POST"]),
]


async def serve(port: int, record: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    app: Any = Lenient(Starlette(routes=ROUTES), record)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
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
    parser.add_argument("--port", type=int, required=True, help="serve on 127.0.0.1:PORT (0: a free port)")
    parser.add_argument("--record", required=True, metavar="FILE", help="append each request as a JSON line")
    args = parser.parse_args()
    anyio.run(serve, args.port, args.record)


if __name__ == "__main__":
    main()
