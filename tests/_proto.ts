/**
 * Test helpers shared by the merge tests.
 *
 * @module
 */

/**
 * Registers a test that runs with the `__proto__` accessor of Node, Bun and
 * browsers, where `obj["__proto__"] = v` replaces the prototype. Deno's own
 * setter defines an own property instead, which would hide exactly the
 * pollution bugs these tests look for.
 *
 * @param name The test's name.
 * @param fn The test.
 */
export function protoTest(name: string, fn: () => void): void {
  Deno.test(name, function run(): void {
    const saved = Object.getOwnPropertyDescriptor(
      Object.prototype,
      "__proto__",
    );
    Object.defineProperty(Object.prototype, "__proto__", {
      configurable: true,
      enumerable: false,
      get(this: object): object | null {
        return Object.getPrototypeOf(this);
      },
      set(this: unknown, proto: unknown): void {
        if (typeof this !== "object" || this === null) return;
        if (typeof proto === "object" || typeof proto === "function") {
          Object.setPrototypeOf(this, proto);
        }
      },
    });
    try {
      fn();
    } finally {
      if (saved !== undefined) {
        Object.defineProperty(Object.prototype, "__proto__", saved);
      }
    }
  });
}
