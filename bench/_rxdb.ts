/**
 * The RxDB 17 side of `peer_bench.ts`: an RxDB database on RxDB's own memory
 * storage whose collection replicates, through `replicateRxCollection`, with
 * the reference server over HTTP, speaking our wire contract
 * (docs/contract.md) instead of an RxDB backend protocol.
 *
 * - **Pull handler**: RxDB's checkpoint is our keyset cursor
 *   `(updated_at, id)` of the last item of the previous page; it becomes
 *   `GET {base}/{kind}?updatedSince=&afterId=&limit=`. A server tombstone
 *   (`deleted_at` set) becomes RxDB's `_deleted: true`.
 * - **Push handler**: RxDB's push rows become one `POST {base}/batch`. The
 *   row's `assumedMasterState` is the version RxDB believes the server holds,
 *   so its `updated_at` is sent as `baseUpdatedAt`: the server then refuses a
 *   stale write with `409` exactly where RxDB's protocol wants a conflict, and
 *   the handler returns the server's current record (the 409's `current`), as
 *   RxDB expects. Rows without an assumed master state are creates and carry
 *   no base, like our engine's creates.
 *
 * Written from RxDB's replication documentation; no RxDB code is copied.
 * Dev-mode is not imported, so RxDB validates nothing and runs no dev checks;
 * no premium plugin is used.
 *
 * @module
 */

import { createRxDatabase, type RxCollection } from "npm:rxdb@17.6.0";
import { getRxStorageMemory } from "npm:rxdb@17.6.0/plugins/storage-memory";
import {
  replicateRxCollection,
  type RxReplicationState,
} from "npm:rxdb@17.6.0/plugins/replication";
import type {
  ReplicationPullHandler,
  ReplicationPushHandler,
  RxJsonSchema,
  RxReplicationWriteToMasterRow,
  WithDeleted,
} from "npm:rxdb@17.6.0";

/** The benchmark's document: ten fields plus the server's `updated_at`. */
export type BenchDoc = {
  id: string;
  title: string;
  done: boolean;
  priority: number;
  tags: string[];
  owner: string;
  note: string;
  createdAt: string;
  estimate: number;
  category: string;
  updated_at?: string;
};

/** RxDB's pull checkpoint: our keyset cursor. */
export interface RestCheckpoint {
  /** The `updated_at` of the last pulled item. */
  readonly updatedAt: string;
  /** The id of the last pulled item. */
  readonly id: string;
}

/**
 * The collection schema. No secondary index: our memory storage keeps none
 * either, and RxDB's memory storage adds its own internal ones.
 */
const schema: RxJsonSchema<BenchDoc> = {
  version: 0,
  primaryKey: "id",
  type: "object",
  properties: {
    id: { type: "string", maxLength: 64 },
    title: { type: "string" },
    done: { type: "boolean" },
    priority: { type: "integer" },
    tags: { type: "array", items: { type: "string" } },
    owner: { type: "string" },
    note: { type: "string" },
    createdAt: { type: "string" },
    estimate: { type: "number" },
    category: { type: "string" },
    updated_at: { type: "string" },
  },
  required: ["id", "title", "done"],
};

/** A server record as the wire carries it. */
type WireRecord = Record<string, unknown> & {
  id: string;
  updated_at: string;
  deleted_at?: string | null;
};

/** A server record in RxDB's shape: `deleted_at` becomes `_deleted`. */
function toRxDoc(record: WireRecord): WithDeleted<BenchDoc> {
  const { deleted_at: deletedAt, ...rest } = record;
  return {
    ...(rest as unknown as BenchDoc),
    _deleted: deletedAt !== undefined && deletedAt !== null,
  };
}

async function expectJson(
  response: Response,
  action: string,
): Promise<unknown> {
  const text = await response.text();
  if (!response.ok) {
    throw new Error(
      `Cannot ${action} as the server answered ${response.status}: current value is ${
        text.slice(0, 200)
      }`,
    );
  }
  return JSON.parse(text);
}

/**
 * The pull handler: one keyset page per call. RxDB asks again while a page
 * is full (`batchSize` documents), as our engine does.
 *
 * @param baseUrl The server's base URL.
 * @param kind The server kind to pull.
 * @returns The handler.
 */
export function createPullHandler(
  baseUrl: string,
  kind: string,
): ReplicationPullHandler<BenchDoc, RestCheckpoint> {
  return async (checkpoint, batchSize) => {
    const query = new URLSearchParams({ limit: String(batchSize) });
    if (checkpoint !== undefined) {
      query.set("updatedSince", checkpoint.updatedAt);
      query.set("afterId", checkpoint.id);
    }
    const body = await expectJson(
      await fetch(`${baseUrl}/${encodeURIComponent(kind)}?${query}`),
      `pull '${kind}'`,
    ) as { items: WireRecord[] };
    const last = body.items.at(-1);
    return {
      documents: body.items.map(toRxDoc),
      checkpoint: last === undefined
        ? checkpoint
        : { updatedAt: last.updated_at, id: last.id },
    };
  };
}

/** One op of `POST /batch`, built from an RxDB push row. */
function toWireOp(
  kind: string,
  row: RxReplicationWriteToMasterRow<BenchDoc>,
): Record<string, unknown> {
  const { _deleted: deleted, ...doc } = row.newDocumentState as
    & WithDeleted<BenchDoc>
    & { _attachments?: unknown };
  delete doc._attachments;
  const base = row.assumedMasterState?.updated_at;
  return {
    // RxDB's rows carry no op id: each request gets fresh keys, and RxDB's
    // own assumedMasterState check (sent as the base) keeps a re-sent row
    // from overwriting a newer server version.
    opId: crypto.randomUUID(),
    kind,
    id: doc.id,
    type: deleted ? "delete" : "upsert",
    ...(deleted ? {} : { payload: doc }),
    ...(base === undefined ? {} : { baseUpdatedAt: base }),
  };
}

/**
 * The push handler: one `POST /batch` per call of RxDB's. A `409` result is
 * returned as a conflict (the server's current record); any other failure
 * throws, so that RxDB reports it on `error$` and retries the rows.
 *
 * @param baseUrl The server's base URL.
 * @param kind The server kind to write.
 * @returns The handler.
 */
export function createPushHandler(
  baseUrl: string,
  kind: string,
): ReplicationPushHandler<BenchDoc> {
  return async (rows) => {
    const body = await expectJson(
      await fetch(`${baseUrl}/batch`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ops: rows.map((row) => toWireOp(kind, row)) }),
      }),
      `push ${rows.length} rows to '${kind}'`,
    ) as {
      results: {
        status: number;
        error?: { current?: WireRecord; error?: string };
      }[];
    };
    const conflicts: WithDeleted<BenchDoc>[] = [];
    body.results.forEach((result, index) => {
      if (result.status >= 200 && result.status < 300) return;
      // A delete of a record the server never had is done (contract).
      if (result.status === 404 && rows[index]!.newDocumentState._deleted) {
        return;
      }
      const current = result.error?.current;
      if (result.status === 409 && current !== undefined) {
        conflicts.push(toRxDoc(current));
        return;
      }
      throw new Error(
        `Cannot push row ${index} to '${kind}' as the server answered ${result.status}: current value is ${
          JSON.stringify(result.error).slice(0, 200)
        }`,
      );
    });
    return conflicts;
  };
}

/** Options of {@linkcode openRxdbClient}. */
export interface RxdbClientOptions {
  /** The database name; unique per iteration, so each one starts empty. */
  readonly name: string;
  /** The server's base URL. */
  readonly baseUrl: string;
  /** The server kind the collection replicates with. */
  readonly kind: string;
  /** Whether to replicate server changes down (a pull handler). */
  readonly pull: boolean;
  /** Documents per pull page. */
  readonly pullBatchSize: number;
  /** Rows per push handler call. */
  readonly pushBatchSize: number;
  /** Whether the replication starts at once, or on `replication.start()`. */
  readonly autoStart: boolean;
}

/** An RxDB database, its collection and its replication. */
export interface RxdbClient extends AsyncDisposable {
  /** The collection. */
  readonly collection: RxCollection<BenchDoc>;
  /** The replication with the server. */
  readonly replication: RxReplicationState<BenchDoc, RestCheckpoint>;
  /**
   * Resolves when RxDB is in sync with the server; rejects as soon as the
   * replication reports an error (RxDB itself would retry forever).
   */
  awaitInSync(): Promise<void>;
}

/**
 * Opens an empty RxDB database with one replicated collection.
 *
 * `multiInstance: false` and `waitForLeadership: false`: one process, one
 * instance, as our engine; no leader election between browser tabs.
 *
 * @param options Name, server, handlers, batch sizes.
 * @returns The client; dispose of it to cancel the replication and remove
 * the database (RxDB's free tier allows 13 open collections at once).
 */
export async function openRxdbClient(
  options: RxdbClientOptions,
): Promise<RxdbClient> {
  const database = await createRxDatabase<{ docs: RxCollection<BenchDoc> }>({
    name: options.name,
    storage: getRxStorageMemory(),
    multiInstance: false,
  });
  const { docs } = await database.addCollections({ docs: { schema } });
  const replication = replicateRxCollection<BenchDoc, RestCheckpoint>({
    replicationIdentifier: `rest-${options.kind}`,
    collection: docs,
    live: true,
    waitForLeadership: false,
    autoStart: options.autoStart,
    push: {
      handler: createPushHandler(options.baseUrl, options.kind),
      batchSize: options.pushBatchSize,
    },
    ...(options.pull
      ? {
        pull: {
          handler: createPullHandler(options.baseUrl, options.kind),
          batchSize: options.pullBatchSize,
        },
      }
      : {}),
  });
  return {
    collection: docs,
    replication,
    async awaitInSync(): Promise<void> {
      let unsubscribe = (): void => {};
      const failed = new Promise<never>((_, reject) => {
        const subscription = replication.error$.subscribe((error) =>
          reject(error)
        );
        unsubscribe = () => subscription.unsubscribe();
      });
      try {
        await Promise.race([replication.awaitInSync(), failed]);
      } finally {
        unsubscribe();
      }
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await replication.cancel();
      await database.remove();
    },
  };
}
