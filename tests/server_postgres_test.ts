import assert from "node:assert/strict";
import postgres from "postgres";
import { testServerStore } from "../server/conformance.ts";
import { openPostgresServerStore } from "../server/postgres.ts";
import { migrate, MIGRATIONS } from "../server/_pg_schema.ts";
import type { PgSql } from "../server/_pg_sql.ts";
import {
  createSyncServer,
  StaleClockError,
  type StoreChange,
} from "../server/mod.ts";
import { serverRecord } from "../server/_conformance_kit.ts";
import { ClosedError, StorageError } from "../src/errors.ts";
import {
  DATABASE_URL,
  dropSchema,
  freshSchema,
  ignorePostgres,
} from "./_postgres.ts";
import { withTimeout } from "./_timeout.ts";

const IGNORE_POSTGRES = await ignorePostgres();

if (IGNORE_POSTGRES) {
  Deno.test({
    name: "postgres: server store (skipped: no Postgres answers)",
    ignore: true,
    fn() {},
  });
} else {
  testServerStore("postgres", async () => {
    const schema = freshSchema();
    return {
      store: await openPostgresServerStore(DATABASE_URL, { schema }),
      reopen: () => openPostgresServerStore(DATABASE_URL, { schema }),
      teardown: () => dropSchema(schema),
    };
  }, { persistent: true, shared: true });
}

/** Registers a Postgres test with a fresh schema, dropped after. */
function pgTest(
  name: string,
  fn: (schema: string) => Promise<void>,
): void {
  Deno.test({
    name: `postgres: ${name}`,
    ignore: IGNORE_POSTGRES,
    fn: withTimeout(30_000, async () => {
      const schema = freshSchema();
      try {
        await fn(schema);
      } finally {
        await dropSchema(schema);
      }
    }),
  });
}

/** A raw pool for checks the store does not expose. */
async function withSql<T>(work: (sql: PgSql) => Promise<T>): Promise<T> {
  const sql = postgres(DATABASE_URL, { max: 4, onnotice: () => {} });
  try {
    return await work(sql as unknown as PgSql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

pgTest(
  "migrations are versioned and applied once, even by racing openers",
  async (schema) => {
    // Four processes' worth of pools opening one fresh schema at once.
    const stores = await Promise.all(
      Array.from(
        { length: 4 },
        () =>
          openPostgresServerStore(DATABASE_URL, { schema, maxConnections: 2 }),
      ),
    );
    await Promise.all(stores.map((store) => store.close()));
    const rows = await withSql((sql) =>
      sql.unsafe(
        `SELECT version, name FROM "${schema}".schema_migrations ORDER BY version`,
      )
    );
    assert.deepEqual(
      rows.map((row) => Number(row.version)),
      MIGRATIONS.map((migration) => migration.version),
    );
    // A later migration is applied on the next open, once.
    const next = [...MIGRATIONS, {
      version: MIGRATIONS.length + 1,
      name: "test column",
      statements: (
        s: string,
      ) => [`ALTER TABLE ${s}.horizons ADD COLUMN note text`],
    }];
    await withSql(async (sql) => {
      await Promise.all([
        migrate(sql, schema, next),
        migrate(sql, schema, next),
      ]);
      const [row] = await sql.unsafe(
        `SELECT count(*) AS n FROM "${schema}".schema_migrations`,
      );
      assert.equal(Number(row!.n), next.length);
    });
    // Code older than the schema refuses it.
    await assert.rejects(
      openPostgresServerStore(DATABASE_URL, { schema }),
      (error) =>
        error instanceof StorageError &&
        /newer than 1: current value is 2/.test(error.message),
    );
  },
);

pgTest(
  "options are checked and an unreachable server is a StorageError",
  async () => {
    await assert.rejects(
      openPostgresServerStore(DATABASE_URL, { schema: "bad-name" }),
      TypeError,
    );
    await assert.rejects(
      openPostgresServerStore(DATABASE_URL, { maxConnections: 0 }),
      RangeError,
    );
    await assert.rejects(
      openPostgresServerStore("postgres://nobody:secret@127.0.0.1:1/none", {
        connectTimeoutS: 2,
      }),
      (error) =>
        error instanceof StorageError && error.message.includes("***") &&
        !error.message.includes("secret"),
    );
  },
);

pgTest(
  "changes() tells a commit of another store object, not local, and ends at close",
  async (schema) => {
    const a = await openPostgresServerStore(DATABASE_URL, { schema });
    const b = await openPostgresServerStore(DATABASE_URL, { schema });
    const stop = new AbortController();
    try {
      const iterator = b.changes!(stop.signal)[Symbol.asyncIterator]();
      // The listen is registered at the call; a commit made once it is known
      // to be registered is delivered. Commit until one arrives (bounded).
      let change: StoreChange | null = null;
      const next = iterator.next();
      for (let n = 0; change === null && n < 50; n++) {
        await a.commit([{
          type: "record",
          namespace: "alice",
          record: serverRecord("todo", String(n), n + 1),
        }]);
        const got = await Promise.race([
          next,
          new Promise<null>((resolve) => setTimeout(() => resolve(null), 100)),
        ]);
        if (got !== null && !got.done) change = got.value;
      }
      assert.deepEqual(change, {
        namespace: "alice",
        kinds: ["todo"],
        local: false,
      });
      // b's own commit is local.
      await b.commit([{
        type: "record",
        namespace: "bob",
        record: serverRecord("note", "x", 1),
      }]);
      for (;;) {
        const { value } = await iterator.next();
        if (value?.namespace === "bob") {
          assert.deepEqual(value, {
            namespace: "bob",
            kinds: ["note"],
            local: true,
          });
          break;
        }
      }
      // Closing the store ends the feed.
      const end = iterator.next();
      await b.close();
      assert.equal((await end).done, true);
      await assert.rejects(b.readClock!("alice"), ClosedError);
    } finally {
      stop.abort();
      await a.close();
      await b.close();
    }
  },
);

pgTest(
  "a write through one server wakes the live stream of another",
  async (schema) => {
    await using a = createSyncServer({
      store: await openPostgresServerStore(DATABASE_URL, { schema }),
    });
    await using b = createSyncServer({
      store: await openPostgresServerStore(DATABASE_URL, { schema }),
    });
    const stream = await b.fetch(new Request("http://sync.test/live"));
    assert.equal(stream.status, 200);
    const reader = stream.body!.pipeThrough(new TextDecoderStream())
      .getReader();
    try {
      let text = "";
      /** A read that outlived its wait: the next wait takes it over. */
      let pending: Promise<ReadableStreamReadResult<string>> | null = null;
      for (let n = 0; n < 50 && !text.includes("event: change"); n++) {
        const put = await a.fetch(
          new Request(`http://sync.test/todo/${n}`, {
            method: "PUT",
            body: "{}",
          }),
        );
        await put.body?.cancel();
        assert.equal(put.status, 201);
        let timer: ReturnType<typeof setTimeout> | undefined;
        pending ??= reader.read();
        const read = await Promise.race([
          pending,
          new Promise<null>((resolve) => {
            timer = setTimeout(() => resolve(null), 200);
          }),
        ]).finally(() => clearTimeout(timer));
        if (read !== null) pending = null;
        if (read !== null && !read.done) text += read.value;
      }
      assert.match(text, /event: change\ndata: .*"todo"/);
    } finally {
      await reader.cancel();
    }
  },
);

pgTest(
  "of eight commits guarded by one clock, through two stores at once, exactly one applies",
  async (schema) => {
    const a = await openPostgresServerStore(DATABASE_URL, { schema });
    const b = await openPostgresServerStore(DATABASE_URL, { schema });
    try {
      for (let round = 0; round < 5; round++) {
        const clock = await a.readClock!("alice");
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, n) =>
            (n % 2 === 0 ? a : b).commit([{
              type: "record",
              namespace: "alice",
              record: serverRecord("todo", `${round}-${n}`, round + 1),
            }], { namespace: "alice", expect: clock })),
        );
        assert.equal(
          results.filter((result) => result.status === "fulfilled").length,
          1,
          `round ${round}`,
        );
        for (const result of results) {
          if (result.status === "rejected") {
            assert.ok(
              result.reason instanceof StaleClockError,
              String(result.reason),
            );
          }
        }
        const page = await b.listRecords("alice", "todo", { limit: 100 });
        assert.equal(page.records.length, round + 1);
      }
    } finally {
      await a.close();
      await b.close();
    }
  },
);
