/**
 * The package's browser entry, as a web app would bundle it: the engine,
 * the IndexedDB storage and the REST transport, nothing that needs Deno or
 * Node.js. `deno task bundle:web` bundles it into one ES module
 * (`.demo/web/offline-first-sync.js`); `tests/browser_bundle_test.ts`
 * checks that no Node built-in reaches it and that it loads in Chromium.
 *
 * @example Bundling a page's own entry the same way
 * ```sh
 * deno bundle --platform=browser --format=esm --minify -o app.js app.ts
 * ```
 *
 * @module
 */

export * from "../mod.ts";
export {
  type IndexedDbStorage,
  type IndexedDbStorageOptions,
  openIndexedDbStorage,
} from "../storage/indexeddb.ts";
export {
  createRestTransport,
  type RestTransportOptions,
} from "../transport/rest.ts";
