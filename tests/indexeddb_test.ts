/**
 * The IndexedDB storage in real Chromium: the published conformance suite,
 * unchanged, run in a page (each of its cases is one test here, ignored
 * where the suite ignores it), and clause 1 of the contract across a
 * reload, a closed page, a crashed page and a restart of the browser.
 *
 * The page's code is bundled with `deno bundle` from `tests/_idb_page.ts`;
 * Chromium is Debian's `/usr/bin/chromium`, driven by `playwright-core`.
 * When Chromium is missing, the tests fail and say how to install it.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { BrowserContext, Page } from "playwright-core";
import {
  bundle,
  launchChromium,
  serveFiles,
  type StaticSite,
  within,
} from "./_browser.ts";
import type { AtomicityReport, CaseOutcome } from "./_idb_page.ts";
import { withTimeout } from "./_timeout.ts";
import { openIndexedDbStorage } from "../storage/indexeddb.ts";
import { StorageError } from "../src/errors.ts";

/** What the page exposes (see `tests/_idb_page.ts`). */
interface Harness {
  register(): Promise<{ name: string; ignore: boolean }[]>;
  run(name: string): Promise<CaseOutcome>;
  startWrites(name: string, writers: number): Promise<void>;
  written(): number;
  checkAtomicity(name: string): Promise<AtomicityReport>;
  freshName(prefix: string): string;
  readCorrupt(): Promise<string[]>;
}

declare const idbHarness: Harness;

/** The page: the npm `assert` shim needs a `process`, the suite an import map. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>IndexedDB storage conformance</title>
<script>globalThis.process = { env: {} };</script>
<script type="importmap">{ "imports": { "node:assert/strict": "/assert.js" } }</script>
<script type="module" src="/page.js"></script>
`;

/** The longest a suite case may take in the page. */
const CASE_TIMEOUT_MS = 60_000;

interface Session {
  readonly site: StaticSite;
  readonly userDataDir: string;
  context: BrowserContext;
  readonly page: Page;
  readonly errors: string[];
  readonly cases: { name: string; ignore: boolean }[];
}

async function openPage(
  context: BrowserContext,
  site: StaticSite,
  errors: string[],
): Promise<Page> {
  const page = await context.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${site.origin}/`, { timeout: 30_000 });
  await page.waitForFunction(() => "idbHarness" in globalThis, null, {
    timeout: 30_000,
  });
  return page;
}

async function start(): Promise<Session> {
  const [pageJs, assertJs] = await within(
    120_000,
    "bundling the page",
    Promise.all([
      bundle(new URL("./_idb_page.ts", import.meta.url), {
        external: ["node:assert/strict"],
      }),
      bundle(new URL("./_browser_assert.ts", import.meta.url)),
    ]),
  );
  const site = serveFiles({
    "/": PAGE,
    "/page.js": pageJs,
    "/assert.js": assertJs,
  });
  const userDataDir = await Deno.makeTempDir({ prefix: "idb_chromium_" });
  const context = await launchChromium(userDataDir);
  const errors: string[] = [];
  const page = await openPage(context, site, errors);
  const cases = await within(
    60_000,
    "registering the suite in the page",
    page.evaluate(() => idbHarness.register()),
  );
  return { site, userDataDir, context, page, errors, cases };
}

async function stop(session: Session): Promise<void> {
  try {
    await session.context.close();
  } finally {
    await session.site.close();
    await Deno.remove(session.userDataDir, { recursive: true });
  }
}

let session: Session | undefined;
let failure: unknown;
try {
  session = await within(180_000, "starting Chromium", start());
} catch (error) {
  failure = error;
}

const NO_SANITIZERS = { sanitizeOps: false, sanitizeResources: false };

if (session === undefined) {
  Deno.test("indexeddb (chromium): the browser starts", () => {
    throw failure;
  });
} else {
  const { page, cases } = session;
  assert.ok(cases.length > 50, `Expected the suite's cases: ${cases.length}`);
  for (const { name, ignore } of cases) {
    Deno.test({
      name,
      ignore,
      ...NO_SANITIZERS,
      fn: withTimeout(CASE_TIMEOUT_MS + 5_000, async () => {
        const outcome = await within(
          CASE_TIMEOUT_MS,
          name,
          page.evaluate((caseName) => idbHarness.run(caseName), name),
        );
        if (!outcome.ok) {
          const error = new Error(outcome.message);
          error.name = outcome.name;
          error.stack =
            `${outcome.name}: ${outcome.message}\n    in Chromium:\n${
              outcome.stack.split("\n").slice(1).join("\n")
            }`;
          throw error;
        }
      }),
    });
  }
}

Deno.test("openIndexedDbStorage() rejects where there is no IndexedDB", async () => {
  await assert.rejects(openIndexedDbStorage("app"), (error: unknown) => {
    assert.ok(error instanceof StorageError);
    assert.equal(
      error.message,
      "Cannot open IndexedDB storage as this runtime has no IndexedDB: current value is undefined",
    );
    return true;
  });
});

Deno.test("openIndexedDbStorage() checks its options before it opens", async () => {
  for (const value of [0, -1, 1.5, NaN]) {
    await assert.rejects(
      openIndexedDbStorage("app", { maxMutationsPerWrite: value }),
      RangeError,
    );
  }
  await assert.rejects(openIndexedDbStorage("app", { maxWriteBytes: 0 }), {
    name: "RangeError",
    message:
      "Cannot open IndexedDB storage as 'maxWriteBytes' is not a positive integer or Infinity: current value is 0",
  });
  await assert.rejects(
    openIndexedDbStorage("app", {
      durability: "eventual" as unknown as "strict",
    }),
    TypeError,
  );
  await assert.rejects(
    openIndexedDbStorage(1 as unknown as string),
    TypeError,
  );
});

Deno.test({
  name:
    "indexeddb (chromium): a corrupt or misplaced stored item rejects its read with a StorageError naming it",
  ignore: session === undefined,
  ...NO_SANITIZERS,
  fn: withTimeout(30_000, async () => {
    const lines = await within(
      20_000,
      "reading corrupt items",
      session!.page.evaluate(() => idbHarness.readCorrupt()),
    );
    assert.deepEqual(lines, [
      'StorageError: Cannot read record "a" of kind "todo" as its stored value is not an object: current value is "not an envelope"',
      'StorageError: Cannot read record "b" of kind "todo" as its stored value is not valid JSON: current value is "{not json"',
      `StorageError: Cannot read record "c" of kind "todo" as its stored 'id' is not the one it is stored under: current value is "r1"`,
      'StorageError: Cannot read record "d" of kind "todo" as its stored revision is not a string: current value is 7',
      'StorageError: Cannot read record "a" of kind "todo" as its stored value is not an object: current value is "not an envelope"',
      'StorageError: Cannot read record "b" of kind "todo" as its stored value is not valid JSON: current value is "{not json"',
      `StorageError: Cannot read op "x" as its stored 'opId' is not the one it is stored under: current value is "01J00000000000000000000001"`,
      `StorageError: Cannot read op "y" as its stored 'kind' is not a string: current value is undefined`,
      `StorageError: Cannot read op "x" as its stored 'opId' is not the one it is stored under: current value is "01J00000000000000000000001"`,
      'StorageError: Cannot read meta entry "m" as its stored value is not valid JSON: current value is ""',
    ]);
  }),
});

/** The stores the atomicity tests wrote, with what each held. */
const interrupted: { name: string; report: AtomicityReport }[] = [];

/**
 * Starts writers in a fresh page, waits until `atLeast` writes resolved,
 * interrupts them with `interrupt`, then checks the store from a new page:
 * every record has its op and meta entry and vice versa, and every write
 * that resolved before the interruption is there.
 */
async function interruptWrites(
  current: Session,
  interrupt: (page: Page) => Promise<void>,
): Promise<AtomicityReport> {
  const writer = await openPage(current.context, current.site, []);
  const name = await writer.evaluate(
    () => idbHarness.freshName("atomicity"),
  );
  await writer.evaluate((db) => idbHarness.startWrites(db, 4), name);
  let resolved = 0;
  await within(
    30_000,
    "waiting for writes",
    (async () => {
      while (resolved < 40) {
        resolved = await writer.evaluate(() => idbHarness.written());
      }
    })(),
  );
  await interrupt(writer);
  const checker = await openPage(current.context, current.site, []);
  try {
    const report = await within(
      30_000,
      "checking the store",
      checker.evaluate((db) => idbHarness.checkAtomicity(db), name),
    );
    assert.deepEqual(report.problems, []);
    assert.equal(report.records, report.ops);
    assert.ok(
      report.records >= resolved,
      `Expected the ${resolved} writes that resolved to be kept: current value is ${report.records}`,
    );
    interrupted.push({ name, report });
    return report;
  } finally {
    await checker.close();
  }
}

const browserTest = session === undefined ? { ignore: true } : {};

Deno.test({
  name:
    "indexeddb (chromium): a reload mid-write keeps each record with its op",
  ...browserTest,
  ...NO_SANITIZERS,
  fn: withTimeout(90_000, async () => {
    await interruptWrites(session!, async (page) => {
      await page.reload({ timeout: 30_000 });
      await page.close();
    });
  }),
});

Deno.test({
  name:
    "indexeddb (chromium): closing the page mid-write keeps each record with its op",
  ...browserTest,
  ...NO_SANITIZERS,
  fn: withTimeout(90_000, async () => {
    await interruptWrites(session!, (page) => page.close());
  }),
});

Deno.test({
  name:
    "indexeddb (chromium): a crash of the page mid-write keeps each record with its op",
  ...browserTest,
  ...NO_SANITIZERS,
  fn: withTimeout(90_000, async () => {
    await interruptWrites(session!, async (page) => {
      const crashed = page.waitForEvent("crash", { timeout: 30_000 });
      const cdp = await page.context().newCDPSession(page);
      // The renderer dies before it answers.
      cdp.send("Page.crash").catch(() => {});
      await crashed;
      await page.close();
    });
  }),
});

Deno.test({
  name:
    "indexeddb (chromium): the stores survive a restart of the browser unchanged",
  ...browserTest,
  ...NO_SANITIZERS,
  fn: withTimeout(120_000, async () => {
    const current = session!;
    try {
      assert.ok(interrupted.length > 0, "Expected stores from the tests above");
      await current.context.close();
      current.context = await launchChromium(current.userDataDir);
      const checker = await openPage(current.context, current.site, []);
      for (const { name, report } of interrupted) {
        const again = await within(
          30_000,
          "checking the store after the restart",
          checker.evaluate((db) => idbHarness.checkAtomicity(db), name),
        );
        assert.deepEqual(again, report);
      }
      assert.deepEqual(current.errors, []);
    } finally {
      await stop(current);
    }
  }),
});
