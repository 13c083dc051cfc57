import { describe, expect, it } from "vitest";
import type * as Client from "../../src/client/types.js";
import type * as Registry from "../../src/registry/types.js";

/**
 * `weft/client` declares its own types (an application imports nothing else
 * of weft), so they are written twice. The compiler holds them together:
 * every registry entry the agent sends must be a value of the client's type,
 * and the other way round, or `tsc -p tsconfig.test.json` (part of `npm
 * test`) fails on this file.
 */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

const service: Same<Registry.Service, Client.Service> = true;
const endpoint: Same<Registry.Endpoint, Client.Endpoint> = true;
const port: Same<Registry.ServicePort, Client.ServicePort> = true;

describe("weft/client's types", () => {
  it("are the registry's entries, field for field (checked by the compiler)", () => {
    expect([service, endpoint, port]).toEqual([true, true, true]);
  });
});
