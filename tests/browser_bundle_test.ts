/**
 * The browser build: `examples/browser_entry.ts` (engine, IndexedDB
 * storage, REST transport) imports no Node built-in, bundles with
 * `deno bundle --platform=browser`, and loads and works in Chromium.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  bundle,
  launchChromium,
  requireChromium,
  serveFiles,
  within,
} from "./_browser.ts";
import { withTimeout } from "./_timeout.ts";

const ENTRY = new URL("../examples/browser_entry.ts", import.meta.url);

/** Every specifier the entry's module graph imports, from `deno info`. */
async function importedSpecifiers(): Promise<string[]> {
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", ENTRY.pathname],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.ok(success, new TextDecoder().decode(stderr));
  const graph = JSON.parse(new TextDecoder().decode(stdout)) as {
    modules: {
      specifier: string;
      dependencies?: { specifier: string }[];
    }[];
  };
  return graph.modules.flatMap((module) => [
    module.specifier,
    ...(module.dependencies ?? []).map((dependency) => dependency.specifier),
  ]);
}

Deno.test("the browser entry imports only the package's own modules, no Node built-ins", async () => {
  const specifiers = await importedSpecifiers();
  assert.ok(specifiers.length > 20, `Expected a module graph: ${specifiers}`);
  const foreign = specifiers.filter((specifier) =>
    !specifier.startsWith("file:") && !specifier.startsWith("./") &&
    !specifier.startsWith("../")
  );
  assert.deepEqual(foreign, []);
});

Deno.test({
  name:
    "the browser bundle loads in Chromium and stores through IndexedDB with its exports",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: withTimeout(90_000, async () => {
    await requireChromium();
    const code = await within(
      60_000,
      "bundling the browser entry",
      bundle(ENTRY, { minify: true }),
    );
    assert.doesNotMatch(code, /\bfrom\s*["']node:|import\(\s*["']node:/);
    assert.doesNotMatch(code, /\bDeno\./);
    await using site = serveFiles({
      "/": `<!doctype html><meta charset="utf-8">
<script type="module">
import * as sync from "/offline-first-sync.js";
globalThis.sync = sync;
</script>`,
      "/offline-first-sync.js": code,
    });
    const userDataDir = await Deno.makeTempDir({ prefix: "bundle_chromium_" });
    const context = await launchChromium(userDataDir);
    try {
      const page = await context.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      await page.goto(`${site.origin}/`, { timeout: 30_000 });
      await page.waitForFunction(() => "sync" in globalThis, null, {
        timeout: 30_000,
      });
      const outcome = await within(
        30_000,
        "using the bundle in the page",
        page.evaluate(async () => {
          // deno-lint-ignore no-explicit-any
          const sync = (globalThis as any).sync;
          const storage = await sync.openIndexedDbStorage("bundle-smoke");
          const written = await storage.write([
            { type: "putMeta", key: "hello", value: "world", expect: null },
          ]);
          const [entry] = await storage.getMeta(["hello"]);
          await storage.close();
          return {
            exports: ["SyncEngine", "createRestTransport", "StorageError"]
              .map((name) => `${name}: ${typeof sync[name]}`),
            ok: written.ok,
            value: entry?.value,
          };
        }),
      );
      assert.deepEqual(outcome, {
        exports: [
          "SyncEngine: function",
          "createRestTransport: function",
          "StorageError: function",
        ],
        ok: true,
        value: "world",
      });
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
      await Deno.remove(userDataDir, { recursive: true });
    }
  }),
});
