/**
 * The JSON checks every storage adapter makes on the values it is given.
 * Private to the package's adapters: not exported from it.
 *
 * JSON is checked in two ways: {@linkcode checkJson} only validates, for an
 * adapter that serialises the value at once and so never keeps the caller's
 * object; {@linkcode copyJson} validates and deep-copies, for one that keeps
 * the value as an object. Both walk at most {@linkcode MAX_DEPTH} levels
 * deep, so their stack is bounded whatever the value: a deeper value is
 * refused with a `StorageError` rather than overflowing the stack.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import { type JsonObject, type JsonValue, setOwn } from "../src/json.ts";
import { describe } from "../src/describe.ts";

/**
 * How deep a value may nest: the value itself is level 1 when it is an
 * object or an array. The contract asks every adapter to hold 256 levels
 * (a record's data nests at most 64 by the wire contract, a few more around
 * it); ours refuse deeper values, since checking and copying them recurses
 * once per level.
 */
export const MAX_DEPTH = 256;

/** Options for {@linkcode checkJson}. */
export interface CheckJsonOptions {
  /** What the caller was doing, for the message. */
  readonly action: string;
  /**
   * Where the value is, for the message; restored on return.
   *
   * @default {[]}
   */
  readonly path?: (string | number)[];
  /**
   * Objects of the same write already found to be such JSON, by how many
   * levels they nest, skipped when met again where that many more levels
   * fit the limit. Only objects at the first two levels are looked up and
   * added: the engine passes one object as a record's data (level 1), its
   * base's data (level 2) and its op's payload (level 1). The checks of a
   * write run synchronously, so no other code changes the objects
   * meanwhile; an accessor property may still answer differently each time
   * it is read, here and when the adapter serialises the value, and a
   * getter met later in the walk may deepen an object already checked (the
   * engine only ever passes plain data it copied itself). A `Map` does, or
   * {@linkcode RecentChecks}.
   */
  readonly seen?: CheckCache | undefined;
}

/**
 * Objects already found to be JSON, by their height (how many levels of
 * objects and arrays they nest, themselves included): a `Map` does, or
 * anything cheaper that forgets some (a forgotten object is checked again,
 * which is only slower).
 */
export interface CheckCache {
  /** The height of `source`, if remembered. */
  get(source: object): number | undefined;
  /** Remembers that `source` is JSON of that height. */
  set(source: object, height: number): void;
}

/**
 * A {@linkcode CheckCache} of the last few objects checked. The objects a
 * write shares sit side by side: a record's data and its base's data, or
 * its op's payload, written next to each other. A `Map` of every object of
 * a write cost more than it saved: checking a pull's 100,000 records (about
 * 200 bytes of JSON each) took 63 ms with one, 49 ms with this when only
 * depths were kept (45 ms with no cache at all, which walks shared data
 * twice), and 43-44 ms (against 52-61, same runs) since heights are kept
 * and a base's data, one level deeper than the record's, is found too.
 */
export class RecentChecks implements CheckCache {
  static readonly #SIZE = 8;
  readonly #sources: (object | undefined)[] = new Array(RecentChecks.#SIZE);
  readonly #heights: number[] = new Array(RecentChecks.#SIZE).fill(0);
  #next = 0;

  get(source: object): number | undefined {
    const sources = this.#sources;
    for (let i = 0; i < sources.length; i++) {
      if (sources[i] === source) return this.#heights[i]!;
    }
    return undefined;
  }

  set(source: object, height: number): void {
    const slot = this.#next;
    this.#sources[slot] = source;
    this.#heights[slot] = height;
    this.#next = (slot + 1) % RecentChecks.#SIZE;
  }
}

/**
 * Checks that a value is JSON that `JSON.stringify` writes faithfully: no
 * `undefined`, functions, symbols, bigints, non-finite numbers, cycles,
 * objects other than plain ones and arrays (a `Date` or `Map` would be
 * written as something else and read back different), or objects and
 * arrays with a `toJSON` method, which `JSON.stringify` would write in their
 * place. Copies nothing.
 *
 * @param value The value to check.
 * @param options What the caller was doing, where the value is, and the
 * objects already checked.
 * @throws {TypeError} When it is not such JSON.
 * @throws {StorageError} When it nests deeper than {@linkcode MAX_DEPTH}.
 */
export function checkJson(value: unknown, options: CheckJsonOptions): void {
  // The common case, valid JSON, is checked without tracking the path or
  // the ancestors; only a failure walks again to say where and why.
  if (jsonHeight(value, { depth: 0, seen: options.seen }) >= 0) return;
  explainJson(value, {
    action: options.action,
    path: options.path ?? [],
    ancestors: new Set(),
    copies: undefined,
  });
}

/** A check's state: how deep it is, and what the write checked before. */
interface Scan {
  /** How many objects and arrays hold the value. */
  depth: number;
  readonly seen: CheckCache | undefined;
}

/** Below this depth, objects are looked up in and added to the cache. */
const CACHED_DEPTH = 3;

/**
 * The height of a value that is JSON as {@linkcode checkJson} means it, at
 * most {@linkcode MAX_DEPTH} levels deep where it is: how many levels of
 * objects and arrays it nests, itself included (0 for a primitive); `-1`
 * when it is not such JSON. A cycle makes a value infinitely deep, so it
 * fails here too; {@linkcode explainJson} then tells which it is.
 */
function jsonHeight(value: unknown, scan: Scan): number {
  switch (typeof value) {
    case "string":
    case "boolean":
      return 0;
    case "number":
      return Number.isFinite(value) ? 0 : -1;
    case "object": {
      if (value === null) return 0;
      if (scan.depth >= MAX_DEPTH || hasToJson(value)) return -1;
      // Only near the root: deeper, a lookup costs more than it saves.
      const seen = scan.depth > 0 && scan.depth < CACHED_DEPTH
        ? scan.seen
        : undefined;
      const found = seen?.get(value);
      if (found !== undefined) {
        return scan.depth + found <= MAX_DEPTH ? found : -1;
      }
      scan.depth++;
      const below = Array.isArray(value)
        ? itemsHeight(value, scan)
        : isPlain(value)
        ? membersHeight(value, scan)
        : -1;
      scan.depth--;
      if (below < 0) return -1;
      seen?.set(value, below + 1);
      return below + 1;
    }
    default:
      return -1;
  }
}

/** The greatest height of an array's items; `-1` if one is no JSON. */
function itemsHeight(value: readonly unknown[], scan: Scan): number {
  let height = 0;
  for (let index = 0; index < value.length; index++) {
    const item = jsonHeight(value[index], scan);
    if (item < 0) return -1;
    if (item > height) height = item;
  }
  return height;
}

/** The greatest height of an object's members; `-1` if one is no JSON. */
function membersHeight(value: object, scan: Scan): number {
  const source = value as Record<string, unknown>;
  let height = 0;
  for (const key of Object.keys(source)) {
    const member = jsonHeight(source[key], scan);
    if (member < 0) return -1;
    if (member > height) height = member;
  }
  return height;
}

/**
 * Whether `JSON.stringify` would write something else than an object's
 * members: it calls a `toJSON` method, own or inherited, enumerable or not
 * (an array subclass's, one defined on the object out of sight of its
 * keys). A `toJSON` member that is not a function is data like any other.
 */
function hasToJson(value: object): boolean {
  return typeof (value as { toJSON?: unknown }).toJSON === "function";
}

/** Whether an object is a plain one (or has no prototype). */
function isPlain(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * A walk's state: what the caller was doing and where the walk is, for
 * messages; the objects and arrays holding the value, whose count is its
 * depth; the copies made so far.
 */
interface Walk {
  readonly action: string;
  readonly path: (string | number)[];
  readonly ancestors: Set<object>;
  readonly copies: CopyCache | undefined;
}

/** Walks a value as {@linkcode checkJson} does, throwing where it fails. */
function explainJson(value: unknown, walk: Walk): void {
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (Number.isFinite(value)) return;
      break;
    case "object": {
      if (value === null) return;
      if (walk.ancestors.has(value)) break;
      if (walk.ancestors.size >= MAX_DEPTH) throw tooDeep(walk);
      if (hasToJson(value)) throw toJsonMethod(value, walk);
      if (!Array.isArray(value) && !isPlain(value)) break;
      walk.ancestors.add(value);
      const source = value as Record<string, unknown>;
      for (
        const key of Array.isArray(value) ? value.keys() : Object.keys(source)
      ) {
        walk.path.push(key);
        explainJson(source[key], walk);
        walk.path.pop();
      }
      walk.ancestors.delete(value);
      return;
    }
  }
  throw notJson(value, walk);
}

/**
 * Copies already made, by source object: a `Map` does, or anything cheaper
 * that forgets some (a forgotten source is copied again, which is only
 * slower).
 */
export interface CopyCache {
  /**
   * The copy of `source`, if remembered and it may sit at `depth`: a copy
   * placed deeper than it was checked for could nest past the limit.
   */
  get(source: object, depth: number): JsonValue | undefined;
  /**
   * Remembers the copy of `source`, which may sit at any depth down to
   * `reach`: the depth it was made at, or deeper when its maker knows how
   * deep the copy nests.
   */
  set(source: object, copy: JsonValue, reach: number): void;
}

/** Options for {@linkcode copyJson}. */
export interface CopyJsonOptions {
  /**
   * What the caller was doing, for the message.
   *
   * @default {"copy value"}
   */
  readonly action?: string;
  /**
   * Where the value is, for the message; restored on return.
   *
   * @default {[]}
   */
  readonly path?: (string | number)[];
  /**
   * Copies already made, by source object: a source met again returns its
   * copy (copies are shared, never with the value's objects).
   */
  readonly copies?: CopyCache | undefined;
}

/**
 * Deep-copies a JSON value, checking it as {@linkcode checkJson} does.
 * Objects are rebuilt with data properties only, so a `__proto__` key stays
 * an own data key and never becomes a prototype (contract clause 3).
 *
 * @param value The value to copy.
 * @param options What the caller was doing, where the value is, and the
 * copies already made.
 * @returns The copy, sharing nothing with `value`.
 * @throws {TypeError} When it is not such JSON.
 * @throws {StorageError} When it nests deeper than {@linkcode MAX_DEPTH}.
 */
export function copyJson(
  value: unknown,
  options: CopyJsonOptions = {},
): JsonValue {
  // Most values are clean JSON: copied first without tracking the path or
  // the ancestors; anything else (a failure to explain, a cycle, a value
  // too deep) is walked again the careful way, which throws where it fails.
  const fast = copyClean(value, 0, options.copies);
  if (fast !== UNCLEAN) return fast;
  return copyAt(value, {
    action: options.action ?? "copy value",
    path: options.path ?? [],
    ancestors: new Set(),
    copies: options.copies,
  });
}

/**
 * A deep copy of a value an adapter holds as an object: one it copied (and
 * so checked) with {@linkcode copyJson} when it was written and never
 * changed since. Such a value is made of plain objects, plain arrays and
 * JSON scalars only, at most {@linkcode MAX_DEPTH} levels deep, so it is
 * copied without the checks (a 10-field op read back: 0.23 µs against 0.40
 * with `copyJson`; `cloneValue` of `src/_clone.ts`, which also drops
 * `undefined` members, 0.35). Never pass it anything else.
 *
 * @param value The stored value.
 * @returns A copy that shares no object with it.
 */
export function copyStoredJson(value: JsonValue): JsonValue {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) {
    const copy = value.slice();
    for (let index = 0; index < copy.length; index++) {
      const item = copy[index];
      if (typeof item === "object" && item !== null) {
        copy[index] = copyStoredJson(item);
      }
    }
    return copy;
  }
  // Spread defines properties, so an own `__proto__` key stays an own key,
  // and assigning to it below sets that own property.
  const copy: JsonObject = { ...value };
  for (const key in copy) {
    const item = copy[key];
    // `for...in` also walks a polluted prototype's enumerable members.
    if (typeof item === "object" && item !== null && Object.hasOwn(copy, key)) {
      copy[key] = copyStoredJson(item);
    }
  }
  return copy;
}

/**
 * {@linkcode copyJson} of clean JSON only, for the hot path of a write:
 * nothing is allocated for messages. `undefined` (never JSON) when the
 * value needs the careful walk, which {@linkcode copyJson} then makes.
 *
 * @param value The value to copy.
 * @param copies The copies already made in this write.
 * @returns The copy, or `undefined`.
 */
export function copyCleanJson(
  value: unknown,
  copies: CopyCache | undefined,
): JsonValue | undefined {
  const fast = copyClean(value, 0, copies);
  return fast === UNCLEAN ? undefined : fast;
}

/** What {@linkcode copyClean} returns for a value it leaves to `copyAt`. */
const UNCLEAN: unique symbol = Symbol("unclean");

/**
 * How deep {@linkcode copyClean} looks up and records shared copies: the
 * engine shares objects near the root only (a record's data with its op's
 * payload and its base's data), and deeper a lookup costs what it saves.
 * The roots themselves (a mutation's record, op or value) are not looked
 * up: the engine never passes one twice.
 */
const SHARED_DEPTH = 2;

/**
 * A {@linkcode CopyCache} that remembers the last few copies only, by
 * identity: what the engine shares sits in neighbouring mutations (a
 * record's data and its op's payload, its base's data and its op's base).
 * A `Map` would give every object it meets an identity hash, which V8 makes
 * in a runtime call, costing more than the copy it may save.
 */
export class RecentCopies implements CopyCache {
  static readonly #SIZE = 8;
  readonly #sources: (object | undefined)[] = new Array(RecentCopies.#SIZE);
  readonly #copies: (JsonValue | undefined)[] = new Array(RecentCopies.#SIZE);
  readonly #reaches: number[] = new Array(RecentCopies.#SIZE).fill(0);
  #next = 0;

  get(source: object, depth: number): JsonValue | undefined {
    const sources = this.#sources;
    for (let i = 0; i < sources.length; i++) {
      if (sources[i] === source && this.#reaches[i]! >= depth) {
        return this.#copies[i];
      }
    }
    return undefined;
  }

  set(source: object, copy: JsonValue, reach: number): void {
    const slot = this.#next;
    this.#sources[slot] = source;
    this.#copies[slot] = copy;
    this.#reaches[slot] = reach;
    this.#next = (slot + 1) % RecentCopies.#SIZE;
  }
}

/**
 * A deep copy of clean JSON, or {@linkcode UNCLEAN} for anything
 * {@linkcode copyAt} might refuse: a value that is not JSON, a cycle, or
 * nesting at {@linkcode MAX_DEPTH}.
 */
function copyClean(
  value: unknown,
  depth: number,
  copies: CopyCache | undefined,
): JsonValue | typeof UNCLEAN {
  if (typeof value === "object") {
    return value === null ? null : copyObject(value, depth, copies);
  }
  return isCleanScalar(value) ? value as JsonValue : UNCLEAN;
}

/**
 * {@linkcode copyClean} of an object or an array. Objects are copied by
 * spread (data properties only, so an own `__proto__` key stays an own
 * key), then their members are checked in place and their objects replaced
 * by copies: the members of a plain object are walked with `for...in`,
 * which allocates nothing. Anything unusual is left to `copyAt`: an
 * inherited enumerable member (a polluted prototype), an object under a
 * `__proto__` key, symbol keys (which `copyAt` drops).
 */
function copyObject(
  value: object,
  depth: number,
  copies: CopyCache | undefined,
): JsonValue | typeof UNCLEAN {
  if (depth >= MAX_DEPTH || hasToJson(value)) return UNCLEAN;
  if (depth > deepest) deepest = depth;
  const shared = depth > 0 && depth <= SHARED_DEPTH ? copies : undefined;
  if (shared === undefined) return copyMembersOf(value, depth, copies);
  const known = shared.get(value, depth);
  if (known !== undefined) return known;
  // How deep this copy nests: it may then be shared at any depth that
  // keeps its deepest object above the limit (a record's data copied at
  // depth 1 serves its base's data at depth 2).
  const outer = deepest;
  deepest = depth;
  const copy = copyMembersOf(value, depth, copies);
  if (copy !== UNCLEAN) {
    shared.set(value, copy, MAX_DEPTH - 1 - (deepest - depth));
  }
  if (outer > deepest) deepest = outer;
  return copy;
}

/**
 * The deepest level {@linkcode copyObject} reached since it last reset it:
 * how deep the copy of a shared object nests.
 */
let deepest = 0;

/** {@linkcode copyObject}'s copy of an object's members or an array's items. */
function copyMembersOf(
  value: object,
  depth: number,
  copies: CopyCache | undefined,
): JsonValue | typeof UNCLEAN {
  let copy: JsonValue[] | JsonObject;
  if (Array.isArray(value)) {
    const length = value.length;
    const items: JsonValue[] = new Array(length);
    for (let index = 0; index < length; index++) {
      const item: unknown = value[index];
      if (typeof item === "object") {
        if (item === null) {
          items[index] = null;
          continue;
        }
        const inner = copyObject(item, depth + 1, copies);
        if (inner === UNCLEAN) return UNCLEAN;
        items[index] = inner;
      } else if (isCleanScalar(item)) items[index] = item as JsonValue;
      else return UNCLEAN;
    }
    copy = items;
  } else {
    if (!isPlain(value)) return UNCLEAN;
    const members: Record<string, unknown> = { ...value };
    for (const key in members) {
      const item = members[key];
      if (typeof item === "object") {
        if (item === null) continue;
        if (key === "__proto__" || !Object.hasOwn(members, key)) {
          return UNCLEAN;
        }
        const inner = copyObject(item, depth + 1, copies);
        if (inner === UNCLEAN) return UNCLEAN;
        members[key] = inner;
      } else if (typeof item !== "string" && typeof item !== "boolean") {
        // An inherited member that is not an object is JSON or not: either
        // way `copyAt`, which reads own keys only, decides.
        if (!isCleanScalar(item) || !Object.hasOwn(members, key)) {
          return UNCLEAN;
        }
      }
    }
    if (Object.getOwnPropertySymbols(value).length > 0) return UNCLEAN;
    copy = members as JsonObject;
  }
  return copy;
}

/** Whether a value that is not an object is JSON as `copyAt` means it. */
function isCleanScalar(value: unknown): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value);
    default:
      return value === null;
  }
}

function copyAt(value: unknown, walk: Walk): JsonValue {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (Number.isFinite(value)) return value;
      break;
    case "object": {
      if (value === null) return null;
      const { ancestors, copies, path } = walk;
      if (ancestors.has(value)) break;
      const known = copies?.get(value, ancestors.size);
      if (known !== undefined) return known;
      // The ancestors hold the value: their count is its depth.
      if (ancestors.size >= MAX_DEPTH) throw tooDeep(walk);
      if (hasToJson(value)) throw toJsonMethod(value, walk);
      if (Array.isArray(value)) {
        ancestors.add(value);
        const copy: JsonValue[] = new Array(value.length);
        for (let index = 0; index < value.length; index++) {
          path.push(index);
          copy[index] = copyAt(value[index], walk);
          path.pop();
        }
        ancestors.delete(value);
        copies?.set(value, copy, ancestors.size);
        return copy;
      }
      if (!isPlain(value)) break;
      ancestors.add(value);
      const copy = copyMembers(value as Record<string, unknown>, walk);
      ancestors.delete(value);
      copies?.set(value, copy, ancestors.size);
      return copy;
    }
  }
  throw notJson(value, walk);
}

/** Copies an object's members into a new plain object. */
function copyMembers(source: Record<string, unknown>, walk: Walk): JsonObject {
  const copy: JsonObject = {};
  for (const key of Object.keys(source)) {
    walk.path.push(key);
    const item = copyAt(source[key], walk);
    walk.path.pop();
    setOwn(copy, key, item);
  }
  return copy;
}

/**
 * The error for a value nested deeper than {@linkcode MAX_DEPTH}; it names
 * the root only, since the path to the deepest level is that long.
 */
function tooDeep({ action, path }: Walk): StorageError {
  const root = path.length === 0 ? "value" : String(path[0]);
  return new StorageError(
    `Cannot ${action} as '${root}' nests more than ${MAX_DEPTH} levels deep: current value is at least ${
      MAX_DEPTH + 1
    } levels`,
  );
}

/** The error for an object or array that has a `toJSON` method. */
function toJsonMethod(value: unknown, { action, path }: Walk): TypeError {
  return new TypeError(
    `Cannot ${action} as '${
      path.join(".")
    }' has a toJSON method, which JSON.stringify would write instead: current value is ${
      describe(value)
    }`,
  );
}

function notJson(value: unknown, { action, path }: Walk): TypeError {
  return new TypeError(
    `Cannot ${action} as '${
      path.join(".")
    }' is not a JSON value: current value is ${describe(value)}`,
  );
}
