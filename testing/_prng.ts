/**
 * The chaos suite's seeded randomness: one mulberry32 generator per stream,
 * each stream derived from the run's seed and a name, so the fault schedule
 * of a client does not move when the op list changes (the shrinker relies
 * on it). Private.
 *
 * @module
 */

/** A seeded source of numbers in `[0, 1)` with small helpers. */
export interface Prng {
  /** The next number in `[0, 1)`. */
  next(): number;
  /** An integer in `[min, max]`. */
  int(min: number, max: number): number;
  /** `true` with probability `p`. */
  chance(p: number): boolean;
  /** One item of a non-empty list. */
  pick<T>(items: readonly T[]): T;
}

/**
 * Makes a mulberry32 generator.
 *
 * @param seed Any integer; only its low 32 bits count.
 * @returns The generator.
 */
export function createPrng(seed: number): Prng {
  let state = seed >>> 0;
  function next(): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  return {
    next,
    int(min, max) {
      return min + Math.floor(next() * (max - min + 1));
    },
    chance(p) {
      return p > 0 && next() < p;
    },
    pick(items) {
      return items[Math.floor(next() * items.length)]!;
    },
  };
}

/**
 * Derives the seed of a named stream (FNV-1a over the name, mixed with the
 * run's seed).
 *
 * @param seed The run's seed.
 * @param stream The stream's name, e.g. `"faults:2"`.
 * @returns The stream's seed.
 */
export function deriveSeed(seed: number, stream: string): number {
  let hash = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < stream.length; i++) {
    hash = Math.imul(hash ^ stream.charCodeAt(i), 0x01000193);
  }
  hash = Math.imul(hash ^ (hash >>> 16), 0x45d9f3b);
  return (hash ^ (hash >>> 13)) >>> 0;
}
