/**
 * Throw-away certificates for TLS tests, made by the openssl command in a temporary folder: a CA, a server
 * certificate for 127.0.0.1 and a client certificate, both signed by the CA (P-256 keys: quick to make).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCertificates {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  /** PEM contents, for clients given buffers. */
  readonly ca: Buffer;
  readonly clientCert: Buffer;
  readonly clientKey: Buffer;
  remove(): void;
}

const KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"];

function openssl(args: string[]): void {
  const run = spawnSync("openssl", args, { encoding: "utf8" });
  if (run.error) throw run.error;
  if (run.status !== 0) throw new Error(`openssl ${args[0]} failed: ${run.stderr}`);
}

/** Undefined when openssl is not installed (the caller skips). */
export function makeTestCertificates(): TestCertificates | undefined {
  if (spawnSync("openssl", ["version"]).error) return undefined;
  const dir = mkdtempSync(join(tmpdir(), "specgate-tls-"));
  const file = (name: string) => join(dir, name);
  try {
    openssl([
      "req",
      "-x509",
      ...KEY,
      "-subj",
      "/CN=specgate test CA",
      "-keyout",
      file("ca.key"),
      "-out",
      file("ca.pem"),
    ]);
    const signed = (name: string, subject: string, extensions: string[]) =>
      openssl([
        ...["req", "-x509", ...KEY, "-CA", file("ca.pem"), "-CAkey", file("ca.key"), "-subj", subject],
        ...extensions.flatMap((extension) => ["-addext", extension]),
        ...["-keyout", file(`${name}.key`), "-out", file(`${name}.pem`)],
      ]);
    signed("server", "/CN=127.0.0.1", [
      "basicConstraints=critical,CA:FALSE",
      "subjectAltName=IP:127.0.0.1",
      "extendedKeyUsage=serverAuth",
    ]);
    signed("client", "/CN=specgate test client", ["basicConstraints=critical,CA:FALSE", "extendedKeyUsage=clientAuth"]);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    dir,
    caFile: file("ca.pem"),
    serverCertFile: file("server.pem"),
    serverKeyFile: file("server.key"),
    clientCertFile: file("client.pem"),
    clientKeyFile: file("client.key"),
    ca: readFileSync(file("ca.pem")),
    clientCert: readFileSync(file("client.pem")),
    clientKey: readFileSync(file("client.key")),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
