import { testServerStore } from "../server/conformance.ts";
import { openKvServerStore } from "../server/kv.ts";

testServerStore("kv (file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sync-server-kv-" });
  const file = `${dir}/store.kv`;
  return {
    store: await openKvServerStore(file),
    reopen: () => openKvServerStore(file),
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}, { persistent: true });
