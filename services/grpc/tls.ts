/**
 * TLS of specgate's gRPC hops from PEM files: a server's certificate and key (and the CA its clients must chain to for
 * mutual TLS), a client's trusted CA (and its own certificate for mutual TLS), and the settings that name them.
 */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";

/** PEM files of a TLS server: its certificate chain and key, and for mutual TLS the CA its clients must chain to. */
export interface ServerTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** Set: every client must present a certificate signed by this CA (mutual TLS). */
  readonly clientCaFile?: string;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new Error(`cannot read the ${what} ${path}: ${(error as Error).message}`);
  }
}

/** The PEM files' contents, read and checked once at start-up (a server would only fail later, without naming them). */
export function readServerTls(files: ServerTlsFiles): { cert: Buffer; key: Buffer; clientCa: Buffer | undefined } {
  const clientCa = files.clientCaFile === undefined ? undefined : readPem(files.clientCaFile, "client CA file");
  const cert = readPem(files.certFile, "TLS certificate file");
  const key = readPem(files.keyFile, "TLS key file");
  try {
    createSecureContext({ cert, key, ca: clientCa });
  } catch (error) {
    const named = [files.certFile, files.keyFile, ...(files.clientCaFile ? [files.clientCaFile] : [])].join(", ");
    throw new Error(`the TLS files ${named} are not a usable PEM certificate and key: ${(error as Error).message}`);
  }
  return { cert, key, clientCa };
}

/** gRPC server credentials from PEM files (readServerTls). */
export function serverTlsCredentials(files: ServerTlsFiles): grpc.ServerCredentials {
  const { cert, key, clientCa } = readServerTls(files);
  return grpc.ServerCredentials.createSsl(
    clientCa ?? null,
    [{ cert_chain: cert, private_key: key }],
    clientCa !== undefined,
  );
}

/** A setting as its flag and environment variable name it, for messages. */
interface SettingName {
  readonly flag: string;
  readonly env: string;
}

/**
 * A server's TLS files from its settings (undefined: plaintext); throws, naming the settings, when they do not make a
 * whole: a certificate without its key, or a client CA without TLS.
 */
export function serverTlsFiles(
  values: { readonly cert?: string; readonly key?: string; readonly clientCa?: string },
  names: { readonly cert: SettingName; readonly key: SettingName; readonly clientCa: SettingName },
): ServerTlsFiles | undefined {
  const { cert, key, clientCa } = values;
  const named = (setting: SettingName) => `--${setting.flag} / $${setting.env}`;
  if (cert === undefined && key === undefined) {
    if (clientCa !== undefined) {
      throw new TypeError(`${named(names.clientCa)} needs TLS: set --${names.cert.flag} and --${names.key.flag} too`);
    }
    return undefined;
  }
  if (cert === undefined || key === undefined) {
    throw new TypeError(`TLS needs both ${named(names.cert)} and ${named(names.key)}; only one is set`);
  }
  return { certFile: cert, keyFile: key, clientCaFile: clientCa };
}

/**
 * PEM files of a TLS client: the CA its server's certificate must chain to, and for mutual TLS its own certificate and
 * key (both or neither).
 */
export interface ClientTlsFiles {
  readonly caFile: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** gRPC channel credentials from PEM files, read and checked at start-up. */
export function clientTlsCredentials(files: ClientTlsFiles): grpc.ChannelCredentials {
  const ca = readPem(files.caFile, "CA file");
  const cert = files.certFile === undefined ? undefined : readPem(files.certFile, "client certificate file");
  const key = files.keyFile === undefined ? undefined : readPem(files.keyFile, "client key file");
  try {
    createSecureContext({ ca, cert, key });
  } catch (error) {
    throw new Error(`the TLS client files are not a usable PEM CA, certificate and key: ${(error as Error).message}`);
  }
  return grpc.credentials.createSsl(ca, key ?? null, cert ?? null);
}
