/**
 * The browser demo: `deno task demo:web`. One process serves the reference
 * sync server (on an embedded SQLite file, under `/sync`) and the demo page
 * (`examples/browser/`), bundled for the browser on start with Deno's
 * bundler. Open the printed URL in two tabs, or two browsers, and edit.
 *
 * Flags: `--port` (default 8788; 0 picks a free port), `--db` (default
 * `.demo/web-demo.sqlite`; `:memory:` keeps nothing).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createSyncServer } from "../server/mod.ts";
import { openSqliteServerStore } from "../server/sqlite.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "8788" },
    db: { type: "string", default: ".demo/web-demo.sqlite" },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(
    `Cannot start demo as '--port' is not an integer from 0 to 65535: current value is ${
      JSON.stringify(values.port)
    }`,
  );
  Deno.exit(2);
}

const root = new URL("..", import.meta.url);
const page = await Deno.readTextFile(
  new URL("browser/index.html", import.meta.url),
);
const app = await bundle(new URL("browser/app.ts", import.meta.url));
if (values.db !== ":memory:") {
  await Deno.mkdir(new URL(".", new URL(values.db, `file://${Deno.cwd()}/`)), {
    recursive: true,
  });
}

const server = createSyncServer({
  store: await openSqliteServerStore(values.db),
  basePath: "/sync",
});
const http = Deno.serve({
  port,
  hostname: "127.0.0.1",
  onListen({ port }) {
    console.log(`Listening on http://127.0.0.1:${port}/`);
    console.log("Open it in two tabs or two browsers; Ctrl-C stops.");
  },
}, (request) => {
  const path = new URL(request.url).pathname;
  if (path === "/sync" || path.startsWith("/sync/")) {
    return server.fetch(request);
  }
  if (request.method !== "GET") {
    return new Response("Method not allowed", { status: 405 });
  }
  if (path === "/" || path === "/index.html") {
    return new Response(page, {
      headers: { "content-type": "text/html; charset=utf-8" },
    });
  }
  if (path === "/app.js") {
    return new Response(app, {
      headers: { "content-type": "text/javascript; charset=utf-8" },
    });
  }
  return new Response("Not found", { status: 404 });
});

const stop = async () => {
  await http.shutdown();
  await server.close();
};
Deno.addSignalListener("SIGINT", stop);
if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", stop);
await http.finished;

/** Bundles the page's code for the browser with `deno bundle`. */
async function bundle(entry: URL): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "web-demo-" });
  try {
    const output = `${dir}/app.js`;
    const { success, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform=browser",
        "--format=esm",
        "--minify",
        `--output=${output}`,
        entry.pathname,
      ],
      cwd: root.pathname,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!success) {
      throw new Error(
        `Cannot bundle the demo page: current value is ${
          new TextDecoder().decode(stderr)
        }`,
      );
    }
    return await Deno.readTextFile(output);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
