/**
 * The browser demo (`deno task demo:web`, examples/web_demo.ts and
 * examples/browser/) as a real process, driven in real headless Chromium:
 * two tabs and a second browser converge through the server, offline edits
 * survive a reload and sync after, a conflict shows up in the page, and a
 * screenshot of the synced page is written to .demo/browser-demo.png
 * (and docs/browser-demo.png with `UPDATE_DOCS=1`).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { BrowserContext, Page } from "playwright-core";
import { launchChromium, within } from "./_browser.ts";
import { startScript } from "./_process.ts";
import { withTimeout } from "./_timeout.ts";

// The page's globals, as far as these tests reach into it (the DOM library
// is not part of the tests' program).
interface PageNode {
  readonly textContent: string | null;
  readonly dataset: Record<string, string | undefined>;
}
declare const document: {
  querySelector(selector: string): PageNode | null;
  querySelectorAll(selector: string): Iterable<PageNode>;
};

const DEMO = new URL("../examples/web_demo.ts", import.meta.url);
/**
 * Where the screenshot goes: `.demo/` on every run, and `docs/` (the one
 * the README shows) when `UPDATE_DOCS=1`, so a test run leaves the tree
 * clean.
 */
const SCREENSHOTS = [
  new URL("../.demo/browser-demo.png", import.meta.url),
  ...(Deno.env.get("UPDATE_DOCS") === "1"
    ? [new URL("../docs/browser-demo.png", import.meta.url)]
    : []),
];

/** Waits until the page's todo titles are exactly `titles` (any order). */
async function waitForTitles(page: Page, titles: string[]): Promise<void> {
  const want = JSON.stringify([...titles].sort());
  const read = () =>
    page.evaluate(() =>
      JSON.stringify(
        [...document.querySelectorAll("li.todo .title")].map((node) =>
          node.textContent
        ).sort(),
      )
    );
  try {
    await page.waitForFunction(
      (want) =>
        JSON.stringify(
          [...document.querySelectorAll("li.todo .title")].map((node) =>
            node.textContent
          ).sort(),
        ) === want,
      want,
      { timeout: 15_000, polling: 50 },
    );
  } catch (error) {
    throw new Error(
      `Cannot see the titles ${want}: current value is ${await read()}`,
      { cause: error },
    );
  }
}

async function add(page: Page, title: string): Promise<void> {
  await page.fill("#title", title);
  await page.click("button[type=submit]");
}

async function text(page: Page, selector: string): Promise<string> {
  return (await page.textContent(selector)) ?? "";
}

/** The page's engine's role: `syncer` or `follower`. */
function role(page: Page): Promise<string> {
  return page.evaluate(() =>
    (globalThis as unknown as { engine: { role: string } }).engine.role
  );
}

async function open(context: BrowserContext, url: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(url, { timeout: 20_000 });
  await page.waitForSelector("#connection:not(:text('starting'))", {
    timeout: 15_000,
  });
  return page;
}

Deno.test(
  "web demo: tabs and browsers converge, offline edits survive a reload, conflicts show, screenshot",
  withTimeout(150_000, async () => {
    const dir = await Deno.makeTempDir({ prefix: "web_demo_test_" });
    const contexts: BrowserContext[] = [];
    try {
      await using demo = await startScript(DEMO, {
        args: ["--port", "0", "--db", `${dir}/server.sqlite`],
        timeoutMs: 60_000,
      });
      const url = `${demo.url}/`;
      const first = await within(
        60_000,
        "launch Chromium",
        launchChromium(`${dir}/a`),
      );
      contexts.push(first);
      const second = await within(
        60_000,
        "launch Chromium",
        launchChromium(`${dir}/b`),
      );
      contexts.push(second);

      // Two tabs of one browser and a second browser converge.
      const tab1 = await open(first, url);
      const tab2 = await open(first, url);
      const other = await open(second, url);
      await add(tab1, "Buy milk");
      await add(other, "Walk the dog");
      for (const page of [tab1, tab2, other]) {
        await waitForTitles(page, ["Buy milk", "Walk the dog"]);
      }
      // One syncer per origin: of the two tabs of one browser, one syncs.
      assert.deepEqual(
        (await Promise.all([tab1, tab2].map(role))).sort(),
        ["follower", "syncer"],
      );

      // Offline edits survive a reload and sync after.
      await other.check("#offline");
      await add(other, "Written offline");
      await other.waitForFunction(
        () => document.querySelector("#pending")?.textContent === "1 pending",
        undefined,
        { timeout: 10_000 },
      );
      assert.equal(await text(other, "#connection"), "offline");
      await other.reload();
      await other.waitForSelector("li.todo .title:text('Written offline')", {
        timeout: 15_000,
      });
      // Still offline after the reload (the switch is kept), still queued.
      assert.equal(await other.isChecked("#offline"), true);
      await other.waitForFunction(
        () => document.querySelector("#pending")?.textContent === "1 pending",
        undefined,
        { timeout: 10_000 },
      );
      await other.uncheck("#offline");
      await waitForTitles(tab1, [
        "Buy milk",
        "Walk the dog",
        "Written offline",
      ]);

      // A conflict: one todo renamed in two places while apart.
      await tab1.check("#offline");
      await other.check("#offline");
      // The todo "Buy milk" (the list is in id order, and ids are random).
      const id = await tab1.evaluate(() =>
        [...document.querySelectorAll("li.todo")].find((node) =>
          node.textContent?.includes("Buy milk")
        )!.dataset.id!
      );
      type Todos = { update(id: string, patch: object): Promise<unknown> };
      await tab1.evaluate(
        (id) =>
          (globalThis as unknown as { todos: Todos }).todos.update(id, {
            title: "Mine",
          }),
        id,
      );
      await other.evaluate(
        (id) =>
          (globalThis as unknown as { todos: Todos }).todos.update(id, {
            title: "Theirs",
          }),
        id,
      );
      await tab1.uncheck("#offline");
      await tab2.waitForSelector("li.todo .title:text('Mine')", {
        timeout: 15_000,
      });
      await other.uncheck("#offline");
      await other.waitForSelector("#conflicts .conflict", { timeout: 15_000 });
      const conflict = await text(other, "#conflicts");
      assert.match(conflict, /Mine: Theirs/);
      assert.match(conflict, /Theirs: Mine/);
      await other.click("#conflicts button[data-choice=theirs]");
      await other.waitForSelector("#conflicts .conflict", {
        state: "detached",
        timeout: 15_000,
      });
      await waitForTitles(other, ["Mine", "Walk the dog", "Written offline"]);
      await waitForTitles(tab1, ["Mine", "Walk the dog", "Written offline"]);

      // The screenshot for the docs, of a synced page.
      await tab1.setViewportSize({ width: 720, height: 520 });
      await tab1.waitForFunction(
        () => document.querySelector("#pending")?.textContent === "0 pending",
        undefined,
        { timeout: 10_000 },
      );
      const png = await tab1.screenshot({ fullPage: true });
      await Deno.mkdir(new URL(".", SCREENSHOTS[0]), { recursive: true });
      for (const path of SCREENSHOTS) await Deno.writeFile(path, png);
      assert.ok(png.byteLength > 10_000);

      // Closing the syncing tab hands over to the other tab.
      const [leader, rest] = await role(tab1) === "syncer"
        ? [tab1, tab2]
        : [tab2, tab1];
      const closedAt = Date.now();
      await leader.close({ runBeforeUnload: true });
      await rest.waitForFunction(
        () =>
          (globalThis as unknown as { engine: { role: string } }).engine
            .role === "syncer",
        undefined,
        { timeout: 15_000, polling: 50 },
      );
      console.log(
        `web demo: the other tab syncs ${
          Date.now() - closedAt
        } ms after the syncing tab closed`,
      );
      await add(other, "After the handover");
      await waitForTitles(rest, [
        "Mine",
        "Walk the dog",
        "Written offline",
        "After the handover",
      ]);
    } finally {
      for (const context of contexts) await context.close().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }),
);
