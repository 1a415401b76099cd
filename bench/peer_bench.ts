/**
 * Our engine against RxDB 17 on the same job: push 10,000 new documents to
 * the reference server, and pull 10,000 documents from it into an empty
 * client. RxDB is each group's baseline, so every figure is our speed
 * relative to RxDB's, measured in the same run (`deno task bench`).
 *
 * Both sides talk to the reference server (`createSyncServer()` served with
 * `Deno.serve` on 127.0.0.1:0) over real HTTP, with the same wire contract
 * (docs/contract.md), the same ten-field document and the same sizes: pull
 * pages of 1,000 (the server's maximum) and `POST /batch` bodies of 1,000
 * ops.
 *
 * | side    | local store             | replication                                                                                    |
 * | ------- | ----------------------- | ---------------------------------------------------------------------------------------------- |
 * | ours    | `createMemoryStorage()` | `SyncEngine` + `createRestTransport({ batch: true })`: `POST /batch` pushes, keyset `GET` pulls |
 * | RxDB 17 | `getRxStorageMemory()`  | `replicateRxCollection` with a pull and a push handler on the same routes (`_rxdb.ts`)         |
 *
 * Every iteration starts from nothing: a new engine and storage, or a new
 * RxDB database. A push iteration also gets a new, empty server, so every
 * write is a create and neither side pays for records an earlier case left
 * in the server's heap (the cases run one after the other, ours second). The
 * pull source is one server, seeded once and then only read.
 *
 * Groups:
 *
 * - **write 10k docs locally**: the local half of a push, without a server.
 *   RxDB `bulkInsert()` (baseline) and `insert()` × 10,000 against our
 *   `table.putMany()` and `table.put()` × 10,000: bulk against bulk, and a
 *   call per document on either side. A floor row does by hand the least a
 *   local write with an outbox must: a deep copy of each document (the
 *   store's, which the caller cannot change), a ULID and two `Map.set()`s
 *   (the record and its op), with no engine and no storage around them.
 * - **push 10k docs**: local writes plus push, timed together, as an app
 *   of each library would write them. Ours: `table.putMany()` (each record
 *   committed with its outbox op), then `sync({ pullKinds: [] })`. RxDB:
 *   one `bulkInsert()` into a collection whose live replication is already
 *   running and idle, then `awaitInSync()`.
 * - **push 10k docs, push only**: the local writes are done before the
 *   clock starts. Ours: `sync({ pullKinds: [] })` over the 10,000-op
 *   outbox. RxDB: the replication is created with `autoStart: false`, and
 *   `start()` + `awaitInSync()` are timed: RxDB's push of 10,000 documents
 *   it never replicated (its initial upstream sync). That `start()` also
 *   opens RxDB's replication meta storage, a small cost our engine does not
 *   pay there.
 * - **pull 10k docs**: a new, empty client pulls the 10,000 documents.
 *   Ours: `sync()` (an empty push, then the pull). RxDB: a replication with
 *   both handlers, started and awaited in sync (an empty upstream, then the
 *   downstream). Both keep the server's version of every document beside
 *   it (our record's `base`; RxDB's assumed master state, which it stores
 *   because a push handler is set) and both follow the keyset until a page
 *   comes back short: 11 requests.
 *
 * What is not comparable:
 *
 * - The server runs in this process and isolate: its work, the same for
 *   both sides, is inside every push and pull figure and pulls the ratios
 *   towards 1 (it is most of a push).
 * - RxDB overlaps its push requests (all batches of a live write at once,
 *   up to four during an initial sync); our engine sends one batch, settles
 *   it, then sends the next.
 * - RxDB's push rows carry no idempotency key (the handler makes one per
 *   row per request), and a push answer does not tell RxDB the server's
 *   `updated_at`; our engine keys every op and stores every acknowledged
 *   record as its new base.
 * - Neither side validates documents: no table schema on ours, no dev-mode
 *   and no validator plugin on RxDB.
 *
 * `BENCH_SCALE=tiny` runs 50 documents in pages and batches of 20, once;
 * the group names keep saying 10k.
 *
 * @module
 */

import { SyncEngine } from "../src/engine.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { copyCleanJson } from "../storage/_json.ts";
import { createUlid } from "../src/ulid.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer } from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { type BenchDoc, openRxdbClient } from "./_rxdb.ts";

const TINY = Deno.env.get("BENCH_SCALE") === "tiny";
/** Documents pushed or pulled per iteration. */
const DOCS = TINY ? 50 : 10_000;
/** Pull page size: the reference server's maximum. */
const PAGE = TINY ? 20 : 1_000;
/** Ops per `POST /batch`, on both sides. */
const PUSH_BATCH = TINY ? 20 : 1_000;
/**
 * Timed iterations per case; deno bench runs one more first, to probe the
 * speed, which also warms up. A push iteration takes about a second, so the
 * push groups get fewer: the whole file must stay about a minute on a
 * loaded two-core machine.
 */
const ITERATIONS = TINY ? { n: 1, warmup: 0 } : { n: 5, warmup: 0 };
/** The same for the push groups. */
const PUSH_ITERATIONS = TINY ? { n: 1, warmup: 0 } : { n: 4, warmup: 0 };

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/** A reference server on 127.0.0.1:0 over a store we can count in. */
interface BenchServer extends AsyncDisposable {
  readonly baseUrl: string;
  /** How many records the server holds in `kind`. */
  count(kind: string): Promise<number>;
}

function openServer(): BenchServer {
  const store = createMemoryServerStore();
  const server = createSyncServer({ store });
  const shutdown = new AbortController();
  const http = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    signal: shutdown.signal,
    onListen() {},
  }, server.fetch);
  return {
    baseUrl: `http://127.0.0.1:${http.addr.port}`,
    async count(kind: string): Promise<number> {
      const { records } = await store.listRecords("public", kind, {
        limit: DOCS + 1,
      });
      return records.length;
    },
    async [Symbol.asyncDispose](): Promise<void> {
      shutdown.abort();
      await http.finished;
      await server.close();
    },
  };
}

/** The documents of one iteration, made before its clock starts. */
function makeDocs(count: number): BenchDoc[] {
  const docs: BenchDoc[] = [];
  for (let i = 0; i < count; i++) {
    docs.push({
      id: `doc-${String(i).padStart(6, "0")}`,
      title: `Task number ${i}`,
      done: i % 3 === 0,
      priority: i % 5,
      tags: i % 2 === 0 ? ["work", "urgent"] : ["home"],
      owner: `user-${i % 97}`,
      note: "Call back before noon; the invoice is attached to the thread.",
      createdAt: new Date(Date.UTC(2025, 0, 1) + i * 1000).toISOString(),
      estimate: (i % 13) * 0.5,
      category: ["inbox", "next", "later"][i % 3]!,
    });
  }
  return docs;
}

/** Refuses a measurement whose run did not move every document. */
function assertCount(what: string, actual: number): void {
  if (actual !== DOCS) {
    throw new Error(
      `Cannot trust the measurement as ${what} is not ${DOCS}: current value is ${actual}`,
    );
  }
}

let sequence = 0;
/** An RxDB database name no earlier iteration used. */
function freshName(prefix: string): string {
  return `${prefix}${++sequence}`;
}

/** Our client: a new engine on a new memory storage. */
function openOurs(baseUrl: string) {
  const storage = createMemoryStorage();
  const transport = createRestTransport({
    baseUrl,
    // The reference server batches; skip the one-time `GET /health`, as the
    // RxDB handlers do not ask either.
    batch: true,
    batchSize: PUSH_BATCH,
  });
  const engine = new SyncEngine({
    storage,
    transport,
    pageSize: PAGE,
    pushBatchSize: PUSH_BATCH,
  });
  return {
    engine,
    async [Symbol.asyncDispose](): Promise<void> {
      await engine.close();
      await transport.close();
      await storage.close();
    },
  };
}

/** The server kind every push writes to (each push has its own server). */
const PUSH_KIND = "todos";
/** The server kind every pull reads. */
const PULL_KIND = "pull-source";

// The pull source: seeded once, then only read, so it never grows. Stopped
// when deno bench is done (it exits once every case ran).
const pullServer = openServer();
globalThis.addEventListener("unload", () => {
  void pullServer[Symbol.asyncDispose]();
});
{
  const docs = makeDocs(DOCS);
  for (let start = 0; start < docs.length; start += PUSH_BATCH) {
    const ops = docs.slice(start, start + PUSH_BATCH).map((doc) => ({
      opId: `seed-${doc.id}`,
      kind: PULL_KIND,
      id: doc.id,
      type: "upsert",
      payload: doc,
    }));
    const response = await fetch(`${pullServer.baseUrl}/batch`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ops }),
    });
    const body = await response.json();
    if (
      !response.ok ||
      !body.results.every((result: { status: number }) => result.status < 300)
    ) {
      throw new Error(
        `Cannot seed the server: current value is ${
          JSON.stringify(body).slice(0, 200)
        }`,
      );
    }
  }
  assertCount("the seeded kind", await pullServer.count(PULL_KIND));
}

// ---------------------------------------------------------------------------
// write 10k docs locally: the local half of "push 10k docs", no server
// ---------------------------------------------------------------------------

Deno.bench({
  name: "rxdb: bulkInsert",
  group: "write 10k docs locally",
  baseline: true,
  ...ITERATIONS,
  async fn(b) {
    const docs = makeDocs(DOCS);
    // The replication is never started: these writes stay local.
    await using client = await openRxdbClient({
      name: freshName("rxwrite"),
      baseUrl: pullServer.baseUrl,
      kind: PUSH_KIND,
      pull: false,
      pullBatchSize: PAGE,
      pushBatchSize: PUSH_BATCH,
      autoStart: false,
    });
    b.start();
    await client.collection.bulkInsert(docs);
    b.end();
    assertCount("RxDB's local count", await client.collection.count().exec());
  },
});

Deno.bench({
  name: "rxdb: insert × N",
  group: "write 10k docs locally",
  ...ITERATIONS,
  async fn(b) {
    const docs = makeDocs(DOCS);
    // The replication is never started: these writes stay local.
    await using client = await openRxdbClient({
      name: freshName("rxwrite"),
      baseUrl: pullServer.baseUrl,
      kind: PUSH_KIND,
      pull: false,
      pullBatchSize: PAGE,
      pushBatchSize: PUSH_BATCH,
      autoStart: false,
    });
    b.start();
    for (const doc of docs) await client.collection.insert(doc);
    b.end();
    assertCount("RxDB's local count", await client.collection.count().exec());
  },
});

Deno.bench({
  name: "ours: putMany",
  group: "write 10k docs locally",
  ...ITERATIONS,
  async fn(b) {
    const docs = makeDocs(DOCS);
    await using client = openOurs(pullServer.baseUrl);
    const table = client.engine.table<BenchDoc>(PUSH_KIND);
    b.start();
    await table.putMany(docs);
    b.end();
    assertCount(
      "our local count",
      (await table.list({ limit: DOCS + 1 })).length,
    );
  },
});

Deno.bench({
  name: "floor: a deep copy, a ULID and two Map.set() per doc",
  group: "write 10k docs locally",
  ...ITERATIONS,
  fn(b) {
    // The least a local write with an outbox does (ENGINE.md clause 1, the
    // storage contract's clause 3): keep a copy the caller cannot change
    // (the memory storage's own copy, the fastest generic one we have),
    // and an op with an ordered unique id beside it. RxDB's bulkInsert
    // keeps the document itself (a shallow clone) and no op.
    const docs = makeDocs(DOCS);
    const records = new Map<string, unknown>();
    const ops = new Map<string, unknown>();
    const newOpId = createUlid();
    b.start();
    for (const doc of docs) {
      const copy = copyCleanJson(doc, undefined);
      records.set(doc.id, copy);
      const opId = newOpId();
      ops.set(opId, { opId, id: doc.id, payload: copy });
    }
    b.end();
    assertCount("the floor's count", records.size);
  },
});

Deno.bench({
  name: "ours: put × N",
  group: "write 10k docs locally",
  ...ITERATIONS,
  async fn(b) {
    const docs = makeDocs(DOCS);
    await using client = openOurs(pullServer.baseUrl);
    const table = client.engine.table<BenchDoc>(PUSH_KIND);
    b.start();
    for (const doc of docs) await table.put(doc);
    b.end();
    assertCount(
      "our local count",
      (await table.list({ limit: DOCS + 1 })).length,
    );
  },
});

// ---------------------------------------------------------------------------
// push 10k docs: local writes + push
// ---------------------------------------------------------------------------

Deno.bench({
  name: "rxdb: bulkInsert + replicate",
  group: "push 10k docs",
  baseline: true,
  ...PUSH_ITERATIONS,
  async fn(b) {
    await using server = openServer();
    const docs = makeDocs(DOCS);
    await using client = await openRxdbClient({
      name: freshName("rxpush"),
      baseUrl: server.baseUrl,
      kind: PUSH_KIND,
      pull: false,
      pullBatchSize: PAGE,
      pushBatchSize: PUSH_BATCH,
      autoStart: true,
    });
    // The replication is running and idle before the clock starts.
    await client.awaitInSync();
    b.start();
    await client.collection.bulkInsert(docs);
    await client.awaitInSync();
    b.end();
    assertCount(
      "the server's count after RxDB's push",
      await server.count(PUSH_KIND),
    );
  },
});

Deno.bench({
  name: "ours: putMany + sync",
  group: "push 10k docs",
  ...PUSH_ITERATIONS,
  async fn(b) {
    await using server = openServer();
    const docs = makeDocs(DOCS);
    await using client = openOurs(server.baseUrl);
    const table = client.engine.table<BenchDoc>(PUSH_KIND);
    b.start();
    await table.putMany(docs);
    const { stats } = await client.engine.sync({ pullKinds: [] });
    b.end();
    assertCount("our pushed count", stats.pushed);
    assertCount(
      "the server's count after our push",
      await server.count(PUSH_KIND),
    );
  },
});

// ---------------------------------------------------------------------------
// push 10k docs, push only: the local writes are done before the clock
// ---------------------------------------------------------------------------

Deno.bench({
  name: "rxdb: replicate 10k unsynced docs",
  group: "push 10k docs, push only",
  baseline: true,
  ...PUSH_ITERATIONS,
  async fn(b) {
    await using server = openServer();
    await using client = await openRxdbClient({
      name: freshName("rxpushonly"),
      baseUrl: server.baseUrl,
      kind: PUSH_KIND,
      pull: false,
      pullBatchSize: PAGE,
      pushBatchSize: PUSH_BATCH,
      autoStart: false,
    });
    await client.collection.bulkInsert(makeDocs(DOCS));
    b.start();
    await client.replication.start();
    await client.awaitInSync();
    b.end();
    assertCount(
      "the server's count after RxDB's push",
      await server.count(PUSH_KIND),
    );
  },
});

Deno.bench({
  name: "ours: sync a 10k-op outbox",
  group: "push 10k docs, push only",
  ...PUSH_ITERATIONS,
  async fn(b) {
    await using server = openServer();
    await using client = openOurs(server.baseUrl);
    const table = client.engine.table<BenchDoc>(PUSH_KIND);
    await table.putMany(makeDocs(DOCS));
    b.start();
    const { stats } = await client.engine.sync({ pullKinds: [] });
    b.end();
    assertCount("our pushed count", stats.pushed);
    assertCount(
      "the server's count after our push",
      await server.count(PUSH_KIND),
    );
  },
});

// ---------------------------------------------------------------------------
// pull 10k docs into an empty client
// ---------------------------------------------------------------------------

Deno.bench({
  name: "rxdb: replicate into an empty collection",
  group: "pull 10k docs",
  baseline: true,
  ...ITERATIONS,
  async fn(b) {
    await using client = await openRxdbClient({
      name: freshName("rxpull"),
      baseUrl: pullServer.baseUrl,
      kind: PULL_KIND,
      pull: true,
      pullBatchSize: PAGE,
      pushBatchSize: PUSH_BATCH,
      autoStart: false,
    });
    b.start();
    await client.replication.start();
    await client.awaitInSync();
    b.end();
    assertCount("RxDB's local count", await client.collection.count().exec());
  },
});

Deno.bench({
  name: "ours: sync into an empty storage",
  group: "pull 10k docs",
  ...ITERATIONS,
  async fn(b) {
    await using client = openOurs(pullServer.baseUrl);
    const table = client.engine.table<BenchDoc>(PULL_KIND);
    b.start();
    const { stats } = await client.engine.sync();
    b.end();
    assertCount("our pulled count", stats.pulled);
    assertCount(
      "our local count",
      (await table.list({ limit: DOCS + 1 })).length,
    );
  },
});
