/**
 * `node:assert/strict` for the page of `tests/indexeddb_test.ts`: the npm
 * `assert` package (a port of Node's) in strict mode, so that the storage
 * conformance suite runs in Chromium with the assertions it was written
 * with. The page's import map points `node:assert/strict` here.
 *
 * @module
 */

import type nodeStrict from "node:assert/strict";
import assert from "assert";

/** Node's strict assertions, as the npm package implements them. */
const strict = (assert as unknown as { strict: typeof nodeStrict }).strict;
export default strict;
