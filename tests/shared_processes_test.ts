/**
 * One syncer per store (ENGINE.md clause 26) with real processes: three
 * engine processes (`_shared_child.ts`) share one SQLite file, or one Deno
 * KV file, and sync with a reference server in this process over HTTP.
 * Every request names its process (`x-holder`), so the server log shows who
 * syncs. Checked: one process syncs at a time; `watch()` in the followers
 * sees what the syncer pulled; a follower's write is pushed by the syncer;
 * SIGKILL of the syncer hands the lease to another process (the failover
 * time is printed: from the kill to the new syncer's `role` line).
 *
 * @module
 */

import assert from "node:assert/strict";
import { startServer, type TestServer } from "./_harness.ts";
import { withTimeout } from "./_timeout.ts";

const CHILD = new URL("./_shared_child.ts", import.meta.url).pathname;
const LEASE_MS = 1000;
const POLL_MS = 100;
/** The bound of every wait: a hang fails in seconds. */
const WAIT_MS = 15_000;

interface Line {
  readonly type: string;
  readonly at: number;
  readonly [key: string]: unknown;
}

/** A running engine process and the lines it reported. */
interface Child {
  readonly holder: string;
  readonly process: Deno.ChildProcess;
  readonly lines: Line[];
  readonly stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly reading: Promise<void>;
  killed: boolean;
}

function spawn(
  store: string,
  path: string,
  url: string,
  holder: string,
): Child {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-kv",
      "--no-check",
      CHILD,
      store,
      path,
      url,
      holder,
      String(LEASE_MS),
      String(POLL_MS),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: Line[] = [];
  const reading = (async () => {
    let buffer = "";
    for await (
      const chunk of process.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        lines.push(JSON.parse(buffer.slice(0, newline)));
        buffer = buffer.slice(newline + 1);
      }
    }
  })();
  return {
    holder,
    process,
    lines,
    stdin: process.stdin.getWriter(),
    reading,
    killed: false,
  };
}

async function send(child: Child, command: unknown): Promise<void> {
  await child.stdin.write(
    new TextEncoder().encode(JSON.stringify(command) + "\n"),
  );
}

/** Waits (bounded) until `check` returns a value. */
async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
): Promise<T> {
  const deadline = performance.now() + WAIT_MS;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (performance.now() > deadline) {
      throw new Error(`Timed out after ${WAIT_MS} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The processes whose last `role` line says syncer. */
function syncers(children: Child[]): Child[] {
  return children.filter((child) =>
    !child.killed &&
    child.lines.findLast((line) => line.type === "role")?.role === "syncer"
  );
}

async function serverTitles(server: TestServer): Promise<Map<string, string>> {
  const response = await server.server.fetch(
    new Request(`${server.url}/todos?limit=500`),
  );
  const page = await response.json() as {
    items: { id: string; title: string }[];
  };
  return new Map(page.items.map((item) => [item.id, item.title]));
}

async function serverPut(server: TestServer, id: string, title: string) {
  const response = await server.server.fetch(
    new Request(`${server.url}/todos/${id}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id, title }),
    }),
  );
  assert.ok(response.ok, `server put answered ${response.status}`);
  await response.body?.cancel();
}

/** Who sent requests in the server's log from index `from` on. */
function senders(server: TestServer, from = 0): Set<string> {
  return new Set(
    server.requests.slice(from).map((request) =>
      request.headers.get("x-holder") ?? "?"
    ),
  );
}

async function scenario(store: "sqlite" | "kv"): Promise<number[]> {
  const dir = await Deno.makeTempDir({ prefix: `shared-${store}-` });
  await using server = startServer();
  const path = `${dir}/local.${store}`;
  const children = ["a", "b", "c"].map((holder) =>
    spawn(store, path, server.url, holder)
  );
  const failovers: number[] = [];
  try {
    await until(
      "every process ready",
      () =>
        children.every((child) =>
          child.lines.some((line) => line.type === "ready")
        ),
    );
    let leader = await until("a syncer", () => syncers(children)[0]);
    // Let every process poll a few times: still one syncer.
    await new Promise((resolve) => setTimeout(resolve, POLL_MS * 5));
    assert.deepEqual(syncers(children).map((child) => child.holder), [
      leader.holder,
    ]);

    // watch() in the followers sees what the syncer pulled.
    await serverPut(server, "p1", "from the server");
    const followers = children.filter((child) => child !== leader);
    await until(
      "followers see the pulled record",
      () =>
        followers.every((child) =>
          child.lines.some((line) =>
            line.type === "change" && line.id === "p1" &&
            line.origin === "pulled" && line.title === "from the server"
          )
        ),
    );

    // A follower's write is pushed by the syncer; nobody else syncs.
    await send(followers[0]!, { put: { id: "w1", title: "by a follower" } });
    await until(
      "the follower's write on the server",
      async () => (await serverTitles(server)).get("w1") === "by a follower",
    );
    assert.deepEqual(senders(server), new Set([leader.holder]));

    for (let kill = 0; kill < 2; kill++) {
      const from = server.requests.length;
      leader.process.kill("SIGKILL");
      leader.killed = true;
      const killedAt = Date.now();
      await leader.process.status;
      const next = await until("a new syncer", () => syncers(children)[0]);
      const roleLine = next.lines.findLast((line) => line.type === "role")!;
      failovers.push(roleLine.at - killedAt);
      leader = next;
      // A survivor's write is pushed by the new syncer, the only one that
      // syncs now (a dead process's last requests may still arrive).
      const writer = children.find((child) =>
        !child.killed && child !== next
      ) ?? next;
      const id = `k${kill}`;
      await send(writer, { put: { id, title: `after kill ${kill}` } });
      await until(
        `${id} on the server`,
        async () =>
          (await serverTitles(server)).get(id) === `after kill ${kill}`,
      );
      const after = senders(server, from);
      for (const child of children) {
        if (child.killed) after.delete(child.holder);
      }
      assert.deepEqual(after, new Set([next.holder]));
    }
    for (const child of children) {
      const errors = child.lines.filter((line) => line.type === "error");
      if (errors.length > 0) console.log(child.holder, errors);
    }
  } finally {
    for (const child of children) {
      if (!child.killed) await child.stdin.close().catch(() => {});
    }
    for (const child of children) {
      await child.process.status;
      await child.reading.catch(() => {});
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return failovers;
}

for (const store of ["sqlite", "kv"] as const) {
  Deno.test(
    `shared processes (${store}): one syncer; followers watch its pulls and have their writes pushed; SIGKILL of the syncer hands over the lease`,
    withTimeout(90_000, async () => {
      const failovers = await scenario(store);
      console.log(
        `${store}: failover after SIGKILL of the syncer (lease ${LEASE_MS} ms, poll ${POLL_MS} ms): ${
          failovers.map((ms) => `${ms} ms`).join(", ")
        }`,
      );
      assert.equal(failovers.length, 2);
    }),
  );
}
