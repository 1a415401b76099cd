/**
 * The IndexedDB adapter's write: one contract write is one `readwrite`
 * transaction over the stores it touches and the revision counter. Inside
 * it, the write reads the current revision of every item it writes, checks
 * every `expect` against them (the state before the write, clause 2),
 * aborts when one fails, and otherwise puts and deletes the items and
 * advances the counter. IndexedDB commits a transaction all-or-nothing,
 * also when the page is closed or crashes mid-write (clause 1), and
 * serialises readwrite transactions whose stores overlap, so two pages
 * writing at once never interleave: every write touches the counter.
 * Private to the IndexedDB adapter.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { WriteResult } from "../src/storage.ts";
import type { CheckedMutation } from "./_validate.ts";
import {
  abortQuietly,
  COUNTERS,
  META,
  metaRow,
  opRow,
  OPS,
  recordRow,
  RECORDS,
  REV_COUNTER,
} from "./_idb_layout.ts";
import {
  ended,
  type IdbDatabase,
  type IdbKey,
  type IdbObjectStore,
  type IdbTransaction,
  settled,
} from "./_idb_types.ts";
import { describe } from "../src/describe.ts";

/** A checked write, ready to commit. */
export interface WritePlan {
  /** The checked mutations, in order. */
  readonly mutations: readonly CheckedMutation[];
  /** The JSON text of each mutation's value; `undefined` for a delete. */
  readonly texts: readonly (string | undefined)[];
  /** Aborts the write before it commits. */
  readonly signal: AbortSignal | undefined;
  /** The transaction's durability hint. */
  readonly durability: "strict" | "relaxed";
}

/** Where a checked mutation's item lives. */
interface Target {
  readonly store: string;
  readonly key: IdbKey;
  /** One string per item, to tell two mutations of one item. */
  readonly identity: string;
}

function targetOf(mutation: CheckedMutation): Target {
  switch (mutation.space) {
    case "record":
      return {
        store: RECORDS,
        key: [mutation.kind, mutation.id],
        // The kind's length keeps "ab" + "c" apart from "a" + "bc".
        identity: `r${mutation.kind.length}:${mutation.kind}${mutation.id}`,
      };
    case "op":
      return { store: OPS, key: mutation.opId, identity: `o${mutation.opId}` };
    case "meta":
      return { store: META, key: mutation.key, identity: `m${mutation.key}` };
  }
}

/**
 * Commits a checked write in one transaction.
 *
 * @returns `{ ok: true, revs }`, or `{ ok: false }` when an `expect` failed.
 * @throws The signal's reason when it aborted before the commit; a
 * `StorageError` when IndexedDB failed (nothing is committed then).
 */
export async function commitWrite(
  database: IdbDatabase,
  plan: WritePlan,
): Promise<WriteResult> {
  const { mutations, signal } = plan;
  if (mutations.length === 0) return { ok: true, revs: [] };
  const targets = mutations.map(targetOf);
  const storeNames = [
    ...new Set([...targets.map((target) => target.store), COUNTERS]),
  ];
  const transaction = database.transaction(storeNames, "readwrite", {
    durability: plan.durability,
  });
  const end = ended(transaction);
  let aborted: { reason: unknown } | undefined;
  const onAbort = (): void => {
    // Only a transaction that had not committed yet can be aborted; one
    // that had is reported as committed, which it is.
    if (aborted === undefined && abortQuietly(transaction)) {
      aborted = { reason: signal!.reason };
    }
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const outcome = await apply(transaction, { plan, targets });
    if (outcome === undefined) {
      abortQuietly(transaction);
      await end;
      if (aborted !== undefined) throw aborted.reason;
      return { ok: false };
    }
    transaction.commit?.();
    const result = await end;
    if (aborted !== undefined) throw aborted.reason;
    if (result.type === "abort") {
      throw new StorageError(
        `Cannot write mutations as IndexedDB aborted the transaction: current value is ${
          result.error === null
            ? "no error"
            : `${result.error.name}: ${result.error.message}`
        }`,
        { cause: result.error },
      );
    }
    return { ok: true, revs: outcome };
  } catch (error) {
    // A failed request aborts the transaction on its own; make sure of it,
    // and report the signal's reason when the abort was the signal's.
    abortQuietly(transaction);
    await end;
    if (aborted !== undefined) throw aborted.reason;
    throw error;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Reads the current revisions, checks the expects, then puts and deletes.
 *
 * @returns The revision of each mutation's item after the write, or
 * `undefined` when an expect failed (nothing was put then).
 */
async function apply(
  transaction: IdbTransaction,
  work: { readonly plan: WritePlan; readonly targets: readonly Target[] },
): Promise<(string | null)[] | undefined> {
  const { plan, targets } = work;
  const stores = new Map<string, IdbObjectStore>();
  const storeOf = (name: string): IdbObjectStore => {
    let store = stores.get(name);
    if (store === undefined) {
      store = transaction.objectStore(name);
      stores.set(name, store);
    }
    return store;
  };
  const counters = storeOf(COUNTERS);
  // Every read is issued at once; they all see the state before the write.
  const [revs, counter] = await Promise.all([
    Promise.all(
      targets.map((target, index) =>
        plan.mutations[index]!.expect === undefined
          ? undefined
          : settled(storeOf(target.store).get(target.key)).then(revOf)
      ),
    ),
    settled(counters.get(REV_COUNTER)),
  ]);
  for (let index = 0; index < targets.length; index++) {
    if (!holds(plan.mutations[index]!.expect, revs[index])) return undefined;
  }
  let next = counterValue(counter);
  const after = new Map<string, string | null>();
  for (let index = 0; index < targets.length; index++) {
    const mutation = plan.mutations[index]!;
    const target = targets[index]!;
    const store = storeOf(target.store);
    if (mutation.value === undefined) {
      store.delete(target.key);
      after.set(target.identity, null);
      continue;
    }
    next += 1;
    const rev = next.toString(36);
    const text = plan.texts[index]!;
    store.put(rowOf(mutation, text, rev), target.key);
    after.set(target.identity, rev);
  }
  counters.put(next, REV_COUNTER);
  return targets.map((target) => after.get(target.identity) ?? null);
}

function rowOf(mutation: CheckedMutation, text: string, rev: string): unknown {
  switch (mutation.space) {
    case "record":
      return recordRow(mutation.value!, text, rev);
    case "op":
      return opRow(mutation.value!, text, rev);
    case "meta":
      return metaRow(text, rev);
  }
}

/**
 * The revision of a stored item: `undefined` when there is none, `null`
 * when it exists but its stored form has no revision (a corrupt item, which
 * no `expect` but "none" lets a write replace).
 */
function revOf(raw: unknown): string | null | undefined {
  if (raw === undefined) return undefined;
  const rev = (raw as { r?: unknown } | null)?.r;
  return typeof rev === "string" ? rev : null;
}

function holds(
  expect: string | null | undefined,
  rev: string | null | undefined,
): boolean {
  if (expect === undefined) return true;
  if (expect === null) return rev === undefined;
  return rev === expect;
}

/**
 * The last revision issued. Revisions come from one counter for the whole
 * database, advanced in the write's transaction, so none ever repeats, for
 * any key, across handles, pages and reopens.
 */
function counterValue(raw: unknown): number {
  if (raw === undefined) return 0;
  if (typeof raw !== "number" || !Number.isSafeInteger(raw) || raw < 0) {
    throw new StorageError(
      `Cannot write mutations as the stored revision counter is not a non-negative integer: current value is ${
        describe(raw)
      }`,
    );
  }
  return raw;
}
