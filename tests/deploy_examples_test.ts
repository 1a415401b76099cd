/**
 * The Deno Deploy examples as real processes on local KV files:
 * `examples/deploy/server.ts` (the reference server on KV) and
 * `examples/deploy/edge_replica.ts` (an edge worker keeping a KV replica of
 * an upstream).
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { withTimeout } from "./_timeout.ts";
import { eventually, type Running, startScript } from "./_process.ts";

const SERVER = new URL("../examples/deploy/server.ts", import.meta.url);
const ALICE = "alice-token-0123456789";
const BOB = "bob-token-0123456789ab";

async function startServer(kvPath: string, env: Record<string, string> = {}) {
  return await startScript(SERVER, {
    denoArgs: ["--unstable-kv"],
    env: {
      PORT: "0",
      KV_PATH: kvPath,
      SYNC_TOKENS: `${ALICE}=alice,${BOB}=bob`,
      ...env,
    },
  });
}

function client(baseUrl: string, token: string) {
  const storage = createMemoryStorage();
  const transport = createRestTransport({ baseUrl, token: () => token });
  const engine = new SyncEngine({ storage, transport });
  return {
    engine,
    todos: engine.table("todos"),
    async [Symbol.asyncDispose]() {
      await engine.close();
      await transport.close();
      await storage.close();
    },
  };
}

Deno.test(
  "deploy server: health is open, data needs a token, two processes on one KV file serve one store",
  withTimeout(60_000, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const kvPath = `${dir}/server.kv`;
      await using one = await startServer(kvPath);
      await using two = await startServer(kvPath);

      const health = await fetch(`${one.url}/health`);
      assert.equal(health.status, 200);
      assert.equal((await health.json()).live, true);
      const denied = await fetch(`${one.url}/todos`);
      await denied.body?.cancel();
      assert.equal(denied.status, 401);

      await using a = client(one.url, ALICE);
      await using b = client(two.url, ALICE);
      await using bob = client(two.url, BOB);
      await a.todos.put({ id: "t1", title: "from process one" });
      assert.equal((await a.engine.sync()).stats.pushed, 1);
      await b.engine.sync();
      assert.equal((await b.todos.get("t1"))?.title, "from process one");
      await bob.engine.sync();
      assert.equal(await bob.todos.get("t1"), undefined);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
);

Deno.test(
  "deploy server: live hints cross processes sharing one KV file",
  withTimeout(60_000, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const kvPath = `${dir}/server.kv`;
      await using one = await startServer(kvPath);
      await using two = await startServer(kvPath);
      const stream = await fetch(`${two.url}/live`, {
        headers: { authorization: `Bearer ${ALICE}` },
      });
      assert.equal(stream.status, 200);
      const reader = stream.body!.pipeThrough(new TextDecoderStream())
        .getReader();
      await using a = client(one.url, ALICE);
      await a.todos.put({ id: "t1", title: "hint me" });
      await a.engine.sync();
      let text = "";
      await eventually(
        async () => {
          const { value } = await reader.read();
          text += value ?? "";
          return text.includes('"todos"') ? true : undefined;
        },
        10_000,
        "a change hint on the other process",
      );
      assert.match(text, /event: change/);
      await reader.cancel();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
);

Deno.test(
  "deploy server: refuses to start without tokens unless SYNC_INSECURE=1, and on a bad PORT",
  withTimeout(30_000, async () => {
    const run = async (env: Record<string, string>) => {
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-kv", SERVER.pathname],
        env: { KV_PATH: ":memory:", PORT: "0", ...env },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(20_000),
      }).output();
      return {
        code: output.code,
        stderr: new TextDecoder().decode(output.stderr),
      };
    };
    const empty = await run({ SYNC_TOKENS: "" });
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /SYNC_TOKENS is empty/);
    const port = await run({ SYNC_TOKENS: `${ALICE}=alice`, PORT: "http" });
    assert.equal(port.code, 2);
    assert.match(port.stderr, /PORT is not an integer/);

    await using open = await startScript(SERVER, {
      denoArgs: ["--unstable-kv"],
      env: { PORT: "0", KV_PATH: ":memory:", SYNC_INSECURE: "1" },
    });
    const list = await fetch(`${open.url}/todos`);
    assert.equal(list.status, 200);
    await list.body?.cancel();
  }),
);

const REPLICA = new URL("../examples/deploy/edge_replica.ts", import.meta.url);

async function startReplica(
  upstream: string,
  kvPath: string,
): Promise<Running> {
  return await startScript(REPLICA, {
    denoArgs: ["--unstable-kv", "--unstable-cron"],
    env: {
      PORT: "0",
      KV_PATH: kvPath,
      UPSTREAM_URL: upstream,
      UPSTREAM_TOKEN: ALICE,
      REPLICA_KINDS: "todos,notes",
      REPLICA_LEASE_MS: "1000",
    },
  });
}

/** The record the replica serves, once it has it. */
async function served(
  replica: Running,
  id: string,
  title: string,
  timeoutMs: number,
): Promise<number> {
  const started = Date.now();
  await eventually(
    async () => {
      const response = await fetch(`${replica.url}/todos/${id}`);
      if (response.status !== 200) {
        await response.body?.cancel();
        return undefined;
      }
      return (await response.json()).title === title ? true : undefined;
    },
    timeoutMs,
    `the replica to serve ${id} as ${JSON.stringify(title)}`,
  );
  return Date.now() - started;
}

async function health(replica: Running) {
  const response = await fetch(`${replica.url}/health`);
  return (await response.json()).sync as { role: string; live: string };
}

Deno.test(
  "edge replica: serves the upstream's records from KV, gets changes by live hints, one of two processes syncs, and the other takes over",
  withTimeout(90_000, async () => {
    const dir = await Deno.makeTempDir();
    try {
      await using upstream = await startServer(`${dir}/server.kv`);
      await using a = client(upstream.url, ALICE);
      await a.todos.put({ id: "t1", title: "before the replica" });
      await a.engine.sync();

      const kvPath = `${dir}/replica.kv`;
      const one = await startReplica(upstream.url, kvPath);
      await using _one = one;
      await served(one, "t1", "before the replica", 15_000);
      const list = await (await fetch(`${one.url}/todos`)).json();
      assert.deepEqual(list.items.map((item: { id: string }) => item.id), [
        "t1",
      ]);
      for (
        const [path, method, status] of [
          ["/nope", "GET", 404],
          ["/todos/t2", "PUT", 405],
          ["/todos/a/b", "GET", 404],
        ] as const
      ) {
        const response = await fetch(`${one.url}${path}`, { method });
        await response.body?.cancel();
        assert.equal(response.status, status, `${method} ${path}`);
      }
      await eventually(
        async () => (await health(one)).live === "open" ? true : undefined,
        10_000,
        "the live stream to open",
      );
      assert.equal((await health(one)).role, "syncer");

      // A write upstream reaches the replica by a live hint, well before
      // the one-minute interval or cron.
      await a.todos.put({ id: "t2", title: "after the replica" });
      await a.engine.sync();
      const hinted = await served(one, "t2", "after the replica", 10_000);
      console.log(`edge replica: an upstream write served after ${hinted} ms`);

      // A second process on the same KV file (a second isolate) follows.
      const two = await startReplica(upstream.url, kvPath);
      await using _two = two;
      await served(two, "t2", "after the replica", 10_000);
      assert.equal((await health(two)).role, "follower");

      // The syncer dies: the follower takes the lease and keeps syncing.
      await one.stop("SIGKILL");
      const killedAt = Date.now();
      await eventually(
        async () => (await health(two)).role === "syncer" ? true : undefined,
        15_000,
        "the follower to take over",
      );
      console.log(
        `edge replica: takeover ${
          Date.now() - killedAt
        } ms after SIGKILL (lease 1000 ms)`,
      );
      await a.todos.put({ id: "t3", title: "after the takeover" });
      await a.engine.sync();
      await served(two, "t3", "after the takeover", 15_000);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
);
