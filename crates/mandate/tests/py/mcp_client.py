"""An MCP client built on the official Python SDK (`mcp` 2.3.0: `mcp.Client` over
`streamable_http_client`), driven by a JSON list of steps. The test suite uses it to talk to MCP
servers (and to Mandate's gateway) the way a real Python agent would.

    python mcp_client.py --url URL [--bearer TOKEN] [--header 'Name: value' ...]
                         --protocol 2025-11-25|2026-07-28 --steps STEPS_JSON

STEPS_JSON is a JSON list (or `@FILE` to read one from a file); each item is one of
    {"op": "list_tools"}      {"op": "list_resources"}      {"op": "list_prompts"}
    {"op": "call_tool", "name": N, "arguments": {...}}
    {"op": "read_resource", "uri": U}
    {"op": "get_prompt", "name": N, "arguments": {...}}

`--protocol 2025-11-25` forces the initialize handshake (the SDK's `mode="legacy"`; the server's
Mcp-Session-Id is sent on every later request). `--protocol 2026-07-28` forces the stateless
revision: the client pins 2026-07-28 (no silent fallback to initialize, unlike the SDK's default
`mode="auto"`) and sends one real `server/discover` before the steps; if that fails, the
connection fails.

Prints exactly one JSON object on stdout, whatever happens:
    {"protocol": "<negotiated revision>" | null,
     "connect": {"ok": true} | <a failure, as below>,
     "results": [<one per step, in order>]
     [, "close_error": str]}
A step is one of
    {"ok": true, "tools": [names], "result": <tools/list result>}   list_tools (every page)
    {"ok": true, "result": <the result as wire JSON>}                 any other op
    {"ok": false, "error": {"code": int|null, "message": str, "data": any}[, "http_status": int]}
        a JSON-RPC error the server sent (http_status: the non-2xx status it came with), or an
        exception the SDK raised about a result it received (code null, message "Type: text")
    {"ok": false, "transport_error": str[, "http_status": int]}
        an HTTP-level failure: a 4xx/5xx whose body is not a JSON-RPC error (the SDK would
        report those as a made-up -32603/-32601), a refused or dropped connection, a timeout
        (which the SDK reports as -32001, the same code a COAZ deny uses), or "not run: ..." for
        the steps after the session died.
Each request is bounded by 30 s; a timeout ends the session. Exit status 0 whenever the JSON
was printed, 2 for bad arguments.

The SDK checks a tool result against the tool's output schema; for a tool not listed earlier in
the run it sends a tools/list right after the tools/call to fetch that schema. Where a test counts
what reached the server, list the tools first.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.message import SessionMessage
from pydantic import BaseModel

STEP_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0
PROTOCOLS = ("2025-11-25", "2026-07-28")
CLIENT_INFO = mcp_types.Implementation(name="mandate-test-py-client", version="1.0.0")

# JSON-RPC errors the SDK's HTTP transport writes into the stream itself, instead of a response.
_TRANSPORT_MADE = ("SSE stream", "server answered a request with 202", "Redirect to", "Unexpected content type")


# ---------------------------------------------------------------------------------------------
# What actually crossed the wire during one step
# ---------------------------------------------------------------------------------------------


@dataclass
class HttpFailure:
    status: int
    reason: str
    text: str
    jsonrpc_error: bool


@dataclass
class Wire:
    """Every POST response status and every JSON-RPC error message the client received.

    The SDK folds HTTP refusals (401, 403, 404, ...) into stand-in JSON-RPC errors and raises its
    own timeouts as MCPError too; these records tell those apart from errors a server sent."""

    http: list[HttpFailure | int] = field(default_factory=list)
    rpc_errors: list[mcp_types.ErrorData] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        if response.request.method != "POST":
            return
        if response.status_code < 400:
            self.http.append(response.status_code)
            return
        # Error bodies are small; reading here caches the body for the SDK's own read.
        body = await response.aread()
        text = body.decode("utf-8", "replace")
        jsonrpc_error = False
        if response.headers.get("content-type", "").lower().startswith("application/json"):
            try:
                parsed = json.loads(text)
                jsonrpc_error = isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
            except ValueError:
                pass
        self.http.append(HttpFailure(response.status_code, response.reason_phrase, text, jsonrpc_error))

    def on_message(self, item: SessionMessage | Exception) -> None:
        if isinstance(item, SessionMessage) and isinstance(item.message, mcp_types.JSONRPCError):
            self.rpc_errors.append(item.message.error)

    def take(self) -> Wire:
        seen = Wire(self.http, self.rpc_errors)
        self.http, self.rpc_errors = [], []
        return seen


class ObservedReadStream:
    """The transport's read stream, with every item shown to a `Wire` on the way in."""

    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        item = await self._inner.receive()
        self._wire.on_message(item)
        return item

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> ObservedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> ObservedReadStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


@asynccontextmanager
async def observed(transport: Any, wire: Wire) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield ObservedReadStream(read_stream, wire), write_stream


# ---------------------------------------------------------------------------------------------
# Results and failures as JSON
# ---------------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """A result as it came off the wire: only the fields the server sent (the SDK's models fill
    in defaults such as resultType, and drop the fields of a later revision than the session's)."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return value


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Failures after which the connection cannot carry another request.
_DEAD = (
    TimeoutError,
    httpx2.TransportError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    BaseExceptionGroup,
)


def failure(exc: BaseException, seen: Wire) -> dict[str, Any]:
    """The JSON for a failed step (or connection)."""
    http = next((h for h in reversed(seen.http) if isinstance(h, HttpFailure)), None)
    if http is not None and not http.jsonrpc_error:
        text = f"HTTP {http.status} {http.reason}"
        if http.text.strip():
            text += f": {http.text.strip()[:500]}"
        return {"ok": False, "transport_error": text, "http_status": http.status}
    if isinstance(exc, MCPError):
        received = any(e.code == exc.error.code and e.message == exc.error.message for e in seen.rpc_errors)
        if not received:
            # Raised by the SDK with nothing received: its own timeout or a closed connection.
            return {"ok": False, "transport_error": f"{describe(exc)} (code {exc.error.code}, raised by the client)"}
        if exc.error.message.startswith(_TRANSPORT_MADE):
            return {"ok": False, "transport_error": f"{describe(exc)} (code {exc.error.code}, made by the transport)"}
        out: dict[str, Any] = {
            "ok": False,
            "error": {"code": exc.error.code, "message": exc.error.message, "data": exc.error.data},
        }
        if http is not None:
            out["http_status"] = http.status
        return out
    if isinstance(exc, _DEAD):
        return {"ok": False, "transport_error": describe(exc)}
    return {"ok": False, "error": {"code": None, "message": describe(exc), "data": None}}


def ends_session(exc: BaseException, entry: dict[str, Any]) -> bool:
    if isinstance(exc, _DEAD):
        return True
    # A request the client gave up on (timeout) or a connection that closed under it.
    return isinstance(exc, MCPError) and "raised by the client" in entry.get("transport_error", "")


# ---------------------------------------------------------------------------------------------
# Session
# ---------------------------------------------------------------------------------------------


async def run_step(client: Client, step: dict[str, Any]) -> dict[str, Any]:
    op = step.get("op")
    if op == "list_tools":
        names: list[str] = []
        pages: list[Any] = []
        cursor: str | None = None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor)
            pages.append(to_json(page))
            names.extend(t.name for t in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return {"ok": True, "tools": names, "result": pages[0] if len(pages) == 1 else {"pages": pages}}
    if op == "list_resources":
        return {"ok": True, "result": to_json(await client.list_resources())}
    if op == "list_prompts":
        return {"ok": True, "result": to_json(await client.list_prompts())}
    if op == "call_tool":
        return {"ok": True, "result": to_json(await client.call_tool(step["name"], step.get("arguments") or {}))}
    if op == "read_resource":
        return {"ok": True, "result": to_json(await client.read_resource(step["uri"]))}
    if op == "get_prompt":
        arguments = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (step.get("arguments") or {}).items()}
        return {"ok": True, "result": to_json(await client.get_prompt(step["name"], arguments))}
    raise ValueError(f"unknown op {op!r}")


async def connect(stack: AsyncExitStack, url: str, headers: dict[str, str], protocol: str, wire: Wire) -> Client:
    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(STEP_TIMEOUT))
    http.event_hooks = {"request": [], "response": [wire.on_response]}
    await stack.enter_async_context(http)
    transport = observed(streamable_http_client(url, http_client=http), wire)
    # No response cache: every step goes over the wire, as a test expects.
    common: dict[str, Any] = {"cache": None, "read_timeout_seconds": STEP_TIMEOUT, "client_info": CLIENT_INFO}
    if protocol == "2025-11-25":
        # Entering sends initialize (bounded by read_timeout_seconds) and notifications/initialized.
        client = Client(transport, mode="legacy", **common)
        await stack.enter_async_context(client)
        return client
    # A version pin adopts 2026-07-28 locally, with no traffic and no fallback; the real
    # server/discover then replaces that placeholder with what the server said.
    client = Client(transport, mode=protocol, **common)
    await stack.enter_async_context(client)
    with anyio.fail_after(STEP_TIMEOUT):
        raw = await client.session.send_discover(protocol)
    client.session.adopt(mcp_types.DiscoverResult.model_validate(raw))
    return client


async def run(url: str, headers: dict[str, str], protocol: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    wire = Wire()
    out: dict[str, Any] = {"protocol": None, "connect": None, "results": []}
    results: list[dict[str, Any]] = out["results"]
    dead: dict[str, Any] | None = None  # why later steps are not run

    # One deadline around everything, opened before any of the SDK's task groups: anyio does
    # not let a cancel scope close while a task group entered inside it stays open, so the
    # per-request deadlines below wrap single requests only.
    with anyio.move_on_after(STEP_TIMEOUT * (len(steps) + 2) + CLOSE_TIMEOUT) as overall:
        try:
            async with AsyncExitStack() as stack:
                try:
                    client = await connect(stack, url, headers, protocol, wire)
                    out["protocol"] = client.protocol_version
                    out["connect"] = {"ok": True}
                except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
                    out["connect"] = dead = failure(exc, wire.take())
                wire.take()

                for step in steps:
                    if dead is not None:
                        break
                    try:
                        with anyio.fail_after(STEP_TIMEOUT):
                            results.append(await run_step(client, step))
                        wire.take()
                    except Exception as exc:  # noqa: BLE001
                        entry = failure(exc, wire.take())
                        results.append(entry)
                        if ends_session(exc, entry):
                            dead = entry
                # Leaving the stack closes the session (DELETE at 2025-11-25).
        except Exception as exc:  # noqa: BLE001 - the transport's task group failed under a request
            entry = failure(exc, wire.take())
            if out["connect"] is None:
                out["connect"] = dead = entry
            elif dead is None and len(results) < len(steps):
                results.append(entry)
                dead = entry
            else:
                out["close_error"] = describe(exc)
    if overall.cancelled_caught:
        entry = {"ok": False, "transport_error": "timed out"}
        if out["connect"] is None:
            out["connect"] = entry
        elif dead is None and len(results) < len(steps):
            results.append(entry)
        else:
            out["close_error"] = "closing the session timed out"
        dead = dead or entry

    while len(results) < len(steps):
        reason = "connection failed" if out["connect"] is not None and not out["connect"]["ok"] else "session dead"
        why = (dead or {}).get("transport_error") or json.dumps((dead or {}).get("error"))
        filler: dict[str, Any] = {"ok": False, "transport_error": f"not run: {reason}: {why}"}
        if dead is not None and "http_status" in dead:
            filler["http_status"] = dead["http_status"]
        results.append(filler)
    return out


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="Drive an MCP server with the official Python SDK's client.")
    parser.add_argument("--url", required=True, help="the MCP endpoint, e.g. http://127.0.0.1:8000/mcp")
    parser.add_argument("--bearer", help="send Authorization: Bearer TOKEN on every request")
    parser.add_argument("--header", action="append", type=parse_header, default=[], help="an extra header 'Name: value'")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS, help="the MCP revision to force")
    parser.add_argument("--steps", required=True, help="a JSON list of steps, or @FILE")
    args = parser.parse_args()

    text = args.steps
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    try:
        steps = json.loads(text)
    except ValueError as exc:
        parser.error(f"--steps is not JSON: {exc}")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        parser.error("--steps must be a JSON list of objects")

    headers = dict(args.header)
    if args.bearer is not None:
        headers["Authorization"] = f"Bearer {args.bearer}"

    try:
        out = anyio.run(run, args.url, headers, args.protocol, steps)
    except BaseException as exc:  # noqa: BLE001 - the caller always gets one JSON object
        traceback.print_exc(file=sys.stderr)
        crash = f"client crashed: {describe(exc)}"
        out = {
            "protocol": None,
            "connect": {"ok": False, "transport_error": crash},
            "results": [{"ok": False, "transport_error": f"not run: {crash}"} for _ in steps],
        }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
