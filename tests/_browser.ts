/**
 * Real Chromium for the browser tests: Debian's `/usr/bin/chromium` driven
 * by `playwright-core` (no browser download: the browser CDNs are not
 * reachable), pages served by a local `Deno.serve` on `127.0.0.1:0`, and
 * page code bundled with `deno bundle --platform browser`.
 *
 * @module
 */

import { type BrowserContext, chromium } from "playwright-core";

/** Where the tests expect Chromium: Debian's `chromium` package. */
export const CHROMIUM = "/usr/bin/chromium";

/**
 * Chromium's flags. Without the background-networking ones it floods the
 * closed network with refused connections; `--headless` and a fresh
 * `--user-data-dir` (given by {@linkcode launchChromium}) keep runs apart.
 */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

/** How long launching Chromium may take. */
const LAUNCH_TIMEOUT_MS = 30_000;

/**
 * Fails with how to install Chromium when it is missing: the browser tests
 * never skip silently.
 */
export async function requireChromium(): Promise<void> {
  try {
    const info = await Deno.stat(CHROMIUM);
    if (info.isFile || info.isSymlink) return;
  } catch {
    // Reported below.
  }
  throw new Error(
    `Cannot run the browser tests as Chromium is missing: current value is no file at ${CHROMIUM}; install it with \`apt-get install -y chromium\``,
  );
}

/**
 * Launches Chromium with a persistent profile in `userDataDir`: IndexedDB
 * then lives on disk, as in a real browser, and a second launch on the
 * same directory finds it again.
 */
export async function launchChromium(
  userDataDir: string,
): Promise<BrowserContext> {
  await requireChromium();
  return await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS],
    timeout: LAUNCH_TIMEOUT_MS,
  });
}

/** Options for {@linkcode bundle}. */
export interface BundleOptions {
  /** Specifiers left as imports for the page's import map to resolve. */
  readonly external?: readonly string[];
  /** Whether to minify. */
  readonly minify?: boolean;
}

/**
 * Bundles a module for the browser with `deno bundle` and returns the
 * bundle's text.
 */
export async function bundle(
  entry: string | URL,
  options: BundleOptions = {},
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "browser_bundle_" });
  try {
    const output = `${dir}/bundle.js`;
    const path = entry instanceof URL ? entry.pathname : entry;
    const command = new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform=browser",
        "--format=esm",
        "--lock=tests/deno.lock",
        ...(options.minify ? ["--minify"] : []),
        ...(options.external ?? []).map((name) => `--external=${name}`),
        `--output=${output}`,
        path,
      ],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    });
    const { success, stderr } = await command.output();
    if (!success) {
      throw new Error(
        `Cannot bundle ${path}: current value is ${
          new TextDecoder().decode(stderr)
        }`,
      );
    }
    return await Deno.readTextFile(output);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A static site on `127.0.0.1`, for the pages under test. */
export interface StaticSite extends AsyncDisposable {
  /** The site's origin, `http://127.0.0.1:<port>`. */
  readonly origin: string;
  /** Stops the server. */
  close(): Promise<void>;
}

/**
 * Serves `files` (path to content) on `127.0.0.1:0`, with content types
 * from the extension. Anything else is a 404.
 */
export function serveFiles(
  files: Readonly<Record<string, string>>,
): StaticSite {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) => {
      const path = new URL(request.url).pathname;
      const body = files[path];
      if (body === undefined) return new Response("Not found", { status: 404 });
      const type = path.endsWith(".js")
        ? "text/javascript"
        : "text/html; charset=utf-8";
      return new Response(body, {
        headers: { "content-type": type, "cache-control": "no-store" },
      });
    },
  );
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => closing ??= server.shutdown();
  return {
    origin: `http://127.0.0.1:${server.addr.port}`,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Races a promise against a timeout, so that a browser that hangs fails the
 * test with a message instead of stalling it.
 */
export async function within<T>(
  ms: number,
  what: string,
  promise: Promise<T>,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Timed out after ${ms} ms: ${what}`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
