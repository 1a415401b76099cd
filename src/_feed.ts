/**
 * The change feed of engines sharing one storage (ENGINE.md clause 26): the
 * store-level change notification that works on every storage. A head entry
 * `{ seq }` counts the entries; entry `seq` lives in slot `seq % RING`, so
 * the feed never holds more than {@linkcode FEED_RING} entries and needs no
 * pruning. An entry is appended with one write: the head under its read
 * revision (`expect`) and the slot, so concurrent writers take turns.
 * Readers poll the head (one meta key: on Deno KV a versionstamp read, on
 * SQLite a read that sees other processes' commits) and read the slots they
 * have not seen; a reader that fell more than the ring behind, or finds a
 * slot overwritten, knows it missed entries.
 *
 * @module
 */

import {
  type ErrorCategory,
  StorageError,
  SyncError,
  toSyncError,
} from "./errors.ts";
import {
  isJsonObject,
  type JsonObject,
  type JsonValue,
  setOwn,
} from "./json.ts";
import type { FeedOutcome } from "./_shared_outcomes.ts";
import type { Storage, Versioned } from "./storage.ts";

/** The meta key of the feed's head. */
export const HEAD_KEY = "shared/head";

/** How many entries the feed keeps. */
export const FEED_RING = 1024;

/** The most ids an entry names per table; past it, the table gets `"*"`. */
export const MAX_FEED_IDS = 100;

/** How many slots one read asks for. */
const READ_CHUNK = 64;

/** The meta key of the slot holding entry `seq`. */
export function slotKey(seq: number): string {
  return `shared/feed/${seq % FEED_RING}`;
}

/** Changed records by table: their ids, or `"*"` for too many to name. */
export type FeedKinds = Record<string, string[] | "*">;

/** What one feed entry says, besides its number and writer. */
export type FeedBody =
  /** Records this engine changed, all of one origin. */
  | {
    readonly changes: {
      readonly origin: "local" | "pushed" | "pulled";
      readonly kinds: FeedKinds;
    };
  }
  /** A follower asks the syncer to sync. */
  | {
    readonly request: {
      readonly id: string;
      readonly mode: "sync" | "fullResync";
      readonly pushKinds?: string[];
      readonly pullKinds?: string[];
    };
  }
  /** Ops settled by this engine (clause 24 across engines). */
  | { readonly outcomes: readonly FeedOutcome[] }
  /** The syncer answers requests. */
  | {
    readonly reply: {
      readonly ids: string[];
      readonly ok: boolean;
      readonly result?: JsonObject;
      readonly error?: JsonObject;
    };
  };

/** A feed entry as read back. */
export type FeedEntry = FeedBody & {
  /** Its number, from 1. */
  readonly seq: number;
  /** The engine that wrote it. */
  readonly from: string;
};

/**
 * Reads the head's sequence number: 0 for an empty feed or a value that is
 * not a head.
 *
 * @param entry The head entry, if any.
 * @returns The last entry's number.
 */
export function headSeq(entry: Versioned<JsonValue> | undefined): number {
  const value = entry?.value;
  if (!isJsonObject(value)) return 0;
  const seq = value["seq"];
  return typeof seq === "number" && Number.isSafeInteger(seq) && seq > 0
    ? seq
    : 0;
}

/**
 * Appends an entry.
 *
 * @param storage The store.
 * @param entry The writer's name and what it says.
 * @param retries The most attempts when other writers win the head.
 * @returns The entry's number.
 * @throws {StorageError} When every attempt lost the race, or the store
 * failed.
 */
export async function appendEntry(
  storage: Storage,
  entry: { readonly from: string; readonly body: FeedBody },
  retries: number,
): Promise<number> {
  for (let attempt = 0; attempt < retries; attempt++) {
    const [head] = await storage.getMeta([HEAD_KEY]);
    const seq = headSeq(head) + 1;
    const result = await storage.write([
      {
        type: "putMeta",
        key: HEAD_KEY,
        value: { seq },
        expect: head?.rev ?? null,
      },
      {
        type: "putMeta",
        key: slotKey(seq),
        value: { ...entry.body, seq, from: entry.from } as JsonObject,
      },
    ]);
    if (result.ok) return seq;
  }
  throw new StorageError(
    `Cannot append to the shared change feed as other writers won ${retries} times: current value is ${retries}`,
    { retryable: true },
  );
}

/** What {@linkcode readEntries} found. */
export interface FeedRead {
  /** The readable entries after `after`, in order. */
  readonly entries: FeedEntry[];
  /** Whether entries were lost: overwritten or unreadable. */
  readonly missed: boolean;
}

/**
 * Reads the entries after `after` up to `head`.
 *
 * @param storage The store.
 * @param range The last entry seen and the head's number.
 * @returns The entries and whether some were missed.
 */
export async function readEntries(
  storage: Storage,
  range: { readonly after: number; readonly head: number },
): Promise<FeedRead> {
  const first = Math.max(range.after + 1, range.head - FEED_RING + 1);
  let missed = first > range.after + 1;
  const entries: FeedEntry[] = [];
  for (let start = first; start <= range.head; start += READ_CHUNK) {
    const seqs: number[] = [];
    for (
      let seq = start;
      seq <= range.head && seqs.length < READ_CHUNK;
      seq++
    ) {
      seqs.push(seq);
    }
    const values = await storage.getMeta(seqs.map(slotKey));
    values.forEach((value, index) => {
      const entry = readEntry(value?.value, seqs[index]!);
      if (entry === null) missed = true;
      else entries.push(entry);
    });
  }
  return { entries, missed };
}

/** An entry of number `seq`, or `null` when the slot holds no such entry. */
function readEntry(
  value: JsonValue | undefined,
  seq: number,
): FeedEntry | null {
  if (!isJsonObject(value) || value["seq"] !== seq) return null;
  if (typeof value["from"] !== "string") return null;
  const { changes, request, reply } = value;
  if (isJsonObject(changes) && isJsonObject(changes["kinds"])) {
    const origin = changes["origin"];
    if (origin !== "local" && origin !== "pushed" && origin !== "pulled") {
      return null;
    }
  } else if (isJsonObject(request)) {
    if (typeof request["id"] !== "string") return null;
  } else if (isJsonObject(reply)) {
    if (!Array.isArray(reply["ids"])) return null;
  } else if (Array.isArray(value["outcomes"])) {
    // Each item is checked where it is used (readFeedOutcomes).
  } else {
    return null;
  }
  return value as unknown as FeedEntry;
}

/**
 * Names changed records by table for an entry: ids up to
 * {@linkcode MAX_FEED_IDS} per table, `"*"` past it.
 *
 * @param changed Ids by table.
 * @returns The entry's `kinds`.
 */
export function feedKinds(changed: Map<string, Set<string>>): FeedKinds {
  const kinds: FeedKinds = {};
  for (const [kind, ids] of changed) {
    // A kind may be `__proto__`: set it as an own property.
    setOwn(kinds as JsonObject, kind, ids.size > MAX_FEED_IDS ? "*" : [...ids]);
  }
  return kinds;
}

/** The categories a reply may name; another becomes `server`. */
const CATEGORIES: readonly ErrorCategory[] = [
  "network",
  "auth",
  "server",
  "rejected",
  "conflict",
  "parse",
  "validation",
  "storage",
  "closed",
];

/**
 * An error as a feed reply carries it.
 *
 * @param error What the syncer's run threw.
 * @returns Its name, message, category, retryability, status and code.
 */
export function describeError(error: unknown): JsonObject {
  const typed = toSyncError(error);
  return {
    name: typed.name,
    message: typed.message,
    category: typed.category,
    retryable: typed.retryable,
    ...(typed.status === undefined ? {} : { status: typed.status }),
    ...(typed.code === undefined ? {} : { code: typed.code }),
  };
}

/**
 * The syncer's error, rebuilt from its reply.
 *
 * @param value What the reply carries.
 * @returns A `SyncError` with the same name, message and fields.
 */
export function readError(value: unknown): SyncError {
  const described = isJsonObject(value) ? value : {};
  const { name, message, category, retryable, status, code } = described;
  const error = new SyncError(
    typeof message === "string"
      ? message
      : "Cannot sync as the store's syncer failed",
    {
      category: CATEGORIES.includes(category as ErrorCategory)
        ? category as ErrorCategory
        : "server",
      retryable: retryable === true,
      ...(typeof status === "number" ? { status } : {}),
      ...(typeof code === "string" ? { code } : {}),
    },
  );
  if (typeof name === "string") error.name = name;
  return error;
}
