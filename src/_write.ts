/**
 * Chunked storage writes shared by the engine's modules. Private to the
 * package (underscore): not exported from `mod.ts`.
 *
 * @module
 */

import type { EngineContext } from "./_context.ts";
import type { Mutation } from "./storage.ts";

/** The outcome of {@linkcode writeChunked}. */
export interface ChunkedWrite {
  /** The indices of the groups whose write failed an `expect`. */
  readonly failed: Set<number>;
  /**
   * Per group: the revision its first mutation left (see `WriteResult`),
   * `undefined` for a group that failed or is empty.
   */
  readonly firstRevs: (string | null | undefined)[];
}

/**
 * Writes groups of mutations in as few writes as the storage's limits allow,
 * never splitting a group.
 *
 * @param ctx The engine context.
 * @param groups The groups; each commits whole or not at all.
 * @param onCommit Told the indices of the groups each committed write held.
 * @returns Which groups failed, and the revisions the others left.
 */
export async function writeChunked(
  ctx: EngineContext,
  groups: readonly Mutation[][],
  onCommit?: (indices: readonly number[]) => void,
): Promise<ChunkedWrite> {
  const { maxMutationsPerWrite, maxWriteBytes } = ctx.storage.capabilities;
  const measure = Number.isFinite(maxWriteBytes);
  const failed = new Set<number>();
  const firstRevs: (string | null | undefined)[] = new Array(groups.length);
  let chunk: Mutation[] = [];
  let members: number[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    if (chunk.length === 0) return;
    const result = await ctx.storage.write(chunk);
    let offset = 0;
    for (let m = 0; m < members.length; m++) {
      const index = members[m]!;
      const size = groups[index]!.length;
      if (!result.ok) failed.add(index);
      else if (size > 0) firstRevs[index] = result.revs[offset];
      offset += size;
    }
    // Tell the caller now: a later chunk may still fail the whole call.
    if (result.ok) onCommit?.(members);
    chunk = [];
    members = [];
    bytes = 0;
  };
  for (let index = 0; index < groups.length; index++) {
    const group = groups[index]!;
    const size = measure ? byteLength(group) : 0;
    if (
      chunk.length + group.length > maxMutationsPerWrite ||
      (measure && bytes + size > maxWriteBytes)
    ) {
      await flush();
    }
    // One by one: a spread would cost an iterator per group.
    for (let m = 0; m < group.length; m++) chunk.push(group[m]!);
    members.push(index);
    bytes += size;
  }
  await flush();
  return { failed, firstRevs };
}

const encoder = new TextEncoder();

/**
 * The UTF-8 size of mutations as JSON, the measure of `maxWriteBytes`.
 *
 * @param mutations The mutations.
 * @returns Their size in bytes.
 */
export function byteLength(mutations: readonly Mutation[]): number {
  return encoder.encode(JSON.stringify(mutations)).length;
}
