/**
 * One engine process of `shared_processes_test.ts`: a shared engine
 * (ENGINE.md clause 26) over an SQLite or KV file, with auto sync on and a
 * `watch()` of table `todos`. Every request it sends names it in an
 * `x-holder` header, so the server sees who syncs. It reports JSON lines on
 * stdout (`ready`, `role`, `change`, `put`, `synced`) and takes commands as
 * JSON lines on stdin: `{ "put": { "id", "title" } }`, `{ "sync": true }`.
 * Stdin's end closes it.
 *
 * Usage: deno run -A --unstable-kv tests/_shared_child.ts <sqlite|kv> <path> <url> <holder> <leaseMs> <pollMs>
 *
 * @module
 */

import { SyncEngine } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import { createRestTransport } from "../transport/rest.ts";

const [kind, path, url, holder, leaseText, pollText] = Deno.args;
if (
  kind === undefined || path === undefined || url === undefined ||
  holder === undefined || leaseText === undefined || pollText === undefined
) {
  console.error(
    "usage: _shared_child.ts <sqlite|kv> <path> <url> <holder> <leaseMs> <pollMs>",
  );
  Deno.exit(2);
}

const encoder = new TextEncoder();
function report(line: Record<string, unknown>): void {
  // Synchronous: the line is out before the next await (or a SIGKILL).
  Deno.stdout.writeSync(
    encoder.encode(JSON.stringify({ ...line, at: Date.now() }) + "\n"),
  );
}

const storage: Storage = kind === "kv"
  ? await (await import("../storage/kv.ts")).openKvStorage(path)
  : await (await import("../storage/sqlite.ts")).openSqliteStorage(path);
const transport = createRestTransport({
  baseUrl: url,
  headers: { "x-holder": holder },
  retry: { attempts: 2, baseDelayMs: 5, maxDelayMs: 20 },
});
const engine = new SyncEngine({
  storage,
  transport,
  shared: {
    holder,
    leaseMs: Number(leaseText),
    pollMs: Number(pollText),
  },
});
const todos = engine.table<{ id: string; title: string }>("todos");
engine.on("role", (event) => report({ type: "role", role: event.role }));
engine.on("error", (event) => {
  report({ type: "error", message: event.error.message });
});
const closing = new AbortController();
const watching = (async () => {
  for await (const item of todos.watch({ signal: closing.signal })) {
    if (item.type === "overflow") report({ type: "overflow" });
    else {
      report({
        type: "change",
        id: item.id,
        origin: item.origin,
        title: item.record?.title ?? null,
      });
    }
  }
})();
engine.startAuto({ intervalMs: 300, afterWriteMs: 50 });
report({ type: "ready" });

let buffer = "";
for await (
  const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())
) {
  buffer += chunk;
  let newline: number;
  while ((newline = buffer.indexOf("\n")) >= 0) {
    const command = JSON.parse(buffer.slice(0, newline));
    buffer = buffer.slice(newline + 1);
    if (command.put !== undefined) {
      await todos.put(command.put);
      report({ type: "put", id: command.put.id });
    } else if (command.sync === true) {
      try {
        const result = await engine.sync();
        report({ type: "synced", ok: true, pulled: result.stats.pulled });
      } catch (error) {
        report({ type: "synced", ok: false, message: String(error) });
      }
    }
  }
}
closing.abort();
await watching;
await engine.close();
await transport.close();
await storage.close();
