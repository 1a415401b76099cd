/**
 * Timers and a clock that move only when a test says so: `advance(ms)`
 * fires every timer due by then, in order. Not published (underscore).
 *
 * @module
 */

import type { Clock, Timers } from "../src/_engine_options.ts";

/** One armed timer. */
export interface FakeTimer {
  /** The handle `setTimeout` returned. */
  readonly id: number;
  /** When it fires, on the fake clock. */
  readonly at: number;
  /** The delay it was armed with. */
  readonly ms: number;
  /** What it runs. */
  readonly callback: () => void;
}

/** Fake timers and the clock they run on. */
export interface FakeTime extends Timers, Clock {
  /** The armed timers, by handle. */
  readonly pending: Map<number, FakeTimer>;
  /** Every delay ever armed, in order. */
  readonly armed: number[];
  /** The armed timers, soonest first. */
  sorted(): FakeTimer[];
  /**
   * Moves the clock forward, firing every timer due on the way (each at its
   * own time, soonest first).
   */
  advance(ms: number): void;
}

/**
 * Creates fake timers.
 *
 * @param start The clock's first reading.
 * @returns The timers and their clock.
 */
export function fakeTime(
  start = Date.parse("2025-03-01T10:00:00.000Z"),
): FakeTime {
  let now = start;
  let next = 0;
  const pending = new Map<number, FakeTimer>();
  const armed: number[] = [];
  const sorted = (): FakeTimer[] =>
    [...pending.values()].sort((a, b) => a.at - b.at || a.id - b.id);
  return {
    pending,
    armed,
    sorted,
    now: () => now,
    setTimeout(callback, ms) {
      const id = ++next;
      armed.push(ms);
      pending.set(id, { id, at: now + Math.max(0, ms), ms, callback });
      return id;
    },
    clearTimeout(handle) {
      pending.delete(handle as number);
    },
    advance(ms) {
      const until = now + ms;
      while (true) {
        const due = sorted().find((timer) => timer.at <= until);
        if (due === undefined) break;
        pending.delete(due.id);
        now = Math.max(now, due.at);
        due.callback();
      }
      now = until;
    },
  };
}
