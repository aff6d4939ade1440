// @modelcontextprotocol/server-everything's own streamable HTTP transport, unchanged, bound to
// 127.0.0.1 on a free port. Its CLI (`mcp-server-everything streamableHttp`) listens on every
// interface on $PORT (default 3001) and cannot be asked for a free port; this launcher makes its
// `listen` bind 127.0.0.1:0 instead and prints `listening on http://127.0.0.1:PORT/mcp` on
// stdout once the socket is bound, and exits when the process that started it is gone (so a
// test binary that ends, or dies, cannot leave it running). Everything else is the package's
// code.
import http from "node:http";

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (...args) {
  const callback = args.find((a) => typeof a === "function");
  this.once("listening", () => {
    const { port } = this.address();
    process.stdout.write(`listening on http://127.0.0.1:${port}/mcp\n`);
  });
  return listen.call(this, { port: 0, host: "127.0.0.1" }, callback);
};

// The process that started this one holds it; once that process is gone (this one is handed to
// another parent), there is nobody left to talk to.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500).unref();

await import("@modelcontextprotocol/server-everything/dist/transports/streamableHttp.js");
