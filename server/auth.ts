/**
 * Bearer-token auth for the reference server: a table of tokens and the
 * principals they stand for, turned into the `auth` hook of
 * {@linkcode createSyncServer}. It runs wherever the handler runs (Deno,
 * Deno Deploy, Bun, Node, a browser worker): it needs only Web Crypto.
 *
 * @example Two users, tokens from the environment
 * ```ts
 * import { bearerAuth, createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({
 *   auth: bearerAuth("s3cret-token-alice=alice,s3cret-token-bob=bob"),
 * });
 * const denied = await server.fetch(new Request("http://localhost/todos"));
 * assert.equal(denied.status, 401);
 * const read = await server.fetch(
 *   new Request("http://localhost/todos", {
 *     headers: { authorization: "Bearer s3cret-token-alice" },
 *   }),
 * );
 * assert.equal(read.status, 200);
 * ```
 *
 * @module
 */

/** Tokens and principals: `"TOKEN=principal,..."`, a record, or pairs. */
export type BearerTokens =
  | string
  | Readonly<Record<string, string>>
  | Iterable<readonly [token: string, principal: string]>;

/**
 * Parses a token table into `[token, principal]` pairs, checking each.
 *
 * A string holds comma-separated `TOKEN=principal` pairs, split at the last
 * `=` (a token may end in `=`); blanks around pairs are ignored. Tokens and
 * principals are visible ASCII without spaces, principals at most 256
 * characters.
 *
 * @example Parsing an environment variable
 * ```ts
 * import { parseBearerTokens } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseBearerTokens("abc==alice, xyz=bob"), [
 *   ["abc=", "alice"],
 *   ["xyz", "bob"],
 * ]);
 * ```
 *
 * @param tokens The table.
 * @returns The pairs, in order.
 * @throws {TypeError} When a pair is malformed or a token is given twice.
 */
export function parseBearerTokens(
  tokens: BearerTokens,
): [token: string, principal: string][] {
  const pairs: [string, string][] = [];
  if (typeof tokens === "string") {
    for (const raw of tokens.split(",")) {
      const pair = raw.trim();
      if (pair === "") continue;
      const at = pair.lastIndexOf("=");
      // Without `=` nothing is shown back: the text may be a pasted token.
      pairs.push(at < 0 ? ["", ""] : [pair.slice(0, at), pair.slice(at + 1)]);
    }
  } else if (Symbol.iterator in Object(tokens)) {
    for (const [token, principal] of tokens as Iterable<[string, string]>) {
      pairs.push([token, principal]);
    }
  } else {
    pairs.push(...Object.entries(tokens as Record<string, string>));
  }
  const seen = new Set<string>();
  for (const [token, principal] of pairs) {
    // A bearer token is visible ASCII (RFC 6750 allows less; this is enough
    // to refuse a pasted space or newline).
    if (
      typeof token !== "string" || typeof principal !== "string" ||
      !/^[\x21-\x7e]+$/.test(token) || !/^[\x21-\x7e]{1,256}$/.test(principal)
    ) {
      throw new TypeError(
        `Cannot use bearer tokens as each needs TOKEN=principal, both visible ASCII without spaces: current value is ${
          JSON.stringify(
            typeof principal === "string" ? `…=${principal.slice(0, 64)}` : "",
          )
        }`,
      );
    }
    if (seen.has(token)) {
      throw new TypeError(
        `Cannot use bearer tokens as a token is given twice: current value is the one for ${
          JSON.stringify(principal)
        }`,
      );
    }
    seen.add(token);
  }
  return pairs;
}

/**
 * The auth hook for a token table: the principal of `Authorization: Bearer
 * TOKEN`, or `null` (answered `401`). Tokens are kept and looked up by
 * their SHA-256, so the lookup takes no time that depends on how much of a
 * guess is right, and the table holds no token in the clear.
 *
 * @param tokens The table (see {@linkcode parseBearerTokens}); it must not be
 * empty.
 * @returns The hook for `createSyncServer({ auth })`.
 * @throws {TypeError} When the table is malformed or empty.
 */
export function bearerAuth(
  tokens: BearerTokens,
): (request: Request) => Promise<string | null> {
  const pairs = parseBearerTokens(tokens);
  if (pairs.length === 0) {
    throw new TypeError(
      "Cannot use bearer tokens as the table is empty: current value is []",
    );
  }
  const table = Promise.all(
    pairs.map(async ([token, principal]) =>
      [await sha256(token), principal] as const
    ),
  ).then((entries) => new Map(entries));
  return async (request) => {
    const match = request.headers.get("authorization")?.match(
      /^Bearer ([\x21-\x7e]{1,4096})$/i,
    );
    if (match === null || match === undefined) return null;
    return (await table).get(await sha256(match[1]!)) ?? null;
  };
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return Array.from(
    new Uint8Array(digest),
    (byte) => byte.toString(16).padStart(2, "0"),
  ).join("");
}
