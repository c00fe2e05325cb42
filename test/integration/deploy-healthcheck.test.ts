/**
 * deploy/healthcheck.ts, the containers' health check, against a real gRPC server on loopback: exit 0 only while the
 * server reports SERVING over the standard health-checking protocol.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import type { HealthImplementation } from "grpc-health-check";
import { addStandardServices, bindServer } from "../../services/grpc/server.ts";

const SCRIPT = join(import.meta.dirname, "..", "..", "deploy", "healthcheck.ts");

async function healthcheck(address: string): Promise<{ code: number; stdout: string }> {
  try {
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", SCRIPT, address]);
    return { code: 0, stdout };
  } catch (error) {
    const failed = error as { code: number; stdout: string };
    return { code: failed.code, stdout: failed.stdout };
  }
}

describe("deploy/healthcheck.ts", () => {
  const server = new grpc.Server();
  let health: HealthImplementation;
  let address = "";

  before(async () => {
    health = addStandardServices(server, []);
    address = `127.0.0.1:${await bindServer(server, "127.0.0.1", 0)}`;
  });
  after(() => server.forceShutdown());

  it("fails while the server is not serving, passes once it is, fails when it is gone", async () => {
    assert.deepEqual(await healthcheck(address), { code: 1, stdout: `${address}: NOT_SERVING\n` });
    health.setStatus("", "SERVING");
    assert.deepEqual(await healthcheck(address), { code: 0, stdout: `${address}: SERVING\n` });
    server.forceShutdown();
    const gone = await healthcheck(address);
    assert.equal(gone.code, 1);
    assert.match(gone.stdout, /ECONNREFUSED|No connection established/);
  });
});
