/**
 * How the REST transport's error messages name what failed: the action
 * (`push the upsert of 'todos/a'`), the value (described, bounded), and the
 * {@linkcode ValidationError} of a field the contract's limits refuse.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { ValidationError } from "../src/errors.ts";
import type { PushOp } from "../src/transport.ts";

/** What is wrong, and with which value. */
export interface Problem {
  /** What is wrong: a sentence fragment. */
  readonly problem: string;
  /** The current value. */
  readonly value: unknown;
}

/**
 * A message in std form, what failed first and the value at fault last:
 * `Cannot <action> as <problem>: current value is <value>`.
 */
export function cannot(action: string, found: Problem): string {
  return `Cannot ${action} as ${found.problem}: current value is ${
    describe(found.value)
  }`;
}

/** A request field the contract's limits refuse. */
export function invalid(
  action: string,
  found: Problem & { readonly field: string },
): ValidationError {
  const { field, problem, value } = found;
  return new ValidationError(
    cannot(action, { problem: `'${field}' is invalid (${problem})`, value }),
    [{ message: problem, path: [field] }],
  );
}

/** The action of an op's messages, with its kind and id cut short. */
export function actionOf(op: PushOp): string {
  return `push the ${op.type} of '${shorten(op.kind)}/${shorten(op.id)}'`;
}

/** A value for a message: a string cut at 64 code units, else described. */
export function shorten(value: unknown): string {
  if (typeof value !== "string") return describe(value);
  if (value.length <= 64) return value;
  // Not in the middle of a surrogate pair.
  const end = /[\ud800-\udbff]/.test(value[63]!) ? 63 : 64;
  return `${value.slice(0, end)}…`;
}
