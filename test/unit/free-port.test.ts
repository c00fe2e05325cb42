import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { describe, it } from "node:test";
import { freePort } from "../../deploy/free-port.ts";

describe("freePort", () => {
  it("picks ports below the kernel's range for outgoing connections, and each can be bound", async () => {
    const start = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    const ports = await Promise.all(Array.from({ length: 8 }, () => freePort()));
    assert.ok(
      ports.every((port) => port >= 10_000 && port < start),
      `${ports} not in 10000..${start}`,
    );
    for (const port of ports) {
      const server = createServer();
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, "127.0.0.1", resolve);
      });
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
