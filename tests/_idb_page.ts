/**
 * The page side of `tests/indexeddb_test.ts`, bundled for Chromium: runs
 * the published storage conformance suite, unchanged, against
 * {@linkcode openIndexedDbStorage}, and the writers and checks of the
 * atomicity tests. The suite registers its cases with `Deno.test`; in the
 * page, a small stand-in for `Deno` collects those registrations, and the
 * Deno test runs each case by name and reports it as its own test. The
 * suite's `node:assert/strict` is the npm `assert` package's strict mode,
 * mapped in by the page's import map.
 *
 * Everything the Deno side calls is on `globalThis.idbHarness`.
 *
 * @module
 */

import { testStorage } from "../storage/conformance.ts";
import { openIndexedDbStorage } from "../storage/indexeddb.ts";
import type { Mutation, StoredOp, StoredRecord } from "../src/storage.ts";
import type { IdbDatabase, IdbFactory } from "../storage/_idb_types.ts";

/** The page's IndexedDB (Deno's types have none). */
const indexedDB = (globalThis as unknown as { indexedDB: IdbFactory })
  .indexedDB;

/** A case as the suite registered it. */
interface Registration {
  readonly name: string;
  readonly ignore: boolean;
  readonly fn: () => unknown;
}

/** A case's outcome, as plain data for the Deno side. */
export type CaseOutcome =
  | { readonly ok: true }
  | {
    readonly ok: false;
    readonly name: string;
    readonly message: string;
    readonly stack: string;
  };

/** What the atomicity check found in a store. */
export interface AtomicityReport {
  /** How many records the store holds. */
  readonly records: number;
  /** How many ops it holds. */
  readonly ops: number;
  /** The highest write number committed, from the `written` meta entry. */
  readonly written: number;
  /** Every way the store breaks "a record and its op, or neither". */
  readonly problems: string[];
}

const registrations = new Map<string, Registration>();

/**
 * The part of `Deno` the suite uses: `test()` to register its cases and
 * `inspect()` in two of its messages.
 */
const denoStandIn = {
  test(definition: Registration | string, fn?: () => unknown): void {
    const registration = typeof definition === "string"
      ? { name: definition, ignore: false, fn: fn! }
      : definition;
    if (registrations.has(registration.name)) {
      throw new Error(`Cannot register case "${registration.name}" twice`);
    }
    registrations.set(registration.name, {
      name: registration.name,
      ignore: registration.ignore === true,
      fn: registration.fn,
    });
  },
  inspect(value: unknown): string {
    try {
      return JSON.stringify(value) ?? String(value);
    } catch {
      return String(value);
    }
  },
};

let databases = 0;

function databaseName(prefix: string): string {
  databases += 1;
  return `${prefix}-${Date.now().toString(36)}-${databases}`;
}

function deleteDatabase(name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = () => {
      clearTimeout(timer);
      resolve();
    };
    request.onerror = () => {
      clearTimeout(timer);
      reject(request.error);
    };
    // Chromium reports "blocked" while the close of a connection is still
    // on its way to the backend, then deletes: only a handle that stays
    // open (one a case forgot to close) blocks it for good.
    request.onblocked = () => {
      timer ??= setTimeout(
        () =>
          reject(
            new Error(`Cannot delete database "${name}": it stays open`),
          ),
        10_000,
      );
    };
  });
}

/**
 * Registers the conformance suite with the stand-in and lists its cases.
 *
 * @returns Every case's name and whether the adapter's capabilities
 * exclude it, in registration order.
 */
async function register(): Promise<{ name: string; ignore: boolean }[]> {
  (globalThis as Record<string, unknown>)["Deno"] = denoStandIn;
  registrations.clear();
  await testStorage("indexeddb", async () => {
    const name = databaseName("conformance");
    return {
      storage: await openIndexedDbStorage(name),
      reopen: () => openIndexedDbStorage(name),
      teardown: () => deleteDatabase(name),
    };
  });
  return [...registrations.values()].map(({ name, ignore }) => ({
    name,
    ignore,
  }));
}

/** Runs one registered case. */
async function run(name: string): Promise<CaseOutcome> {
  const registration = registrations.get(name);
  if (registration === undefined) {
    return {
      ok: false,
      name: "Error",
      message: `Cannot run case "${name}" as it was not registered`,
      stack: "",
    };
  }
  try {
    await registration.fn();
    return { ok: true };
  } catch (error) {
    const known = error instanceof Error ? error : new Error(String(error));
    return {
      ok: false,
      name: known.name,
      message: known.message,
      stack: known.stack ?? "",
    };
  }
}

function record(n: number): StoredRecord {
  return {
    kind: "todo",
    id: `r${n}`,
    data: { n, title: "x".repeat(200) },
    deleted: false,
    base: null,
    lastOpId: opIdOf(n),
    localUpdatedAt: n,
  };
}

function opIdOf(n: number): string {
  return `01J${String(n).padStart(23, "0")}`;
}

function op(n: number): StoredOp {
  return {
    opId: opIdOf(n),
    kind: "todo",
    id: `r${n}`,
    type: "upsert",
    payload: { n, title: "x".repeat(200) },
    baseUpdatedAt: null,
    base: null,
    changedFields: null,
    createdAt: n,
    editedAt: n,
    attempts: 0,
    revision: 0,
    conflicts: 0,
    force: false,
    state: "pending",
    error: null,
    conflict: null,
  };
}

/** How many writes resolved so far, for the Deno side to poll. */
let committed = 0;

/**
 * Starts `writers` loops that write record n, its op and the `written`
 * counter in one write each, until the page goes away. Returns at once.
 */
async function startWrites(
  name: string,
  writers: number,
): Promise<void> {
  const storage = await openIndexedDbStorage(name);
  let next = 0;
  const loop = async (): Promise<void> => {
    for (;;) {
      const n = ++next;
      const mutations: Mutation[] = [
        { type: "putRecord", record: record(n), expect: null },
        { type: "putOp", op: op(n), expect: null },
        { type: "putMeta", key: `written/${n}`, value: n, expect: null },
      ];
      const result = await storage.write(mutations);
      if (!result.ok) throw new Error(`Write ${n} was refused`);
      committed += 1;
    }
  };
  for (let writer = 0; writer < writers; writer++) {
    loop().catch((error) => console.error(error));
  }
}

/** How many writes resolved in this page so far. */
function written(): number {
  return committed;
}

/** Checks that every record has its op and every op its record. */
async function checkAtomicity(name: string): Promise<AtomicityReport> {
  await using storage = await openIndexedDbStorage(name);
  const records = await storage.listRecords("todo");
  const ops = await storage.listOps();
  const meta = await storage.getMeta(
    records.map((entry) => `written/${entry.value.data["n"]}`),
  );
  const problems: string[] = [];
  const opIds = new Set(ops.map((entry) => entry.value.opId));
  const recordIds = new Set(records.map((entry) => entry.value.id));
  for (const entry of records) {
    if (!opIds.has(entry.value.lastOpId ?? "")) {
      problems.push(`record ${entry.value.id} has no op`);
    }
  }
  for (const entry of ops) {
    if (!recordIds.has(entry.value.id)) {
      problems.push(`op ${entry.value.opId} has no record`);
    }
  }
  meta.forEach((entry, index) => {
    if (entry === undefined) {
      problems.push(`record ${records[index]!.value.id} has no meta entry`);
    }
  });
  let highest = 0;
  for (const entry of records) {
    highest = Math.max(highest, entry.value.data["n"] as number);
  }
  return {
    records: records.length,
    ops: ops.length,
    written: highest,
    problems,
  };
}

/**
 * Stores hand-made values under the adapter's keys, as another program
 * sharing the database might, and reads each back: every read must reject
 * with a StorageError that names the item (contract clause 9).
 *
 * @returns One line per read: the error's name and message.
 */
async function readCorrupt(): Promise<string[]> {
  const name = databaseName("corrupt");
  const storage = await openIndexedDbStorage(name);
  await storage.close();
  const database = await new Promise<IdbDatabase>((resolve, reject) => {
    const request = indexedDB.open(name);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const valid = JSON.stringify(record(1));
  const transaction = database.transaction(
    ["records", "ops", "meta"],
    "readwrite",
  );
  const records = transaction.objectStore("records");
  records.put("not an envelope", ["todo", "a"]);
  records.put({ v: "{not json", r: "1", i: "b", l: "todo" }, ["todo", "b"]);
  records.put({ v: valid, r: "1", i: "c", l: "todo" }, ["todo", "c"]);
  records.put({ v: valid, r: 7, i: "d", l: "todo" }, ["todo", "d"]);
  const ops = transaction.objectStore("ops");
  ops.put(
    { v: JSON.stringify(op(1)), r: "1", s: "pending", i: "r1", o: "x" },
    "x",
  );
  ops.put({ v: '{"opId":"y"}', r: "1", s: "pending", i: "r1", o: "y" }, "y");
  transaction.objectStore("meta").put({ v: "", r: "1" }, "m");
  await new Promise<void>((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onabort = () => reject(transaction.error);
  });
  database.close();
  const reopened = await openIndexedDbStorage(name);
  const lines: string[] = [];
  const reads: (() => Promise<unknown>)[] = [
    ...["a", "b", "c", "d"].map((id) => () =>
      reopened.getRecords("todo", [id])
    ),
    () => reopened.listRecords("todo", { includeDeleted: true }),
    // An envelope without a live kind is in no live listing: "b" is first.
    () => reopened.listRecords("todo"),
    () => reopened.getOps(["x"]),
    () => reopened.getOps(["y"]),
    () => reopened.listOps(),
    () => reopened.getMeta(["m"]),
  ];
  for (const read of reads) {
    try {
      await read();
      lines.push("resolved");
    } catch (error) {
      lines.push(`${(error as Error).name}: ${(error as Error).message}`);
    }
  }
  await reopened.close();
  await deleteDatabase(name);
  return lines;
}

/** Creates a fresh database name for a test. */
function freshName(prefix: string): string {
  return databaseName(prefix);
}

(globalThis as Record<string, unknown>)["idbHarness"] = {
  register,
  run,
  startWrites,
  written,
  checkAtomicity,
  freshName,
  deleteDatabase,
  readCorrupt,
};
