/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The demo page's code: a todo list on IndexedDB, synced through the
 * reference server that serves the page (`deno task demo:web`). It is
 * bundled for the browser by `examples/web_demo.ts`.
 *
 * Every tab and browser keeps its own local copy; writes are instant and
 * land in the outbox, which syncs when the page is online. The "offline"
 * switch cuts the page's network (the transport's fetch refuses) so edits
 * pile up locally; conflicts on one todo edited in two places while apart
 * are parked and shown with the two versions to choose from.
 *
 * @module
 */

import {
  type ConflictEntry,
  type JsonObject,
  Resolutions,
  SyncEngine,
} from "../../mod.ts";
import { openIndexedDbStorage } from "../../storage/indexeddb.ts";
import { createRestTransport } from "../../transport/rest.ts";

interface Todo {
  readonly id: string;
  readonly title: string;
  readonly done: boolean;
}

const params = new URLSearchParams(location.search);
const dbName = params.get("db") ?? "offline-first-todos";
// The "offline" switch stands for the network: every tab of this browser
// shares it (localStorage), as they would share a lost connection.
const OFFLINE_KEY = "offline-first-demo:offline";
if (params.get("offline") === "1") localStorage.setItem(OFFLINE_KEY, "1");
let offline = localStorage.getItem(OFFLINE_KEY) === "1";

const storage = await openIndexedDbStorage(dbName);
const transport = createRestTransport({
  baseUrl: new URL("sync", location.href).href,
  fetch: (input, init) =>
    offline
      ? Promise.reject(new TypeError("Failed to fetch: the page is offline"))
      : fetch(input, init),
  retry: { attempts: 1 },
});
// The tabs of this origin share one IndexedDB database: one of them syncs
// (it holds the store's lease), the others hear its results through the
// store and a BroadcastChannel, and take over when it closes.
const engine = new SyncEngine({
  storage,
  transport,
  // The Web Lock elects the syncing tab, and passes on the moment it closes.
  shared: { webLock: dbName },
});
addEventListener("pagehide", () => void engine.close());
const todos = engine.table<Todo>("todos", { strategy: "manual" });

const $ = <E extends HTMLElement>(id: string) =>
  document.getElementById(id) as E;
const view = {
  connection: $("connection"),
  pending: $("pending"),
  conflictCount: $("conflict-count"),
  synced: $("synced"),
  role: $("role"),
  offline: $<HTMLInputElement>("offline"),
  form: $<HTMLFormElement>("add"),
  title: $<HTMLInputElement>("title"),
  list: $<HTMLUListElement>("todos"),
  conflicts: $("conflicts"),
};

// The status snapshot (connection, phase, counts, last sync) drives the
// badges; record changes, local or pulled, redraw the list.
engine.on("status", () => void render());
engine.on("change", () => void render());

view.offline.checked = offline;
view.offline.addEventListener("change", () => {
  offline = view.offline.checked;
  localStorage.setItem(OFFLINE_KEY, offline ? "1" : "0");
  if (!offline) void engine.sync().catch(() => {});
  void render();
});
// Another tab flipped the switch.
addEventListener("storage", (event) => {
  if (event.key !== OFFLINE_KEY) return;
  offline = event.newValue === "1";
  view.offline.checked = offline;
  if (!offline) void engine.sync().catch(() => {});
  void render();
});

view.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const title = view.title.value.trim();
  if (title === "") return;
  view.title.value = "";
  void todos.put({ id: crypto.randomUUID(), title, done: false });
});

view.list.addEventListener("click", (event) => {
  const target = event.target as HTMLElement;
  const id = target.closest<HTMLElement>("li.todo")?.dataset.id;
  if (id === undefined) return;
  if (target.matches("input[type=checkbox]")) {
    void todos.update(id, { done: (target as HTMLInputElement).checked });
  } else if (target.matches("button.delete")) {
    void todos.delete(id);
  } else if (target.matches(".title")) {
    const title = prompt("Rename", target.textContent ?? "")?.trim();
    if (title) void todos.update(id, { title });
  }
});

view.conflicts.addEventListener("click", (event) => {
  const button = (event.target as HTMLElement).closest<HTMLButtonElement>(
    "button[data-op]",
  );
  if (button === null) return;
  const resolution = button.dataset.choice === "mine"
    ? Resolutions.acceptClient()
    : Resolutions.acceptServer();
  void engine.conflicts.resolve(button.dataset.op!, resolution).then(() =>
    engine.sync().catch(() => {})
  ).finally(() => render());
});

let rendering: Promise<void> | null = null;
let again = false;
/** Renders the page from the local store; calls during a render coalesce. */
function render(): Promise<void> {
  if (rendering !== null) {
    again = true;
    return rendering;
  }
  rendering = (async () => {
    do {
      again = false;
      await draw();
    } while (again);
  })().finally(() => rendering = null);
  return rendering;
}

async function draw(): Promise<void> {
  const [items, conflicts] = await Promise.all([
    todos.list(),
    engine.conflicts.list(),
  ]);
  const status = engine.status;
  const { pending, lastSyncedAt, lastError } = status;
  const state = offline || status.connection === "offline"
    ? "offline"
    : status.phase === "push" || status.phase === "pull"
    ? "syncing"
    : "online";
  view.connection.dataset.state = state;
  view.connection.textContent = lastError !== null &&
      lastError.category !== "network"
    ? `error: ${lastError.category}`
    : state;
  view.pending.textContent = `${pending} pending`;
  view.pending.dataset.warn = String(pending > 0);
  view.conflictCount.textContent = `${conflicts.length} conflict${
    conflicts.length === 1 ? "" : "s"
  }`;
  view.conflictCount.dataset.warn = String(conflicts.length > 0);
  view.role.textContent = status.role === "syncer"
    ? "this tab syncs"
    : "another tab syncs";
  view.synced.textContent = lastSyncedAt === null
    ? "never synced"
    : `synced ${new Date(lastSyncedAt).toLocaleTimeString()}`;
  const pendingIds = new Set(
    (await engine.outbox.list({ kinds: ["todos"] })).map((op) => op.id),
  );
  view.list.replaceChildren(...items.map((todo) => {
    const li = document.createElement("li");
    li.className = "todo";
    li.dataset.id = todo.id;
    li.dataset.done = String(todo.done === true);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = todo.done === true;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = String(todo.title ?? "");
    const remove = document.createElement("button");
    remove.className = "delete";
    remove.textContent = "×";
    remove.title = "Delete";
    li.append(box, title);
    if (pendingIds.has(todo.id)) {
      const mark = document.createElement("span");
      mark.className = "pending";
      mark.textContent = "not synced";
      li.append(mark);
    }
    li.append(remove);
    return li;
  }));
  view.conflicts.replaceChildren(
    ...(conflicts.length === 0 ? [] : [heading(), ...conflicts.map(card)]),
  );
}

function heading(): HTMLElement {
  const h2 = document.createElement("h2");
  h2.textContent = "Edited in two places";
  return h2;
}

function card(conflict: ConflictEntry): HTMLElement {
  const div = document.createElement("div");
  div.className = "conflict";
  div.dataset.id = conflict.id;
  const show = (who: string, data: JsonObject | null) => {
    const line = document.createElement("div");
    line.textContent = `${who}: ${
      data === null
        ? "deleted"
        : `${String(data.title ?? "")}${data.done === true ? " (done)" : ""}`
    }`;
    return line;
  };
  const button = (choice: "mine" | "theirs", label: string) => {
    const b = document.createElement("button");
    b.dataset.op = conflict.opId;
    b.dataset.choice = choice;
    b.textContent = label;
    return b;
  };
  div.append(
    show("Mine", conflict.local),
    show("Theirs", conflict.server),
    button("mine", "Keep mine"),
    button("theirs", "Take theirs"),
  );
  return div;
}

// Writes are pushed 100 ms after they happen; other tabs' and browsers'
// writes arrive by the server's live hints, with a slow poll as safety net.
engine.startAuto({ intervalMs: 30_000, afterWriteMs: 100, live: true });
await render();
// For tests and the curious: the engine and the table, from the console.
Object.assign(globalThis, { engine, todos });
