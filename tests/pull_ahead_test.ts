/**
 * The pull requests the next page while it writes the current one (the
 * server answers while the storage commits), and uses that page only when
 * the cursor then stands where it was asked from: a moved cursor, a failed
 * write or the run's end cancels it (not waiting for a transport that
 * ignores the signal), and its own failure fails the run only after the page
 * before it landed.
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import { cursorKey } from "../src/_cursor.ts";
import { NetworkError, StorageError } from "../src/errors.ts";
import type { JsonObject } from "../src/json.ts";
import type { Storage } from "../src/storage.ts";
import type {
  PullPage,
  PullRequest,
  Transport,
  TransportCallOptions,
} from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { keysetPage } from "./_fixtures.ts";
import { withTimeout } from "./_timeout.ts";

const T0 = Date.parse("2025-03-01T10:00:00.000Z");

/** `count` rows `r00`, `r01`, … a second apart from T0. */
function rows(count: number): JsonObject[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `r${String(i).padStart(2, "0")}`,
    updated_at: new Date(T0 + i * 1000).toISOString(),
  }));
}

/** One pull request as the transport saw it. */
interface Seen {
  readonly afterId: string | null;
  readonly signal: AbortSignal | undefined;
}

/**
 * Serves `rows` by keyset; `answer(index, request)` runs before request
 * `index` is answered (it may wait, or throw).
 */
function rowsTransport(
  all: readonly JsonObject[],
  answer: (
    index: number,
    request: PullRequest,
    options: TransportCallOptions | undefined,
  ) => Promise<void> = () => Promise.resolve(),
): Transport & { seen: Seen[]; open: number } {
  const seen: Seen[] = [];
  return {
    seen,
    /** Requests not answered yet. */
    open: 0,
    async pull(request, options): Promise<PullPage> {
      const index = seen.length;
      seen.push({ afterId: request.afterId, signal: options?.signal });
      this.open++;
      try {
        await answer(index, request, options);
      } finally {
        this.open--;
      }
      return keysetPage(all, request);
    },
    push: () => Promise.resolve([]),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

/** Resolves when `signal` aborts, rejecting with its reason. */
function aborted(signal: AbortSignal | undefined): Promise<never> {
  return new Promise((_, reject) => {
    if (signal === undefined) return;
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
  });
}

/** A storage whose `write()` runs `before(index)` first. */
function hooked(
  inner: Storage,
  before: (index: number) => Promise<void>,
): Storage {
  let index = 0;
  return {
    get capabilities() {
      return inner.capabilities;
    },
    getRecords: (kind, ids, options) => inner.getRecords(kind, ids, options),
    listRecords: (kind, options) => inner.listRecords(kind, options),
    getOps: (ids, options) => inner.getOps(ids, options),
    listOps: (options) => inner.listOps(options),
    getMeta: (keys, options) => inner.getMeta(keys, options),
    async write(mutations, options) {
      await before(index++);
      return inner.write(mutations, options);
    },
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
}

/** The ids of the table's records, in order. */
async function ids(storage: Storage): Promise<string[]> {
  const records = await storage.listRecords("items", { includeDeleted: true });
  return records.map(({ value }) => value.id).sort();
}

Deno.test(
  "pull ahead: the next page is requested, from the cursor this page leaves, before this page's write commits",
  withTimeout(10_000, async () => {
    let second!: () => void;
    const asked = new Promise<void>((resolve) => second = resolve);
    const transport = rowsTransport(rows(12), (index) => {
      if (index === 1) second();
      return Promise.resolve();
    });
    const during: boolean[] = [];
    await using storage = hooked(createMemoryStorage(), async () => {
      // A second at most: without the request ahead it never comes.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), 1_000);
      });
      during.push(await Promise.race([asked.then(() => true), timeout]));
      clearTimeout(timer);
    });
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    engine.table("items");
    const { stats } = await engine.sync();
    assert.equal(stats.pulled, 12);
    assert.equal(during[0], true);
    assert.deepEqual(transport.seen.map(({ afterId }) => afterId), [
      null,
      "r04",
      "r09",
    ]);
    assert.equal((await ids(storage)).length, 12);
  }),
);

Deno.test(
  "pull ahead: a page requested ahead is dropped when another writer moved the cursor meanwhile; the pull goes on from where it stands",
  withTimeout(10_000, async () => {
    const inner = createMemoryStorage();
    const transport = rowsTransport(rows(20));
    await using storage = hooked(inner, async (index) => {
      // Before the first page lands: another engine applied up to r09.
      if (index !== 0) return;
      const [entry] = await inner.getMeta([cursorKey("items")]);
      await inner.write([{
        type: "putMeta",
        key: cursorKey("items"),
        value: {
          updatedAt: new Date(T0 + 9_000).toISOString(),
          id: "r09",
          pageToken: null,
        },
        expect: entry?.rev ?? null,
      }]);
    });
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    engine.table("items");
    await engine.sync();
    const afterIds = transport.seen.map(({ afterId }) => afterId);
    // The page from r04 was asked ahead, then dropped unused.
    assert.deepEqual(afterIds.slice(0, 3), [null, "r04", "r09"]);
    assert.equal(transport.seen[1]!.signal?.aborted, true);
    // This engine wrote only what came after the moved cursor.
    assert.deepEqual(
      await ids(storage),
      rows(20).slice(10).map(({ id }) => id as string),
    );
  }),
);

Deno.test(
  "pull ahead: a write that fails cancels the request made ahead, and the run fails with the write's error at once",
  withTimeout(10_000, async () => {
    const transport = rowsTransport(rows(12), async (index, _, options) => {
      // The request ahead ends when it is cancelled.
      if (index === 1) await aborted(options?.signal);
    });
    await using storage = hooked(createMemoryStorage(), (index) => {
      if (index === 0) {
        return Promise.reject(new StorageError("Cannot write: disk full"));
      }
      return Promise.resolve();
    });
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    engine.table("items");
    await assert.rejects(engine.sync(), {
      name: "StorageError",
      message: "Cannot write: disk full",
    });
    assert.equal(transport.seen.length, 2);
    assert.equal(transport.seen[1]!.signal?.aborted, true);
    assert.deepEqual(await ids(storage), []);
  }),
);

Deno.test(
  "pull ahead: a transport that ignores the signal holds neither a failed run nor close()",
  withTimeout(10_000, async () => {
    // Every request ahead takes 3 s, cancelled or not.
    const slow = (index: number) =>
      index === 1
        ? new Promise<void>((resolve) => setTimeout(resolve, 3_000))
        : Promise.resolve();
    {
      const transport = rowsTransport(rows(12), slow);
      await using storage = hooked(
        createMemoryStorage(),
        (index) =>
          index === 0
            ? Promise.reject(new StorageError("Cannot write: disk full"))
            : Promise.resolve(),
      );
      await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
      engine.table("items");
      const started = performance.now();
      await assert.rejects(engine.sync(), { name: "StorageError" });
      const waited = performance.now() - started;
      assert.ok(waited < 1_000, `the failed run waited ${waited} ms`);
    }
    {
      const transport = rowsTransport(rows(12), slow);
      let closing!: Promise<void>;
      const held: { engine?: SyncEngine } = {};
      await using storage = hooked(createMemoryStorage(), (index) => {
        // Closed while the first page is written, its next page asked for.
        if (index === 0) closing = held.engine!.close();
        return Promise.resolve();
      });
      await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
      held.engine = engine;
      engine.table("items");
      const started = performance.now();
      await engine.sync().catch(() => {});
      await closing;
      const waited = performance.now() - started;
      assert.ok(waited < 1_000, `close() waited ${waited} ms`);
    }
    // The two requests left behind end before the test does.
    await new Promise((resolve) => setTimeout(resolve, 3_100));
  }),
);

Deno.test(
  "pull ahead: a request made ahead that fails fails the run only after the page before it landed, and the next run resumes there",
  withTimeout(10_000, async () => {
    let failing = true;
    const transport = rowsTransport(rows(12), (index) => {
      if (index === 1 && failing) {
        return Promise.reject(
          new NetworkError("Cannot pull: connection reset"),
        );
      }
      return Promise.resolve();
    });
    await using storage = createMemoryStorage();
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    engine.table("items");
    await assert.rejects(engine.sync(), {
      name: "NetworkError",
      message: "Cannot pull: connection reset",
    });
    assert.deepEqual(await ids(storage), ["r00", "r01", "r02", "r03", "r04"]);
    failing = false;
    const { stats } = await engine.sync();
    assert.equal(stats.pulled, 7);
    assert.equal(transport.seen.at(-3)!.afterId, "r04");
    assert.equal((await ids(storage)).length, 12);
  }),
);
