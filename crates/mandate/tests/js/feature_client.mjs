// One MCP client built on the official TypeScript SDK (`@modelcontextprotocol/sdk` Client over
// StreamableHTTPClientTransport) that exercises every feature of
// `@modelcontextprotocol/server-everything` a client can see, and prints ONE JSON transcript on
// stdout. Mandate's tests run it once against the server directly and once through the gateway
// and compare the two transcripts feature by feature (crates/mandate/tests/mcp_peers.rs); the
// Python SDK's twin is crates/mandate/tests/py/feature_client.py, with the same shape.
//
//     node feature_client.mjs --url URL [--bearer TOKEN] [--only f1,f2] [--step-ms 15000]
//
// The bearer may come from the MCP_BEARER environment variable instead. `--only` runs just the
// named features (in their fixed order; connect always runs).
//
// Transcript: {"sdk": "typescript", "connect": {"ok": true} | {"error": ...},
//              "features": {NAME: <data> | {"error": {"code", "message"[, "reason"]}}},
//              "handlers": {"sampling": n, "elicitation": n, "roots": n}}
// Every value is normalized so that two runs compare: no JSON-RPC ids, progress tokens, task
// ids, timestamps or session ids (a UUID in any string becomes `<uuid>`, and server-everything's
// "from session <id>" tails are cut). One failing feature is recorded as data and the next one
// runs; every step is bounded (--step-ms). Exit status 0 whenever the JSON was printed.

import { createHash } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CallToolResultSchema,
  CreateMessageRequestSchema,
  CreateTaskResultSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

function parseArgs(argv) {
  const out = { url: null, bearer: process.env.MCP_BEARER || null, only: null, stepMs: 15000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--url") out.url = next();
    else if (a === "--bearer") out.bearer = next();
    else if (a === "--only") out.only = new Set(next().split(",").filter(Boolean));
    else if (a === "--step-ms") out.stepMs = Number(next());
    else usage(`unknown argument ${a}`);
  }
  if (!out.url) usage("--url is required");
  if (!Number.isFinite(out.stepMs) || out.stepMs <= 0) usage("--step-ms must be a positive number");
  return out;
}

function usage(message) {
  process.stderr.write(`feature_client.mjs: ${message}\nusage: node feature_client.mjs --url URL [--bearer TOKEN] [--only a,b] [--step-ms MS]\n`);
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const STEP_MS = args.stepMs;

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;
const SESSION_TAIL = /\s*(?:from session|for session|- SessionId)\s+<uuid>/g;
const TIME_KEYS = new Set(["createdAt", "lastUpdatedAt", "timestamp"]);

/** A JSON value with the run-specific parts (ids, times, session ids) taken out. */
function norm(value) {
  if (typeof value === "string") return value.replace(UUID, "<uuid>").replace(SESSION_TAIL, "").trim();
  if (Array.isArray(value)) return value.map(norm);
  if (value && typeof value === "object") {
    const out = {};
    for (const k of Object.keys(value).sort()) {
      if (k === "progressToken") continue;
      if (TIME_KEYS.has(k)) out[k] = "<time>";
      else if (k === "taskId") out[k] = "<task>";
      else out[k] = norm(value[k]);
    }
    return out;
  }
  return value;
}

function sha256(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/** An error as transcript data: the JSON-RPC code (if any) and the message. */
function errorData(e) {
  if (e && typeof e === "object") {
    const code = typeof e.code === "number" ? e.code : null;
    const error = { code, message: norm(String(e.message ?? e)) };
    // A refusal's `data.reason` (Mandate's gateway says why); the rest of `data` carries ids.
    if (typeof e.data?.reason === "string") error.reason = e.data.reason;
    return { error };
  }
  return { error: { code: null, message: norm(String(e)) } };
}

/** `promise`, or a rejection after `ms` milliseconds. */
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves once `probe()` is truthy (checked every 20 ms), or rejects after `ms`. */
async function until(ms, what, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The value of `run()`, or its failure as data: one part of a feature failing spares the rest. */
async function part(run) {
  try {
    return await run();
  } catch (e) {
    return errorData(e);
  }
}

/** `items` as an object keyed by each item's `key`, every item normalized. */
function byKey(items, key) {
  const out = {};
  for (const item of items) out[item[key]] = norm(item);
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const opts = (extra = {}) => ({ timeout: STEP_MS, ...extra });

// ---------------------------------------------------------------------------------------------
// The client and what it observes
// ---------------------------------------------------------------------------------------------

const ROOT = { uri: "file:///srv/mandate-peer-root", name: "peer-root" };
const SECOND_ROOT = { uri: "file:///srv/mandate-peer-second", name: "second-root" };
const SAMPLED_TEXT = "A sampled answer from the test client.";
const ELICITED = { name: "Ada Lovelace", check: true, email: "ada@example.com", integer: 7 };

const seen = {
  logs: [], // every notifications/message params, in arrival order
  updated: [], // every notifications/resources/updated uri, in arrival order
  sampling: [], // every sampling/createMessage params the handler was given
  elicitation: [], // every elicitation/create params the handler was given
  roots: 0, // roots/list requests answered
};

const client = new Client(
  { name: "mandate-peer-test-ts-client", version: "1.0.0" },
  { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } },
);
client.onerror = (e) => process.stderr.write(`client error: ${e?.message ?? e}\n`);
client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
  seen.logs.push(n.params);
});
client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
  seen.updated.push(n.params.uri);
});
client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
  seen.sampling.push(req.params);
  return { model: "mandate-test-model", role: "assistant", content: { type: "text", text: SAMPLED_TEXT }, stopReason: "endTurn" };
});
client.setRequestHandler(ElicitRequestSchema, async (req) => {
  seen.elicitation.push(req.params);
  // A task's clarification asks for one of the choices it offers: the first.
  const choices = req.params.requestedSchema?.properties?.interpretation?.oneOf;
  if (choices) return { action: "accept", content: { interpretation: choices[0].const } };
  return { action: "accept", content: ELICITED };
});
let roots = [ROOT];
client.setRequestHandler(ListRootsRequestSchema, async () => {
  seen.roots += 1;
  return { roots };
});

const headers = args.bearer ? { Authorization: `Bearer ${args.bearer}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(args.url), { requestInit: { headers } });

/** A tool result, whole (normalized), with `isError` always present. */
function toolOutcome(result) {
  return norm({ ...result, isError: result.isError ?? false });
}

async function callTool(name, toolArgs, extra = {}) {
  return client.callTool({ name, arguments: toolArgs }, CallToolResultSchema, opts(extra));
}

// ---------------------------------------------------------------------------------------------
// Features, in the order they run
// ---------------------------------------------------------------------------------------------

const SUBSCRIBED = "demo://resource/dynamic/text/1";
const QUIET = "demo://resource/dynamic/text/2";
const STATIC_DOC = "demo://resource/static/document/features.md";

const features = [
  ["server_info", async () => norm(client.getServerVersion() ?? null)],
  ["capabilities", async () => norm(client.getServerCapabilities() ?? null)],
  [
    "instructions",
    async () => {
      const text = client.getInstructions();
      return text == null ? null : { length: text.length, sha256: sha256(text) };
    },
  ],
  ["ping", async () => norm(await client.ping(opts()))],
  // Listings whole (every definition by its name: schemas, annotations, execution hints).
  ["tools", async () => byKey((await client.listTools(undefined, opts())).tools, "name")],
  ["prompts", async () => byKey((await client.listPrompts(undefined, opts())).prompts, "name")],
  ["resources", async () => byKey((await client.listResources(undefined, opts())).resources, "uri")],
  ["resource_templates", async () => byKey((await client.listResourceTemplates(undefined, opts())).resourceTemplates, "uriTemplate")],
  ["echo", async () => toolOutcome(await callTool("echo", { message: "hello through Mandate" }))],
  // Checked by the SDK against the tool's output schema, from the listing.
  ["structured_content", async () => toolOutcome(await callTool("get-structured-content", { location: "Chicago" }))],
  ["image_content", async () => toolOutcome(await callTool("get-tiny-image", {}))],
  [
    "read_resource",
    async () => {
      const r = await client.readResource({ uri: STATIC_DOC }, opts());
      return r.contents.map((c) => ({ uri: c.uri, mimeType: c.mimeType, length: (c.text ?? c.blob ?? "").length, sha256: sha256(c.text ?? c.blob ?? "") }));
    },
  ],
  ["prompt_get", async () => norm(await client.getPrompt({ name: "args-prompt", arguments: { city: "Paris", state: "Texas" } }, opts()))],
  [
    "progress",
    async () => {
      const notes = [];
      let eventIds = 0;
      const result = await callTool(
        "trigger-long-running-operation",
        { duration: 0.5, steps: 5 },
        { onprogress: (p) => notes.push(norm(p)), onresumptiontoken: () => (eventIds += 1) },
      );
      // Whether the call's stream carried SSE event ids: what the SDK would resume from
      // (Last-Event-ID) had the stream broken.
      return { result: toolOutcome(result), notifications: notes, resumable: eventIds > 0 };
    },
  ],
  [
    "logging",
    async () => {
      // At `error`, the server's info line for this subscribe is dropped by the server; at
      // `info`, the one for the unsubscribe is sent (on the GET stream, after the dropped one
      // would have been): what arrives is exactly the second.
      const quiet = (l) => typeof l.data === "string" && l.data.includes(QUIET);
      const errorLevel = norm(await client.setLoggingLevel("error", opts()));
      await client.subscribeResource({ uri: QUIET }, opts());
      const infoLevel = norm(await client.setLoggingLevel("info", opts()));
      await client.unsubscribeResource({ uri: QUIET }, opts());
      await until(STEP_MS, "the log line of the unsubscribe", () => seen.logs.some((l) => quiet(l) && l.data.includes("Unsubscribe")));
      return { set_error: errorLevel, set_info: infoLevel, messages: norm(seen.logs.filter(quiet)) };
    },
  ],
  [
    "sampling",
    async () => {
      const before = seen.sampling.length;
      const result = await callTool("trigger-sampling-request", { prompt: "Say hello", maxTokens: 42 });
      return { requests: norm(seen.sampling.slice(before)), result: toolOutcome(result) };
    },
  ],
  [
    "elicitation",
    async () => {
      const before = seen.elicitation.length;
      const result = await callTool("trigger-elicitation-request", {});
      return { requests: norm(seen.elicitation.slice(before)), result: toolOutcome(result) };
    },
  ],
  [
    "roots",
    async () => {
      // The server asks for the roots by itself soon after initialization (on the GET stream),
      // and again from the tool if it has none yet.
      const result = await callTool("get-roots-list", {});
      return { answered: seen.roots > 0, result: toolOutcome(result) };
    },
  ],
  [
    "roots_list_changed",
    async () => {
      // The client says its roots changed; the server asks for them again (on the GET stream).
      const asked = seen.roots;
      roots = [ROOT, SECOND_ROOT];
      await client.sendRootsListChanged();
      await until(STEP_MS, "the server asking for the roots again", () => seen.roots > asked);
      // The tool shows the roots the server holds: poll it until it holds the new ones.
      let result = toolOutcome(await callTool("get-roots-list", {}));
      const deadline = Date.now() + STEP_MS;
      while (!JSON.stringify(result).includes("(2 total)") && Date.now() < deadline) {
        await sleep(50);
        result = toolOutcome(await callTool("get-roots-list", {}));
      }
      return { asked_again: seen.roots > asked, result };
    },
  ],
  [
    "completion",
    async () => ({
      prompt: await part(async () =>
        norm(await client.complete({ ref: { type: "ref/prompt", name: "completable-prompt" }, argument: { name: "department", value: "E" } }, opts())),
      ),
      prompt_with_context: await part(async () =>
        norm(
          await client.complete(
            {
              ref: { type: "ref/prompt", name: "completable-prompt" },
              argument: { name: "name", value: "" },
              context: { arguments: { department: "Sales" } },
            },
            opts(),
          ),
        ),
      ),
      resource_template: await part(async () =>
        norm(
          await client.complete(
            { ref: { type: "ref/resource", uri: "demo://resource/dynamic/text/{resourceId}" }, argument: { name: "resourceId", value: "7" } },
            opts(),
          ),
        ),
      ),
    }),
  ],
  [
    "subscribe",
    async () => {
      const subscribed = await part(async () => norm(await client.subscribeResource({ uri: SUBSCRIBED }, opts())));
      if (subscribed.error) return { subscribe: subscribed };
      // The server sends the first update at once (on the GET stream), then every 5 s.
      const started = toolOutcome(await callTool("toggle-subscriber-updates", {}));
      const updated = await part(async () => {
        await until(STEP_MS, `notifications/resources/updated for ${SUBSCRIBED}`, () => seen.updated.includes(SUBSCRIBED));
        return [...new Set(seen.updated)].sort();
      });
      const stopped = toolOutcome(await callTool("toggle-subscriber-updates", {}));
      const unsubscribed = await part(async () => norm(await client.unsubscribeResource({ uri: SUBSCRIBED }, opts())));
      return { subscribe: subscribed, toggled: [started.isError, stopped.isError], updated, unsubscribe: unsubscribed };
    },
  ],
  [
    "tasks",
    async () => {
      const created = await client.request(
        { method: "tools/call", params: { name: "simulate-research-query", arguments: { topic: "gateways", ambiguous: false } } },
        CreateTaskResultSchema,
        opts({ task: { ttl: 60000 } }),
      );
      const id = created.task.taskId;
      let task = created.task;
      const deadline = Date.now() + STEP_MS;
      while (!["completed", "failed", "cancelled"].includes(task.status)) {
        if (Date.now() > deadline) throw new Error(`task still ${task.status} after ${STEP_MS} ms`);
        await sleep(100);
        task = await client.experimental.tasks.getTask(id, opts());
      }
      const result = await client.experimental.tasks.getTaskResult(id, CallToolResultSchema, opts());
      const listed = await client.experimental.tasks.listTasks(undefined, opts());
      // A second task, cancelled while it works.
      const doomed = await client.request(
        { method: "tools/call", params: { name: "simulate-research-query", arguments: { topic: "cancelled", ambiguous: false } } },
        CreateTaskResultSchema,
        opts({ task: { ttl: 60000 } }),
      );
      const cancelled = await part(async () => norm((await client.experimental.tasks.cancelTask(doomed.task.taskId, opts())).status));
      const after = await part(async () => (await client.experimental.tasks.getTask(doomed.task.taskId, opts())).status);
      return {
        created: { status: created.task.status, ttl: created.task.ttl, pollInterval: created.task.pollInterval },
        final_status: task.status,
        result: toolOutcome(result),
        listed: listed.tasks.some((t) => t.taskId === id),
        cancel: { answered: cancelled, status_after: after },
      };
    },
  ],
  [
    "task_elicitation",
    async () => {
      // An ambiguous research task asks the client to clarify: the elicitation is queued for the
      // task and delivered on the stream of the client's tasks/result, which then answers.
      const before = seen.elicitation.length;
      const created = await client.request(
        { method: "tools/call", params: { name: "simulate-research-query", arguments: { topic: "python", ambiguous: true } } },
        CreateTaskResultSchema,
        opts({ task: { ttl: 60000 } }),
      );
      const result = await client.experimental.tasks.getTaskResult(created.task.taskId, CallToolResultSchema, opts());
      return { requests: norm(seen.elicitation.slice(before)), result: toolOutcome(result) };
    },
  ],
  [
    "cancel",
    async () => {
      // A long call, abandoned after its first progress notification: the SDK sends
      // notifications/cancelled and rejects the call; the connection goes on working.
      const controller = new AbortController();
      let progressed = 0;
      const call = callTool(
        "trigger-long-running-operation",
        { duration: 60, steps: 600 },
        {
          signal: controller.signal,
          onprogress: () => {
            progressed += 1;
            if (progressed === 1) controller.abort("the test gave up on this call");
          },
        },
      );
      let outcome;
      try {
        outcome = { settled: "resolved", value: toolOutcome(await call) };
      } catch (e) {
        outcome = { settled: "rejected", ...errorData(e) };
      }
      const after = toolOutcome(await callTool("echo", { message: "still here" }));
      return { progressed_before_abort: progressed > 0, call: outcome, echo_after: after };
    },
  ],
];

// ---------------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------------

async function main() {
  const out = { sdk: "typescript", connect: null, features: {}, handlers: {} };
  try {
    await within(STEP_MS, "connect", client.connect(transport, opts()));
    out.connect = { ok: true };
  } catch (e) {
    out.connect = errorData(e);
  }
  if (out.connect.ok) {
    for (const [name, run] of features) {
      if (args.only && !args.only.has(name)) continue;
      try {
        out.features[name] = await within(STEP_MS * 2, name, run());
      } catch (e) {
        out.features[name] = errorData(e);
      }
    }
  }
  out.handlers = { sampling: seen.sampling.length, elicitation: seen.elicitation.length, roots: seen.roots > 0 };
  try {
    await within(STEP_MS, "close", (async () => {
      await transport.terminateSession().catch(() => {});
      await client.close();
    })());
  } catch (e) {
    out.close_error = String(e?.message ?? e);
  }
  return out;
}

let out;
try {
  out = await main();
} catch (e) {
  out = { sdk: "typescript", connect: { error: { code: null, message: `client crashed: ${e?.stack ?? e}` } }, features: {}, handlers: {} };
}
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
