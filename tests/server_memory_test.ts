/**
 * The memory server store: the server-store conformance suite.
 *
 * @module
 */

import { createMemoryServerStore } from "../server/memory.ts";
import { testServerStore } from "../server/conformance.ts";

testServerStore(
  "memory",
  () => Promise.resolve({ store: createMemoryServerStore() }),
);
