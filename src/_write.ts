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
  /** Per group: the revisions its mutations left (see `WriteResult`). */
  readonly revs: (readonly (string | null)[] | undefined)[];
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
  const revs: (readonly (string | null)[] | undefined)[] = [];
  let chunk: Mutation[] = [];
  let members: number[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    if (chunk.length === 0) return;
    const result = await ctx.storage.write(chunk);
    let offset = 0;
    for (const index of members) {
      const size = groups[index]!.length;
      if (result.ok) revs[index] = result.revs.slice(offset, offset + size);
      else failed.add(index);
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
    chunk.push(...group);
    members.push(index);
    bytes += size;
  }
  await flush();
  return { failed, revs };
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
