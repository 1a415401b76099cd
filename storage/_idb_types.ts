/**
 * The subset of IndexedDB that `storage/indexeddb.ts` uses, declared here as
 * structural types so that the package type-checks under Deno without the
 * DOM library (Deno has no IndexedDB; the adapter runs in browsers), plus
 * the few helpers that turn IDB's events into promises. Private to the
 * IndexedDB adapter: not exported from the package.
 *
 * @module
 */

/** A valid IndexedDB key, as far as this adapter builds them. */
export type IdbKey = string | number | readonly IdbKey[];

/** `IDBRequest`: settles once, through `onsuccess` or `onerror`. */
export interface IdbRequest<T> {
  /** The result, once it succeeded. */
  readonly result: T;
  /** The error, once it failed. */
  readonly error: DOMException | null;
  /** Called when it succeeded. */
  onsuccess: ((event: Event) => void) | null;
  /** Called when it failed. */
  onerror: ((event: Event) => void) | null;
}

/** `IDBOpenDBRequest`. */
export interface IdbOpenRequest extends IdbRequest<IdbDatabase> {
  /** The `versionchange` transaction, during an upgrade. */
  readonly transaction: IdbTransaction | null;
  /** Called to create or upgrade the layout. */
  onupgradeneeded: ((event: IdbVersionChangeEvent) => void) | null;
  /** Called while other connections block an upgrade. */
  onblocked: ((event: Event) => void) | null;
}

/** `IDBVersionChangeEvent`. */
export interface IdbVersionChangeEvent extends Event {
  /** The version before the change. */
  readonly oldVersion: number;
  /** The version after it; `null` for a deletion. */
  readonly newVersion: number | null;
}

/** `IDBFactory` (`globalThis.indexedDB`). */
export interface IdbFactory {
  /** Opens a database. */
  open(name: string, version?: number): IdbOpenRequest;
  /** Deletes a database. */
  deleteDatabase(name: string): IdbOpenRequest;
  /** Compares two keys. */
  cmp(first: unknown, second: unknown): number;
}

/** `IDBKeyRange`, as made by the `IDBKeyRange` interface object. */
export interface IdbKeyRange {
  /** The lower bound. */
  readonly lower: unknown;
  /** The upper bound. */
  readonly upper: unknown;
}

/** The `IDBKeyRange` interface object: its static constructors. */
export interface IdbKeyRangeStatic {
  /** A range between two keys. */
  bound(
    lower: IdbKey,
    upper: IdbKey,
    lowerOpen?: boolean,
    upperOpen?: boolean,
  ): IdbKeyRange;
}

/** `IDBObjectStoreParameters`, `IDBIndexParameters`. */
export interface IdbIndexParameters {
  /** Whether keys are unique. */
  readonly unique?: boolean;
  /** Whether an array value adds one entry per item. */
  readonly multiEntry?: boolean;
}

/** What reads an object store and an index have in common. */
export interface IdbReadable {
  /** Reads the value under a key. */
  get(key: IdbKey): IdbRequest<unknown>;
  /** Reads the values in a range, in key order. */
  getAll(query?: IdbKeyRange, count?: number): IdbRequest<unknown[]>;
  /** Reads the primary keys in a range, in key order. */
  getAllKeys(query?: IdbKeyRange, count?: number): IdbRequest<unknown[]>;
}

/** `IDBIndex`. */
export type IdbIndex = IdbReadable;

/** `IDBObjectStore`. */
export interface IdbObjectStore extends IdbReadable {
  /** Writes a value under a key. */
  put(value: unknown, key?: IdbKey): IdbRequest<unknown>;
  /** Deletes the value under a key. */
  delete(key: IdbKey): IdbRequest<undefined>;
  /** An index of the store. */
  index(name: string): IdbIndex;
  /** Creates an index (in a `versionchange` transaction). */
  createIndex(
    name: string,
    keyPath: string | readonly string[],
    options?: IdbIndexParameters,
  ): IdbIndex;
}

/** `IDBTransaction`. */
export interface IdbTransaction {
  /** The error, once it failed. */
  readonly error: DOMException | null;
  /** A store in the transaction's scope. */
  objectStore(name: string): IdbObjectStore;
  /** Aborts the transaction. */
  abort(): void;
  /** Commits once the requests made so far succeed. */
  commit?(): void;
  /** Called when it committed. */
  oncomplete: ((event: Event) => void) | null;
  /** Called when it failed. */
  onerror: ((event: Event) => void) | null;
  /** Called when it aborted. */
  onabort: ((event: Event) => void) | null;
}

/** The options of `IDBDatabase.transaction()`. */
export interface IdbTransactionOptions {
  /** Whether the commit waits for the disk. */
  readonly durability?: "default" | "strict" | "relaxed";
}

/** `IDBDatabase`. */
export interface IdbDatabase {
  /** The database's name. */
  readonly name: string;
  /** The database's version. */
  readonly version: number;
  /** The names of its stores. */
  readonly objectStoreNames: { contains(name: string): boolean };
  /** Starts a transaction. */
  transaction(
    stores: string | readonly string[],
    mode: "readonly" | "readwrite",
    options?: IdbTransactionOptions,
  ): IdbTransaction;
  /** Creates a store (in a `versionchange` transaction). */
  createObjectStore(name: string): IdbObjectStore;
  /** Closes the connection once its transactions end. */
  close(): void;
  /** Called when another connection deletes or upgrades the database. */
  onversionchange: ((event: Event) => void) | null;
  /** Called when the browser closed the connection. */
  onclose: ((event: Event) => void) | null;
}

/** The IndexedDB globals a page (or worker) provides. */
export interface IdbGlobals {
  /** `globalThis.indexedDB`. */
  readonly indexedDB: IdbFactory;
  /** `globalThis.IDBKeyRange`. */
  readonly IDBKeyRange: IdbKeyRangeStatic;
}

/**
 * The IndexedDB globals of this realm, or `undefined` where there are none
 * (Deno, Node.js, Bun).
 */
export function idbGlobals(): IdbGlobals | undefined {
  const scope = globalThis as {
    indexedDB?: IdbFactory;
    IDBKeyRange?: IdbKeyRangeStatic;
  };
  if (scope.indexedDB === undefined || scope.IDBKeyRange === undefined) {
    return undefined;
  }
  return { indexedDB: scope.indexedDB, IDBKeyRange: scope.IDBKeyRange };
}

/**
 * Settles with a request's result. IDB keeps a transaction active while the
 * success event dispatches and the microtasks it queued run, so a caller may
 * `await` this and issue the next request of the same transaction.
 */
export function settled<T>(request: IdbRequest<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = (event) => {
      // Handled here: the transaction's own error handler decides its fate.
      event.preventDefault();
      reject(request.error);
    };
  });
}

/** How a transaction ended. */
export type TransactionEnd =
  | { readonly type: "complete" }
  | { readonly type: "abort"; readonly error: DOMException | null };

/** Settles once a transaction completes or aborts (never rejects). */
export function ended(transaction: IdbTransaction): Promise<TransactionEnd> {
  return new Promise<TransactionEnd>((resolve) => {
    transaction.oncomplete = () => resolve({ type: "complete" });
    transaction.onabort = () =>
      resolve({ type: "abort", error: transaction.error });
  });
}
