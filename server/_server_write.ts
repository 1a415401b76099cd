/**
 * The shape check every server store runs on a commit's writes before it
 * applies any of them, so a malformed commit is refused whole.
 *
 * @module
 */

import { isJsonObject } from "../src/json.ts";
import type { ServerWrite } from "./store.ts";

/**
 * Checks the shape of one write, so that a store can refuse a whole commit
 * before applying any of it.
 *
 * @param write The write to check.
 * @throws {TypeError} When the write is malformed.
 */
export function assertServerWrite(write: ServerWrite): void {
  if (write.type === "record") {
    const { record } = write;
    if (
      typeof record.kind !== "string" || typeof record.id !== "string" ||
      !Number.isSafeInteger(record.updatedAt) ||
      (record.deletedAt !== null && !Number.isSafeInteger(record.deletedAt)) ||
      !isJsonObject(record.data)
    ) {
      throw new TypeError(
        `Cannot commit record as it is malformed: current value is ${
          JSON.stringify(record)
        }`,
      );
    }
  } else if (write.type === "idempotency") {
    const { entry } = write;
    if (
      typeof entry.key !== "string" || typeof entry.fingerprint !== "string" ||
      !Number.isInteger(entry.status) || typeof entry.expiresAt !== "number"
    ) {
      throw new TypeError(
        `Cannot commit idempotency entry as it is malformed: current value is ${
          JSON.stringify(entry)
        }`,
      );
    }
  } else {
    throw new TypeError(
      `Cannot commit write as its type is unknown: current value is ${
        JSON.stringify((write as { type: unknown }).type)
      }`,
    );
  }
}
