/**
 * The Transport contract, for adapter authors: how the engine reaches a
 * backend. `@offline-first/sync/transport/rest` implements it over `fetch`
 * for any backend that follows the wire contract (docs/contract.md).
 *
 * @example Typing a transport
 * ```ts
 * import type { Transport } from "@offline-first/sync/transport";
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 *
 * const transport: Transport = createRestTransport({
 *   baseUrl: "http://127.0.0.1:65535",
 * });
 * await transport.close();
 * ```
 *
 * @module
 */
export type * from "../src/transport.ts";
