/**
 * The backend conformance kit (`testing/backend.ts`): it passes on the
 * reference server over every server store available in process, over real
 * HTTP, and it fails — on the right check, with a message naming the rule —
 * on servers broken on purpose (the reference handler wrapped to ignore
 * idempotency keys, leak another principal's records, drop the items that
 * share the cursor's timestamp, store a `409`'d write, …).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BACKEND_CHECKS,
  type BackendCheckName,
  testBackend,
  testBackendCases,
  type TestBackendResult,
} from "../testing/backend.ts";
import { runConformanceCli } from "../testing/backend_cli.ts";
import {
  bearerAuth,
  createSyncServer,
  type ServerStore,
  type SyncServerOptions,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { openSqliteServerStore } from "../server/sqlite.ts";
import { openKvServerStore } from "../server/kv.ts";
import { openPostgresServerStore } from "../server/postgres.ts";
import {
  DATABASE_URL,
  dropSchema,
  freshSchema,
  ignorePostgres,
} from "./_postgres.ts";
import { withTimeout } from "./_timeout.ts";

/** A server store for one run, and how to remove what it left. */
interface StoreFactory {
  readonly name: string;
  /** Whether to register its test as ignored (no Postgres answers). */
  readonly ignore?: boolean;
  open(): Promise<{ store: ServerStore; teardown(): Promise<void> }>;
}

async function tempDir(): Promise<{ dir: string; teardown(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "backend-kit-" });
  return { dir, teardown: () => Deno.remove(dir, { recursive: true }) };
}

/** Every server store available in process (the lead adds Postgres here). */
const STORES: readonly StoreFactory[] = [
  {
    name: "memory",
    open: () =>
      Promise.resolve({
        store: createMemoryServerStore(),
        teardown: () => Promise.resolve(),
      }),
  },
  {
    name: "sqlite file",
    async open() {
      const { dir, teardown } = await tempDir();
      return {
        store: await openSqliteServerStore(`${dir}/server.sqlite`),
        teardown,
      };
    },
  },
  {
    name: "kv file",
    async open() {
      const { dir, teardown } = await tempDir();
      return { store: await openKvServerStore(`${dir}/server.kv`), teardown };
    },
  },
  {
    name: "postgres",
    ignore: await ignorePostgres(),
    async open() {
      const schema = freshSchema();
      return {
        store: await openPostgresServerStore(DATABASE_URL, { schema }),
        teardown: () => dropSchema(schema),
      };
    },
  },
];

const TOKENS = {
  "kit-token-alice-0001": "alice",
  "kit-token-bob-000002": "bob",
};
const ALICE = { authorization: "Bearer kit-token-alice-0001" };
const BOB = { authorization: "Bearer kit-token-bob-000002" };

const T0 = Date.UTC(2025, 2, 1, 10, 0, 0);

type Handler = (request: Request) => Promise<Response>;

/** The reference server over HTTP, its handler optionally wrapped. */
interface Running extends AsyncDisposable {
  readonly url: string;
  readonly purgeTombstones: () => Promise<void>;
}

async function serve(
  factory: StoreFactory,
  wrap: (handler: Handler) => Handler = (handler) => handler,
  options: SyncServerOptions = {},
): Promise<Running> {
  const { store, teardown } = await factory.open();
  const server = createSyncServer({
    store,
    auth: bearerAuth(TOKENS),
    // A clock that never moves: the server's own clock then assigns
    // updated_at, and ids written in ascending order share one.
    now: () => T0,
    ...options,
  });
  const http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    wrap(server.fetch),
  );
  return {
    url: `http://127.0.0.1:${http.addr.port}`,
    async purgeTombstones() {
      await server.purgeTombstones({ olderThan: Number.MAX_SAFE_INTEGER });
    },
    async [Symbol.asyncDispose]() {
      await http.shutdown();
      await server.close();
      await teardown();
    },
  };
}

async function runKit(
  running: Running,
  checks?: readonly BackendCheckName[],
): Promise<TestBackendResult> {
  return await testBackend(running.url, {
    credentials: [ALICE, BOB],
    purgeTombstones: running.purgeTombstones,
    timeoutMs: 10_000,
    ...(checks === undefined ? {} : { checks }),
  });
}

function failing(result: TestBackendResult): string[] {
  return result.checks.filter((check) => check.status === "fail").map((
    check,
  ) => check.name);
}

function explain(result: TestBackendResult): string {
  return result.checks.map((check) =>
    `${check.status} ${check.name}: ${check.message}`
  ).join("\n");
}

for (const factory of STORES) {
  Deno.test({
    name:
      `backend kit: every check passes on the reference server over ${factory.name}`,
    ignore: factory.ignore ?? false,
    fn: withTimeout(60_000, async () => {
      await using running = await serve(factory);
      const started = performance.now();
      const result = await runKit(running);
      const ms = Math.round(performance.now() - started);
      console.log(`backend kit on ${factory.name}: ${ms} ms`);
      assert.equal(result.ok, true, explain(result));
      const paging = result.checks.find((check) => check.name === "paging");
      assert.match(paging!.message, /^9 records, [1-9] sharing a timestamp/);
      assert.deepEqual(
        result.checks.map((check) => [check.name, check.status]),
        BACKEND_CHECKS.map((name) => [name, "pass"]),
        explain(result),
      );
    }),
  });
}

/** Reads a request's body, and gives a fresh request with it. */
async function cloneWith(
  request: Request,
  init: { url?: string; headers?: Headers; body?: string },
): Promise<Request> {
  const body = init.body ??
    (request.body === null ? undefined : await request.text());
  const next: RequestInit = {
    method: request.method,
    headers: init.headers ?? request.headers,
    signal: request.signal,
  };
  if (body !== undefined) next.body = body;
  return new Request(init.url ?? request.url, next);
}

/** A broken server: what it gets wrong and the checks that must catch it. */
interface Breakage {
  readonly name: string;
  readonly fails: readonly BackendCheckName[];
  readonly wrap: (handler: Handler) => Handler;
  readonly options?: SyncServerOptions;
  readonly checks?: readonly BackendCheckName[];
}

const BREAKAGES: readonly Breakage[] = [
  {
    name: "ignores Idempotency-Key",
    fails: ["idempotent-replay", "idempotency-mismatch", "limits"],
    wrap: (handler) => async (request) => {
      const headers = new Headers(request.headers);
      headers.delete("idempotency-key");
      headers.delete("x-idempotency-key");
      return await handler(await cloneWith(request, { headers }));
    },
  },
  {
    name: "leaks another principal's records to its pulls",
    fails: ["tenancy"],
    wrap: (handler) => async (request) => {
      const url = new URL(request.url);
      if (
        request.method === "GET" && url.pathname !== "/live" &&
        request.headers.get("authorization") === BOB.authorization
      ) {
        const headers = new Headers(request.headers);
        headers.set("authorization", ALICE.authorization);
        return await handler(await cloneWith(request, { headers }));
      }
      return await handler(request);
    },
  },
  {
    name: "drops the items that share the cursor's updated_at",
    // Without its token, the second page of a full resync is 410 too.
    fails: ["paging", "gone"],
    // `updated_at > since`, the original library's ambiguous paging.
    wrap: (handler) => async (request) => {
      const url = new URL(request.url);
      const since = url.searchParams.get("updatedSince");
      if (request.method === "GET" && url.searchParams.has("afterId")) {
        url.searchParams.delete("afterId");
        url.searchParams.delete("pageToken");
        url.searchParams.set(
          "updatedSince",
          new Date(Date.parse(since!) + 1).toISOString(),
        );
        return await handler(await cloneWith(request, { url: String(url) }));
      }
      return await handler(request);
    },
  },
  {
    name: "stores a 409'd write",
    fails: ["conflict-not-stored"],
    wrap: (handler) => async (request) => {
      const body = request.method === "PUT" ? await request.text() : undefined;
      const first = await handler(
        body === undefined ? request : await cloneWith(request, { body }),
      );
      if (first.status !== 409 || body === undefined) return first;
      const headers = new Headers(request.headers);
      headers.set("x-force-update", "true");
      headers.set("idempotency-key", crypto.randomUUID());
      await (await handler(await cloneWith(request, { headers, body }))).body
        ?.cancel();
      return first;
    },
  },
  {
    name: "applies a batch in reverse",
    fails: ["batch-order"],
    wrap: (handler) => async (request) => {
      if (!new URL(request.url).pathname.endsWith("/batch")) {
        return await handler(request);
      }
      const body = await request.json();
      body.ops.reverse();
      const response = await handler(
        await cloneWith(request, { body: JSON.stringify(body) }),
      );
      if (response.status !== 200) return response;
      const answer = await response.json();
      answer.results.reverse();
      return Response.json(answer);
    },
  },
  {
    name: "leaves tombstones out of pulls",
    fails: ["tombstones", "gone", "batch-order"],
    wrap: (handler) => async (request) => {
      const response = await handler(request);
      const path = new URL(request.url).pathname;
      if (
        request.method !== "GET" || response.status !== 200 ||
        path === "/health" || path === "/live"
      ) {
        return response;
      }
      const page = await response.json();
      page.items = page.items.filter((item: { deleted_at?: string }) =>
        item.deleted_at === undefined
      );
      return Response.json(page);
    },
  },
  {
    name: "answers a stale cursor after a purge with an empty page, not 410",
    fails: ["gone"],
    wrap: (handler) => async (request) => {
      const response = await handler(request);
      if (response.status !== 410) return response;
      await response.body?.cancel();
      return Response.json({ items: [], nextPageToken: null });
    },
  },
  {
    name: "answers an invalid id with 422",
    fails: ["limits"],
    wrap: (handler) => async (request) => {
      const response = await handler(request);
      if (response.status !== 400) return response;
      const body = await response.json();
      return Response.json(body, {
        status: body.error === "invalid_id" ? 422 : 400,
      });
    },
  },
  {
    name: "advertises live hints but never sends one",
    fails: ["live"],
    options: { live: false },
    checks: ["live"],
    wrap: (handler) => async (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/health") {
        const health = await (await handler(request)).json();
        return Response.json({ ...health, live: true });
      }
      if (path === "/live") {
        const stream = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new TextEncoder().encode(": live\n\n"));
          },
        });
        return new Response(stream, {
          headers: { "content-type": "text/event-stream" },
        });
      }
      return await handler(request);
    },
  },
];

for (const breakage of BREAKAGES) {
  Deno.test(
    `backend kit: a server that ${breakage.name} fails ${
      breakage.fails.join(", ")
    }`,
    withTimeout(60_000, async () => {
      await using running = await serve(
        STORES[0]!,
        breakage.wrap,
        breakage.options,
      );
      const result = await runKit(running, breakage.checks);
      assert.deepEqual(failing(result), breakage.fails, explain(result));
      for (const check of result.checks) {
        if (check.status !== "fail") continue;
        assert.match(check.message, /^Cannot /, explain(result));
      }
    }),
  );
}

Deno.test(
  "backend kit: a check that hangs fails at its time bound, the others run",
  withTimeout(30_000, async () => {
    await using running = await serve(STORES[0]!, (handler) => (request) => {
      if (!request.url.includes("never-existed")) return handler(request);
      // Answers only when the kit gives up and disconnects.
      return new Promise((resolve) => {
        request.signal.addEventListener(
          "abort",
          () => resolve(new Response(null, { status: 503 })),
        );
      });
    });
    const result = await testBackend(running.url, {
      credentials: [ALICE, BOB],
      timeoutMs: 1000,
      checks: ["tombstones", "idempotent-replay"],
    });
    assert.deepEqual(failing(result), ["tombstones"], explain(result));
    const tombstones = result.checks.find((check) =>
      check.name === "tombstones"
    )!;
    assert.match(tombstones.message, /time bound: current value is 1000 ms/);
    assert.equal(
      result.checks.find((check) => check.name === "idempotent-replay")
        ?.status,
      "pass",
    );
  }),
);

Deno.test(
  "backend kit: a server that never answers fails each check at its time bound",
  withTimeout(30_000, async () => {
    const pending: Array<() => void> = [];
    await using http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      (request) =>
        new Promise<Response>((resolve) => {
          const answer = () => resolve(new Response(null, { status: 503 }));
          pending.push(answer);
          request.signal.addEventListener("abort", answer);
        }),
    );
    const result = await testBackend(`http://127.0.0.1:${http.addr.port}`, {
      timeoutMs: 300,
      checks: ["health", "paging"],
    });
    assert.deepEqual(failing(result), ["health", "paging"], explain(result));
    for (const answer of pending) answer();
  }),
);

Deno.test("backend kit: no server fails every check with a message", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const result = await testBackend(`http://127.0.0.1:${port}`, {
    credentials: [ALICE, BOB],
  });
  assert.equal(result.ok, false);
  const failed = failing(result);
  // Checks that the absent health excludes (batch, live) are skipped.
  assert.ok(failed.includes("health") && failed.includes("paging"));
  for (const check of result.checks) {
    if (check.status === "fail") {
      assert.match(check.message, /^Cannot .*request failed/);
    }
  }
});

Deno.test("backend kit: tenancy is skipped without two credentials", async () => {
  await using running = await serve(STORES[0]!, (handler) => handler, {
    auth: () => "public",
  });
  const result = await testBackend(running.url, { checks: ["tenancy"] });
  assert.equal(result.ok, true);
  assert.deepEqual(result.checks.find((c) => c.name === "tenancy"), {
    name: "tenancy",
    rule: result.checks.find((c) => c.name === "tenancy")!.rule,
    status: "skip",
    message: "needs two credentials (options.credentials)",
    durationMs: result.checks.find((c) => c.name === "tenancy")!.durationMs,
  });
});

Deno.test("backend kit: options are checked", async () => {
  await assert.rejects(
    () => testBackend("http://127.0.0.1:1", { timeoutMs: 0 }),
    RangeError,
  );
  await assert.rejects(
    () =>
      testBackend("http://127.0.0.1:1", {
        checks: ["nope" as BackendCheckName],
      }),
    TypeError,
  );
});

Deno.test(
  "deno task conformance prints one line per check and exits 1 on a failure",
  withTimeout(60_000, async () => {
    await using good = await serve(STORES[0]!);
    const lines: string[] = [];
    const tokens = Object.keys(TOKENS);
    const ok = await runConformanceCli(
      [good.url, "--token", tokens[0]!, "--token", tokens[1]!],
      (line) => lines.push(line),
    );
    assert.equal(ok, 0, lines.join("\n"));
    assert.equal(lines.length, BACKEND_CHECKS.length + 1);
    for (const [index, name] of BACKEND_CHECKS.entries()) {
      assert.match(lines[index]!, new RegExp(`^ok   ${name} `));
    }
    await using bad = await serve(STORES[0]!, BREAKAGES[0]!.wrap);
    lines.length = 0;
    const code = await runConformanceCli(
      [bad.url, "--token", tokens[0]!, "--check", "idempotent-replay"],
      (line) => lines.push(line),
    );
    assert.equal(code, 1, lines.join("\n"));
    assert.match(lines.join("\n"), /^FAIL idempotent-replay .*Cannot replay/m);
    assert.match(lines.at(-1)!, /^1 of 11 checks failed/);
    lines.length = 0;
    assert.equal(
      await runConformanceCli(["--check", "nope"], (l) => lines.push(l)),
      2,
    );
  }),
);

// The Deno.test wrapper, one case per check, each on its own server.
testBackendCases("backend kit cases (memory)", async () => {
  const running = await serve(STORES[0]!);
  return {
    url: running.url,
    credentials: [ALICE, BOB],
    purgeTombstones: running.purgeTombstones,
    teardown: async () => await running[Symbol.asyncDispose](),
  };
});
