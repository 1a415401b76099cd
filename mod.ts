/**
 * placeholder
 * @module
 */
export * from "./src/json.ts";
export * from "./src/errors.ts";
export * from "./src/schema.ts";
export * from "./src/ulid.ts";
export type * from "./src/storage.ts";
export type * from "./src/transport.ts";
