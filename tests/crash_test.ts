/**
 * Proof that nothing is lost: a child process writes and syncs against the
 * reference server while this process kills it with SIGKILL at seeded
 * random moments; after every kill the storage is reopened and checked.
 * Then two processes share one store and sync concurrently.
 *
 * `CRASH_KILLS` (or `deno test -A tests/crash_test.ts -- --kills=200`) sets
 * the kills per storage (default 30); `CRASH_SEED` replays a run;
 * `CRASH_STORAGES=sqlite` limits the storages.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import type { JsonObject } from "../src/json.ts";
import type {
  Storage,
  StoredOp,
  StoredRecord,
  Versioned,
} from "../src/storage.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer } from "../server/mod.ts";
import { withTimeout } from "./_timeout.ts";

const KILLS = Number(
  Deno.args.find((arg) => arg.startsWith("--kills="))?.slice(
    "--kills=".length,
  ) ??
    Deno.env.get("CRASH_KILLS") ?? 30,
);
const SEED = Number(
  Deno.env.get("CRASH_SEED") ?? Math.floor(Math.random() * 2 ** 31),
);
const CHILD = new URL("./_crash_child.ts", import.meta.url).pathname;
console.log(
  `crash tests: seed=${SEED} kills=${KILLS} (replay with CRASH_SEED=${SEED})`,
);

type Kind = "sqlite" | "kv";

function prng(seed: number): () => number {
  let state = seed >>> 0;
  return function next(): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A reference server that logs every write it applied (not replayed). */
function startLoggingServer() {
  const server = createSyncServer();
  const applied = new Map<string, number>();
  const log: string[] = [];
  const count = (key: string | null): void => {
    if (key !== null) applied.set(key, (applied.get(key) ?? 0) + 1);
  };
  const http = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen() {},
  }, async (request) => {
    const key = request.headers.get("idempotency-key");
    const isBatch = new URL(request.url).pathname === "/batch";
    const sent = request.method === "GET" ? "" : await request.clone().text();
    const response = await server.fetch(request);
    if (request.method === "GET") return response;
    const body = await response.text();
    if (isBatch && response.ok) {
      const ops = JSON.parse(sent).ops ?? [];
      for (const [i, result] of (JSON.parse(body).results ?? []).entries()) {
        const op = ops[i] ?? {};
        log.push(
          `${op.opId} ${op.id} ${op.type} base=${op.baseUpdatedAt} force=${op.force} v=${op.payload?.v} -> ${result.status}${
            result.replayed ? " replayed" : ""
          } at=${result.record?.updated_at} rv=${result.record?.v}`,
        );
        if (result.status >= 200 && result.status < 300 && !result.replayed) {
          count(result.opId);
        }
      }
    } else if (isBatch) {
      log.push(`batch -> ${response.status}`);
    } else {
      log.push(
        `${key} ${request.method} ${
          new URL(request.url).pathname
        } -> ${response.status}`,
      );
    }
    if (
      response.ok && response.headers.get("idempotent-replayed") !== "true"
    ) {
      count(key);
    }
    return new Response(body, {
      status: response.status,
      headers: response.headers,
    });
  });
  return {
    url: `http://127.0.0.1:${http.addr.port}`,
    applied,
    log,
    async records(): Promise<Map<string, JsonObject>> {
      const response = await server.fetch(
        new Request(`http://server/items?limit=1000`),
      );
      const page = await response.json();
      return new Map(page.items.map((item: JsonObject) => [item.id, item]));
    },
    async [Symbol.asyncDispose]() {
      await http.shutdown();
      await server.close();
    },
  };
}

async function open(kind: Kind, path: string): Promise<Storage> {
  return kind === "kv"
    ? await (await import("../storage/kv.ts")).openKvStorage(path)
    : await (await import("../storage/sqlite.ts")).openSqliteStorage(path);
}

interface Committed {
  readonly id: string;
  readonly v: string;
  readonly deleted: boolean;
}

/** Orders values `g<generation>:<n>` (or `<writer>:<n>` of one writer). */
function order(v: unknown): [number, number] {
  const [writer, n] = String(v).split(":");
  return [Number(writer?.replace(/^\D+/, "") || 0), Number(n)];
}

function atLeast(v: unknown, than: string): boolean {
  const [g1, n1] = order(v);
  const [g2, n2] = order(than);
  return g1 > g2 || (g1 === g2 && n1 >= n2);
}

/** Spawns a child and collects its report lines as they come. */
function spawnChild(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", CHILD, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: Record<string, unknown>[] = [];
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => ready = resolve);
  const reading = (async () => {
    let buffer = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
        lines.push(line);
        if (line.type === "ready") ready();
      }
    }
  })();
  const stderr = new Response(child.stderr).text();
  return { child, lines, isReady, reading, stderr };
}

/** A record, its ops and the server's copy, for a failure's message. */
function describeLocal(
  record: StoredRecord,
  ops: readonly Versioned<StoredOp>[],
  server: JsonObject | undefined,
): string {
  return `record: ${
    JSON.stringify({
      ...record,
      data: record.data.v,
      base: record.base && {
        v: record.base.data.v,
        at: record.base.updatedAt,
        deleted: record.base.deleted,
      },
    })
  }\nops: ${
    JSON.stringify(ops.map((o) => ({
      ...o.value,
      payload: o.value.payload?.v,
      base: o.value.base?.v,
    })))
  }\nserver: ${JSON.stringify(server)}`;
}

/** Checks the invariants of a store after its writer died. */
async function verify(
  storage: Storage,
  committed: ReadonlyMap<string, Committed>,
  uncertain: ReadonlySet<string>,
  serverRecords: ReadonlyMap<string, JsonObject>,
  context: string,
): Promise<void> {
  for (const [id, last] of committed) {
    const [entry] = await storage.getRecords("items", [id]);
    const record = entry?.value;
    if (record === undefined) {
      // A write after the last reported one may have committed unreported.
      if (uncertain.has(id)) continue;
      // Only a record created and deleted before any push leaves no trace.
      assert.ok(
        last.deleted,
        `${context}: committed write ${last.v} of ${id} is lost`,
      );
      continue;
    }
    if (uncertain.has(id)) {
      // Its last write may or may not have landed: only the outbox/server
      // invariant below holds for sure.
    } else if (record.deleted) {
      if (!(last.deleted || atLeast(record.data.v, last.v))) {
        const ops = await storage.listOps({ kinds: ["items"], id });
        assert.fail(
          `${context}: ${id} is deleted but its last committed write ${last.v} was not a delete\n` +
            describeLocal(record, ops, serverRecords.get(id)),
        );
      }
    } else {
      if (
        !atLeast(record.data.v, last.v) ||
        (last.deleted && record.data.v === last.v)
      ) {
        const ops = await storage.listOps({ kinds: ["items"], id });
        assert.fail(
          `${context}: ${id} holds ${record.data.v}, older than committed ${last.v}\n` +
            describeLocal(record, ops, serverRecords.get(id)),
        );
      }
    }
    // Either queued in the outbox or on the server.
    if (record.lastOpId !== null) {
      const [op] = await storage.getOps([record.lastOpId]);
      assert.ok(
        op !== undefined,
        `${context}: ${id}'s op ${record.lastOpId} is missing`,
      );
    } else {
      const server = serverRecords.get(id);
      assert.ok(
        server !== undefined,
        `${context}: ${id} is neither queued nor on the server`,
      );
      assert.equal(
        server.deleted_at !== undefined,
        record.deleted,
        `${context}: ${id} deletion`,
      );
      if (!record.deleted) {
        assert.equal(
          server.v,
          record.data.v,
          `${context}: ${id} differs from the server`,
        );
      }
    }
  }
}

function assertAppliedOnce(
  applied: ReadonlyMap<string, number>,
  context: string,
): void {
  for (const [key, times] of applied) {
    assert.equal(
      times,
      1,
      `${context}: the server applied ${key} ${times} times`,
    );
  }
}

/** A final sync from this process: everything reaches the server. */
async function drain(storage: Storage, url: string): Promise<void> {
  await using transport = createRestTransport({ baseUrl: url });
  await using engine = new SyncEngine({ storage, transport });
  engine.table("items");
  await engine.sync();
  await engine.sync();
  assert.equal(await engine.outbox.count(), 0, "the outbox drained");
}

async function assertConverged(
  storage: Storage,
  server: ReturnType<typeof startLoggingServer>,
): Promise<void> {
  const records = await server.records();
  const local = await storage.listRecords("items", { includeDeleted: true });
  for (const { value } of local) {
    const remote = records.get(value.id);
    assert.ok(remote !== undefined, `${value.id} never reached the server`);
    assert.equal(
      remote.deleted_at !== undefined,
      value.deleted,
      `${value.id} deletion`,
    );
    if (!value.deleted) {
      assert.equal(remote.v, value.data.v, `${value.id} value`);
    }
  }
}

const KINDS = (Deno.env.get("CRASH_STORAGES") ?? "sqlite,kv").split(
  ",",
) as Kind[];

for (const kind of KINDS) {
  // Each kill starts a Deno process (0.5 to 1 s on a loaded 2-core
  // machine): the default 30 s is too tight for 30 of them.
  Deno.test(
    `crash: ${kind} loses no committed write across ${KILLS} SIGKILLs`,
    withTimeout(90_000, async () => {
      const random = prng(SEED ^ (kind === "kv" ? 0x5bd1e995 : 0));
      const dir = await Deno.makeTempDir({ prefix: `crash-${kind}-` });
      const path = `${dir}/store.${kind === "kv" ? "kv" : "sqlite"}`;
      await using server = startLoggingServer();
      const committed = new Map<string, Committed>();
      const uncertain = new Set<string>();
      const history: string[] = [];
      try {
        for (let generation = 1; generation <= KILLS; generation++) {
          const context = `${kind} kill ${generation} (seed ${SEED})`;
          const run = spawnChild([
            kind,
            path,
            server.url,
            `g${generation}`,
            String(Math.floor(random() * 2 ** 31)),
          ]);
          await Promise.race([
            run.isReady,
            run.child.status.then(async () => {
              throw new Error(
                `${context}: the child exited early: ${await run.stderr}`,
              );
            }),
          ]);
          // Kill at a random moment: mid-write, mid-sync, between the two.
          await new Promise((resolve) =>
            setTimeout(resolve, 5 + random() * 250)
          );
          run.child.kill("SIGKILL");
          await run.child.status;
          await run.reading;
          await run.stderr;
          let open_: string | null = null;
          for (const line of run.lines) {
            history.push(`g${generation} ${JSON.stringify(line)}`);
            if (line.type === "intent") open_ = String(line.id);
            if (line.type === "committed" || line.type === "skipped") {
              open_ = null;
              uncertain.delete(String(line.id));
            }
            if (line.type === "committed" && line.existed !== false) {
              committed.set(String(line.id), {
                id: String(line.id),
                v: String(line.v),
                deleted: line.deleted === true,
              });
            }
          }
          if (open_ !== null) uncertain.add(open_);
          const storage = await open(kind, path);
          try {
            await verify(
              storage,
              committed,
              uncertain,
              await server.records(),
              context,
            ).catch((error) => {
              // The record every one of verify()'s messages names.
              const id =
                /: ([^\s']+)(?: holds| is deleted| is neither| differs| deletion|'s op)|write \S+ of (\S+) is lost/
                  .exec(String(error))?.slice(1).find((found) => found);
              throw new Error(
                `${error}\nserver log of ${id}:\n${
                  server.log.filter((line) => line.includes(` ${id} `)).slice(
                    -30,
                  )
                    .join("\n")
                }\nhistory of ${id}:\n${
                  history.filter((line) => line.includes(`"${id}"`)).slice(-40)
                    .join("\n")
                }\nlast syncs:\n${
                  history.filter((line) =>
                    line.includes("synced") || line.includes("syncFailed")
                  ).slice(-5).join("\n")
                }`,
              );
            });
          } finally {
            await storage.close();
          }
          assertAppliedOnce(server.applied, context);
        }
        const storage = await open(kind, path);
        try {
          await drain(storage, server.url);
          await assertConverged(storage, server);
          assertAppliedOnce(server.applied, `${kind} final`);
          console.log(
            `${kind}: ${committed.size} records written, ${server.applied.size} writes applied, ${uncertain.size} uncertain`,
          );
          assert.ok(committed.size > 0, "the children committed writes");
          assert.ok(server.applied.size > 0, "the children pushed writes");
        } finally {
          await storage.close();
        }
      } finally {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    }),
  );

  Deno.test(`crash: two processes on one ${kind} store write and sync concurrently, nothing lost or doubled`, async () => {
    const dir = await Deno.makeTempDir({ prefix: `multi-${kind}-` });
    const path = `${dir}/store.${kind === "kv" ? "kv" : "sqlite"}`;
    await using server = startLoggingServer();
    try {
      // Create the store once, so the two children do not race to create it.
      await (await open(kind, path)).close();
      const runs = ["alice", "bob"].map((writer, i) =>
        spawnChild([kind, path, server.url, writer, String(SEED + i), "150"])
      );
      const statuses = await Promise.all(runs.map((run) => run.child.status));
      for (const [i, status] of statuses.entries()) {
        assert.equal(
          status.code,
          0,
          `child ${i} failed: ${await runs[i]!.stderr}`,
        );
      }
      await Promise.all(runs.map((run) => run.reading));
      console.log(
        runs.map((run) =>
          `${
            run.lines.filter((l) => l.type === "committed").length
          } committed, ${
            run.lines.filter((l) => l.type === "synced").length
          } syncs`
        ).join("; "),
      );
      const storage = await open(kind, path);
      try {
        await drain(storage, server.url);
        await assertConverged(storage, server);
        assertAppliedOnce(server.applied, `${kind} two processes`);
        // Every writer's last write to its own records is on the server.
        const records = await server.records();
        for (const run of runs) {
          const last = new Map<string, Record<string, unknown>>();
          for (const line of run.lines) {
            if (
              line.type === "committed" && !String(line.id).startsWith("shared")
            ) {
              last.set(String(line.id), line);
            }
          }
          assert.ok(last.size > 0);
          for (const [id, line] of last) {
            const remote = records.get(id);
            if (line.deleted === true) {
              assert.ok(
                remote === undefined || remote.deleted_at !== undefined,
                `${id} deleted`,
              );
            } else {
              assert.equal(remote?.v, line.v, `${id} holds the last write`);
            }
          }
        }
      } finally {
        await storage.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  });
}
