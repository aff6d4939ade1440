"""One MCP client built on the official Python SDK (`mcp` 2.3.0: `mcp.Client` over
`streamable_http_client`, the initialize handshake) that exercises every feature of
`@modelcontextprotocol/server-everything` a client can see, and prints ONE JSON transcript on
stdout. Mandate's tests run it once against the server directly and once through the gateway and
compare the two transcripts feature by feature (crates/mandate/tests/mcp_peers.rs); the
TypeScript SDK's twin is crates/mandate/tests/js/feature_client.mjs, with the same shape.

    python feature_client.py --url URL [--bearer TOKEN] [--only f1,f2] [--step-seconds 15]

The bearer may come from the MCP_BEARER environment variable instead. `--only` runs just the
named features (in their fixed order; connect always runs).

Transcript: {"sdk": "python", "connect": {"ok": true} | {"error": ...},
             "features": {NAME: <data> | {"error": {"code", "message"[, "reason"]}}},
             "handlers": {"sampling": n, "elicitation": n, "roots": bool}}
Every value is normalized so that two runs compare: no JSON-RPC ids, progress tokens, task ids,
timestamps or session ids (a UUID in any string becomes `<uuid>`, and server-everything's
"from session <id>" tails are cut). One failing feature is recorded as data and the next one
runs; every step is bounded. Exit status 0 whenever the JSON was printed, 2 for bad arguments.

The SDK speaks the initialize handshake here (`mode="legacy"`): server-everything is a
2025-11-25 server, and sampling, elicitation, roots, logging/setLevel and resources/subscribe
are that revision's features.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import traceback
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from pydantic import BaseModel

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r".*as of 2026-07-28")

CLIENT_INFO = types.Implementation(name="mandate-peer-test-py-client", version="1.0.0")
ROOT = {"uri": "file:///srv/mandate-peer-root", "name": "peer-root"}
SECOND_ROOT = {"uri": "file:///srv/mandate-peer-second", "name": "second-root"}
SAMPLED_TEXT = "A sampled answer from the test client."
ELICITED = {"name": "Ada Lovelace", "check": True, "email": "ada@example.com", "integer": 7}

SUBSCRIBED = "demo://resource/dynamic/text/1"
QUIET = "demo://resource/dynamic/text/2"
STATIC_DOC = "demo://resource/static/document/features.md"

# ---------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
SESSION_TAIL = re.compile(r"\s*(?:from session|for session|- SessionId)\s+<uuid>")
TIME_KEYS = {"createdAt", "lastUpdatedAt", "timestamp"}


def wire(value: Any) -> Any:
    """A model as the wire had it (aliases, only the fields that were set)."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return value


def norm(value: Any) -> Any:
    """A JSON value with the run-specific parts (ids, times, session ids) taken out."""
    value = wire(value)
    if isinstance(value, str):
        return SESSION_TAIL.sub("", UUID.sub("<uuid>", value)).strip()
    if isinstance(value, list):
        return [norm(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k in sorted(value):
            if k == "progressToken":
                continue
            if k in TIME_KEYS:
                out[k] = "<time>"
            elif k == "taskId":
                out[k] = "<task>"
            else:
                out[k] = norm(value[k])
        return out
    return value


def by_key(items: Any, key: str) -> dict[str, Any]:
    """`items` as an object keyed by each item's `key`, every item normalized."""
    out: dict[str, Any] = {}
    for item in items:
        w = wire(item)
        out[str(w[key])] = norm(w)
    return out


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_data(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MCPError):
        error: dict[str, Any] = {"code": exc.error.code, "message": norm(exc.error.message)}
        # A refusal's `data.reason` (Mandate's gateway says why); the rest of `data` carries ids.
        data = exc.error.data
        if isinstance(data, dict) and isinstance(data.get("reason"), str):
            error["reason"] = data["reason"]
        return {"error": error}
    return {"error": {"code": None, "message": norm(describe(exc))}}


def tool_outcome(result: Any) -> Any:
    """A tool result, whole (normalized), with `isError` always present."""
    r = dict(wire(result))
    r.setdefault("isError", False)
    return norm(r)


# ---------------------------------------------------------------------------------------------
# What the client observes
# ---------------------------------------------------------------------------------------------


class Seen:
    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        self.updated: list[str] = []
        self.sampling: list[Any] = []
        self.elicitation: list[Any] = []
        self.roots = 0
        self.root_list = [ROOT]

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(wire(params))

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
        elif isinstance(message, Exception):
            print(f"client saw an error: {describe(message)}", file=sys.stderr)

    async def on_sampling(self, _ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampling.append(wire(params))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=SAMPLED_TEXT),
            model="mandate-test-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(self, _ctx: Any, params: Any) -> types.ElicitResult:
        self.elicitation.append(wire(params))
        # A task's clarification asks for one of the choices it offers: the first.
        schema = wire(params).get("requestedSchema") or {}
        choices = (schema.get("properties") or {}).get("interpretation", {}).get("oneOf")
        if choices:
            return types.ElicitResult(action="accept", content={"interpretation": choices[0]["const"]})
        return types.ElicitResult(action="accept", content=dict(ELICITED))

    async def on_roots(self, _ctx: Any) -> types.ListRootsResult:
        self.roots += 1
        return types.ListRootsResult(roots=[types.Root(uri=r["uri"], name=r["name"]) for r in self.root_list])


async def until(seconds: float, what: str, probe: Callable[[], Any]) -> Any:
    with anyio.move_on_after(seconds):
        while True:
            v = probe()
            if v:
                return v
            await anyio.sleep(0.02)
    raise TimeoutError(f"{what}: not within {seconds} s")


# ---------------------------------------------------------------------------------------------
# Features, in the order they run
# ---------------------------------------------------------------------------------------------


def features(client: Client, seen: Seen, step: float) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    async def raw(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        # Requests the SDK has no typed call for (2025-11-25 tasks): the session's own
        # dispatcher, so they go over the same connection as everything else.
        return await client.session._dispatcher.send_raw_request(method, params, {"timeout": step})  # noqa: SLF001

    async def call(name: str, arguments: dict[str, Any], **kw: Any) -> Any:
        return await client.call_tool(name, arguments, read_timeout_seconds=step, **kw)

    async def instructions() -> Any:
        text = client.instructions
        return None if text is None else {"length": len(text), "sha256": sha256(text)}

    # Listings whole (every definition by its name: schemas, annotations, execution hints).
    async def tools() -> Any:
        return by_key((await client.list_tools(cache_mode="refresh")).tools, "name")

    async def prompts() -> Any:
        return by_key((await client.list_prompts()).prompts, "name")

    async def resources() -> Any:
        return by_key((await client.list_resources()).resources, "uri")

    async def templates() -> Any:
        return by_key((await client.list_resource_templates()).resource_templates, "uriTemplate")

    async def read_resource() -> Any:
        r = await client.read_resource(STATIC_DOC)
        out = []
        for c in wire(r)["contents"]:
            body = c.get("text", c.get("blob", ""))
            out.append({"uri": c["uri"], "mimeType": c.get("mimeType"), "length": len(body), "sha256": sha256(body)})
        return out

    async def prompt_get() -> Any:
        return norm(await client.get_prompt("args-prompt", {"city": "Paris", "state": "Texas"}))

    async def progress() -> Any:
        notes: list[Any] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            notes.append(norm({k: v for k, v in {"progress": p, "total": total, "message": message}.items() if v is not None}))

        result = await call("trigger-long-running-operation", {"duration": 0.5, "steps": 5}, progress_callback=on_progress)
        return {"result": tool_outcome(result), "notifications": notes}

    async def logging() -> Any:
        # At `error`, the server's info line for this subscribe is dropped by the server; at
        # `info`, the one for the unsubscribe is sent (on the GET stream, after the dropped one
        # would have been): what arrives is exactly the second.
        def quiet(entry: dict[str, Any]) -> bool:
            return isinstance(entry.get("data"), str) and QUIET in entry["data"]

        set_error = norm(await client.set_logging_level("error"))
        await client.subscribe_resource(QUIET)
        set_info = norm(await client.set_logging_level("info"))
        await client.unsubscribe_resource(QUIET)
        await until(step, "the log line of the unsubscribe", lambda: any(quiet(e) and "Unsubscribe" in e["data"] for e in seen.logs))
        return {"set_error": set_error, "set_info": set_info, "messages": norm([e for e in seen.logs if quiet(e)])}

    async def sampling() -> Any:
        before = len(seen.sampling)
        result = await call("trigger-sampling-request", {"prompt": "Say hello", "maxTokens": 42})
        return {"requests": norm(seen.sampling[before:]), "result": tool_outcome(result)}

    async def elicitation() -> Any:
        before = len(seen.elicitation)
        result = await call("trigger-elicitation-request", {})
        return {"requests": norm(seen.elicitation[before:]), "result": tool_outcome(result)}

    async def roots() -> Any:
        # The server asks for the roots by itself soon after initialization (on the GET
        # stream), and again from the tool if it has none yet.
        result = await call("get-roots-list", {})
        return {"answered": seen.roots > 0, "result": tool_outcome(result)}

    async def roots_list_changed() -> Any:
        # The client says its roots changed; the server asks for them again (on the GET stream).
        asked = seen.roots
        seen.root_list = [ROOT, SECOND_ROOT]
        await client.send_roots_list_changed()
        await until(step, "the server asking for the roots again", lambda: seen.roots > asked)
        with anyio.move_on_after(step):
            while True:
                result = tool_outcome(await call("get-roots-list", {}))
                if "(2 total)" in json.dumps(result):
                    break
                await anyio.sleep(0.05)
        return {"asked_again": seen.roots > asked, "result": result}

    async def completion() -> Any:
        prompt = types.PromptReference(type="ref/prompt", name="completable-prompt")
        template = types.ResourceTemplateReference(type="ref/resource", uri="demo://resource/dynamic/text/{resourceId}")
        return {
            "prompt": await part(lambda: _norm_await(client.complete(prompt, {"name": "department", "value": "E"}))),
            "prompt_with_context": await part(
                lambda: _norm_await(client.complete(prompt, {"name": "name", "value": ""}, {"department": "Sales"}))
            ),
            "resource_template": await part(lambda: _norm_await(client.complete(template, {"name": "resourceId", "value": "7"}))),
        }

    async def subscribe() -> Any:
        subscribed = await part(lambda: _norm_await(client.subscribe_resource(SUBSCRIBED)))
        if "error" in subscribed:
            return {"subscribe": subscribed}
        # The server sends the first update at once (on the GET stream), then every 5 s.
        started = tool_outcome(await call("toggle-subscriber-updates", {}))

        async def updated() -> Any:
            await until(step, f"notifications/resources/updated for {SUBSCRIBED}", lambda: SUBSCRIBED in seen.updated)
            return sorted(set(seen.updated))

        got = await part(updated)
        stopped = tool_outcome(await call("toggle-subscriber-updates", {}))
        unsubscribed = await part(lambda: _norm_await(client.unsubscribe_resource(SUBSCRIBED)))
        return {"subscribe": subscribed, "toggled": [started["isError"], stopped["isError"]], "updated": got, "unsubscribe": unsubscribed}

    async def tasks() -> Any:
        created = await raw(
            "tools/call",
            {"name": "simulate-research-query", "arguments": {"topic": "gateways", "ambiguous": False}, "task": {"ttl": 60000}},
        )
        task = created["task"]
        task_id = task["taskId"]
        with anyio.fail_after(step):
            while task["status"] not in ("completed", "failed", "cancelled"):
                await anyio.sleep(0.1)
                task = await raw("tasks/get", {"taskId": task_id})
        result = await raw("tasks/result", {"taskId": task_id})
        listed = await raw("tasks/list", None)
        # A second task, cancelled while it works.
        doomed = await raw(
            "tools/call",
            {"name": "simulate-research-query", "arguments": {"topic": "cancelled", "ambiguous": False}, "task": {"ttl": 60000}},
        )
        doomed_id = doomed["task"]["taskId"]

        async def cancel_it() -> Any:
            return norm((await raw("tasks/cancel", {"taskId": doomed_id}))["status"])

        async def status_after() -> Any:
            return (await raw("tasks/get", {"taskId": doomed_id}))["status"]

        cancelled = await part(cancel_it)
        after = await part(status_after)
        return {
            "cancel": {"answered": cancelled, "status_after": after},
            "created": {k: created["task"].get(k) for k in ("status", "ttl", "pollInterval")},
            "final_status": task["status"],
            "result": tool_outcome(types.CallToolResult.model_validate(result)),
            "listed": any(t.get("taskId") == task_id for t in listed.get("tasks", [])),
        }

    async def task_elicitation() -> Any:
        # An ambiguous research task asks the client to clarify: the elicitation is queued for
        # the task and delivered on the stream of the client's tasks/result, which then answers.
        before = len(seen.elicitation)
        created = await raw(
            "tools/call",
            {"name": "simulate-research-query", "arguments": {"topic": "python", "ambiguous": True}, "task": {"ttl": 60000}},
        )
        result = await raw("tasks/result", {"taskId": created["task"]["taskId"]})
        return {"requests": norm(seen.elicitation[before:]), "result": tool_outcome(types.CallToolResult.model_validate(result))}

    async def cancel() -> Any:
        # A long call, abandoned after its first progress notification: the SDK sends
        # notifications/cancelled for it; the connection goes on working.
        progressed = anyio.Event()
        outcome: dict[str, Any] = {}

        async def on_progress(_p: float, _t: float | None, _m: str | None) -> None:
            progressed.set()

        async def long_call() -> None:
            try:
                result = await call("trigger-long-running-operation", {"duration": 60, "steps": 600}, progress_callback=on_progress)
                outcome.update({"settled": "resolved", "value": tool_outcome(result)})
            except anyio.get_cancelled_exc_class():
                outcome["settled"] = "cancelled"
                raise
            except Exception as exc:  # noqa: BLE001 - recorded
                outcome.update({"settled": "rejected", **error_data(exc)})

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            with anyio.move_on_after(step):
                await progressed.wait()
            tg.cancel_scope.cancel()
        after = tool_outcome(await call("echo", {"message": "still here"}))
        return {"progressed_before_abort": progressed.is_set(), "call": outcome, "echo_after": after}

    return [
        ("server_info", lambda: _value(norm(client.server_info))),
        ("capabilities", lambda: _value(norm(client.server_capabilities))),
        ("instructions", instructions),
        ("ping", lambda: _norm_await(client.send_ping())),
        ("tools", tools),
        ("prompts", prompts),
        ("resources", resources),
        ("resource_templates", templates),
        ("echo", lambda: _outcome_await(call("echo", {"message": "hello through Mandate"}))),
        # Checked by the SDK against the tool's output schema, from the listing.
        ("structured_content", lambda: _outcome_await(call("get-structured-content", {"location": "Chicago"}))),
        ("image_content", lambda: _outcome_await(call("get-tiny-image", {}))),
        ("read_resource", read_resource),
        ("prompt_get", prompt_get),
        ("progress", progress),
        ("logging", logging),
        ("sampling", sampling),
        ("elicitation", elicitation),
        ("roots", roots),
        ("roots_list_changed", roots_list_changed),
        ("completion", completion),
        ("subscribe", subscribe),
        ("tasks", tasks),
        ("task_elicitation", task_elicitation),
        ("cancel", cancel),
    ]


async def part(run: Callable[[], Awaitable[Any]]) -> Any:
    """The value of `run()`, or its failure as data: one part of a feature failing spares the rest."""
    try:
        return await run()
    except Exception as exc:  # noqa: BLE001 - recorded as data
        return error_data(exc)


async def _value(v: Any) -> Any:
    return v


async def _norm_await(a: Awaitable[Any]) -> Any:
    return norm(await a)


async def _outcome_await(a: Awaitable[Any]) -> Any:
    return tool_outcome(await a)


# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------


async def run(url: str, bearer: str | None, only: set[str] | None, step: float) -> dict[str, Any]:
    out: dict[str, Any] = {"sdk": "python", "connect": None, "features": {}, "handlers": {}}
    seen = Seen()
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    with anyio.move_on_after(step * 50) as overall:
        try:
            async with AsyncExitStack() as stack:
                try:
                    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(step))
                    await stack.enter_async_context(http)
                    client = Client(
                        streamable_http_client(url, http_client=http),
                        mode="legacy",
                        cache=None,
                        read_timeout_seconds=step,
                        client_info=CLIENT_INFO,
                        sampling_callback=seen.on_sampling,
                        elicitation_callback=seen.on_elicitation,
                        list_roots_callback=seen.on_roots,
                        logging_callback=seen.on_log,
                        message_handler=seen.on_message,
                    )
                    # Entering sends initialize (bounded by read_timeout_seconds); no cancel
                    # scope may wrap it, since the SDK's task groups outlive this statement.
                    await stack.enter_async_context(client)
                    out["connect"] = {"ok": True}
                except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
                    out["connect"] = error_data(exc)
                if out["connect"].get("ok"):
                    for name, feature in features(client, seen, step):
                        if only is not None and name not in only:
                            continue
                        try:
                            with anyio.fail_after(step * 2):
                                out["features"][name] = await feature()
                        except Exception as exc:  # noqa: BLE001 - recorded as data
                            out["features"][name] = error_data(exc)
        except Exception as exc:  # noqa: BLE001 - the transport's task group failed under a request
            out["close_error"] = describe(exc)
    if overall.cancelled_caught:
        out["close_error"] = "timed out"
    out["handlers"] = {"sampling": len(seen.sampling), "elicitation": len(seen.elicitation), "roots": seen.roots > 0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Exercise server-everything's features with the official Python SDK's client.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--bearer", default=os.environ.get("MCP_BEARER") or None)
    parser.add_argument("--only", help="comma-separated feature names")
    parser.add_argument("--step-seconds", type=float, default=15.0)
    args = parser.parse_args()
    only = {f for f in args.only.split(",") if f} if args.only else None
    try:
        out = anyio.run(run, args.url, args.bearer, only, args.step_seconds)
    except BaseException as exc:  # noqa: BLE001 - the caller always gets one JSON object
        traceback.print_exc(file=sys.stderr)
        out = {"sdk": "python", "connect": {"error": {"code": None, "message": f"client crashed: {describe(exc)}"}}, "features": {}, "handlers": {}}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
