/**
 * The Standard Schema v1 interface (https://standardschema.dev), declared
 * here so the engine accepts any conforming validator (zod 4, valibot,
 * arktype, ...) without importing one.
 *
 * @module
 */

import { ValidationError } from "./errors.ts";

/** A Standard Schema v1 validator. */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  /** The Standard Schema properties. */
  readonly "~standard": StandardSchemaV1Props<Input, Output>;
}

/** The properties under `~standard`. */
export interface StandardSchemaV1Props<Input = unknown, Output = Input> {
  /** The version of the Standard Schema specification. */
  readonly version: 1;
  /** The vendor name of the schema library. */
  readonly vendor: string;
  /** Validates an unknown input value. */
  readonly validate: (
    value: unknown,
  ) => StandardSchemaV1Result<Output> | Promise<StandardSchemaV1Result<Output>>;
  /** Inferred types associated with the schema. */
  readonly types?:
    | { readonly input: Input; readonly output: Output }
    | undefined;
}

/** The result of a Standard Schema validation. */
export type StandardSchemaV1Result<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | {
    readonly issues: ReadonlyArray<{
      readonly message: string;
      readonly path?:
        | ReadonlyArray<PropertyKey | { readonly key: PropertyKey }>
        | undefined;
    }>;
  };

/** The output type of a Standard Schema. */
export type InferOutput<S extends StandardSchemaV1> = NonNullable<
  S["~standard"]["types"]
>["output"];

/**
 * Runs a Standard Schema and returns its output, or throws a
 * {@linkcode ValidationError} that lists every issue.
 *
 * @typeParam T The schema's output.
 * @param schema The validator.
 * @param value The value to validate.
 * @param what What is validated, for the error message.
 * @returns The validated (possibly transformed) value.
 * @throws {ValidationError} When the schema reports issues.
 *
 * @example Validating with any Standard Schema
 * ```ts
 * import { ValidationError } from "@offline-first/sync";
 * import { validateWith } from "./schema.ts";
 * import assert from "node:assert/strict";
 *
 * const positive = {
 *   "~standard": {
 *     version: 1 as const,
 *     vendor: "example",
 *     validate: (value: unknown) =>
 *       typeof value === "number" && value > 0
 *         ? { value }
 *         : { issues: [{ message: "Expected a positive number" }] },
 *   },
 * };
 * assert.equal(await validateWith(positive, 3, "count"), 3);
 * await assert.rejects(validateWith(positive, -1, "count"), ValidationError);
 * ```
 */
export async function validateWith<T>(
  schema: StandardSchemaV1<unknown, T>,
  value: unknown,
  what: string,
): Promise<T> {
  const result = await schema["~standard"].validate(value);
  if (result.issues === undefined) return result.value;
  const issues = result.issues.map((issue) => ({
    message: issue.message,
    path: (issue.path ?? []).map((part) =>
      typeof part === "object" && part !== null ? part.key : part
    ),
  }));
  const first = issues[0];
  const where = first && first.path.length > 0
    ? ` at "${first.path.map(String).join(".")}"`
    : "";
  throw new ValidationError(
    `Cannot accept ${what} as it fails its schema${where}: ${
      first?.message ?? "unknown issue"
    }`,
    issues,
  );
}
