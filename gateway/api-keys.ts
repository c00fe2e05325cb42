/**
 * The API keys a gateway accepts, each bound to one tenant, configured as SHA-256 hashes of keys only, one
 * `TENANT:SHA256HEX` per line (sdk/api-key.ts says why a hash suffices and mints the keys). A presented key is hashed
 * and compared with every configured hash in constant time (no early exit), so timing tells a caller nothing about how
 * close a guess was.
 */
import { timingSafeEqual } from "node:crypto";
import { type FSWatcher, readFileSync, watch } from "node:fs";
import { basename, dirname } from "node:path";
import { API_KEY_PREFIX, checkTenant, hashApiKey } from "../sdk/api-key.ts";

const HASH = /^[0-9a-f]{64}$/;

export interface ApiKeyEntry {
  readonly tenant: string;
  /** SHA-256 of the key, 32 bytes. */
  readonly hash: Buffer;
}

export type Authentication =
  | { readonly ok: true; readonly tenant: string }
  | { readonly ok: false; readonly message: string };

/**
 * Parses `TENANT:SHA256HEX` entries, one per line (commas also separate, for an environment variable); blank lines and
 * `#` comments are skipped. Throws naming the source and line of the first bad entry, without echoing it (it may be
 * a key pasted by mistake).
 */
export function parseApiKeys(text: string, source: string): ApiKeyEntry[] {
  const entries: ApiKeyEntry[] = [];
  const tenantOfHash = new Map<string, string>();
  for (const [index, raw] of text.split("\n").entries()) {
    for (const part of raw.replace(/#.*/, "").split(",")) {
      const entry = part.trim();
      if (entry === "") continue;
      const where = `${source} line ${index + 1}`;
      const colon = entry.lastIndexOf(":");
      const tenant = colon < 0 ? "" : entry.slice(0, colon).trim();
      const hash =
        colon < 0
          ? entry
          : entry
              .slice(colon + 1)
              .trim()
              .toLowerCase();
      if ((entry.startsWith(API_KEY_PREFIX) || hash.startsWith(API_KEY_PREFIX)) && !HASH.test(hash)) {
        throw new TypeError(
          `${where}: this looks like an API key itself; list only its hash (specgate keygen prints the line to add)`,
        );
      }
      if (colon < 0 || !HASH.test(hash)) {
        throw new TypeError(`${where}: expected TENANT:SHA256HEX (the SHA-256 of the key as 64 hex digits)`);
      }
      try {
        checkTenant(tenant);
      } catch (error) {
        throw new TypeError(`${where}: ${(error as Error).message}`);
      }
      const previous = tenantOfHash.get(hash);
      if (previous !== undefined && previous !== tenant) {
        throw new TypeError(`${where}: this key is already listed for tenant "${previous}"; a key has one tenant`);
      }
      if (previous === undefined) entries.push({ tenant, hash: Buffer.from(hash, "hex") });
      tenantOfHash.set(hash, tenant);
    }
  }
  return entries;
}

export interface ApiKeySources {
  readonly file?: string;
  readonly inline?: string;
}

function readApiKeys(sources: ApiKeySources): ApiKeyEntry[] {
  const entries: ApiKeyEntry[] = [];
  if (sources.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(sources.file, "utf8");
    } catch (error) {
      throw new Error(`cannot read the API keys file ${sources.file}: ${(error as Error).message}`);
    }
    entries.push(...parseApiKeys(text, sources.file));
  }
  if (sources.inline !== undefined) entries.push(...parseApiKeys(sources.inline, "SPECGATE_API_KEYS"));
  return entries;
}

/** The keys a gateway accepts, or undefined (authentication off) when neither source is configured. */
export function loadApiKeys(sources: ApiKeySources): ApiKeys | undefined {
  if (sources.file === undefined && sources.inline === undefined) return undefined;
  return new ApiKeys(readApiKeys(sources));
}

/** Quiet time after a change before the file is read: an editor's save or a Secret update is several events. */
const RELOAD_SETTLE_MS = 100;

export interface ApiKeysWatchLog {
  info(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/**
 * Reloads `keys` whenever the keys file changes, so that keys are added and revoked without a restart; returns the
 * function that stops watching. It watches the file's folder rather than the file: editors and Kubernetes Secret
 * volumes replace the file (a rename, or a swap of the `..data` symlink) instead of writing into it. A file that no
 * longer parses leaves the previous keys in force and is logged: a half-written edit must not lock every client out.
 */
export function watchApiKeys(keys: ApiKeys, sources: ApiKeySources, log: ApiKeysWatchLog): () => void {
  const file = sources.file;
  if (file === undefined) return () => {};
  let timer: NodeJS.Timeout | undefined;
  const reload = () => {
    timer = undefined;
    try {
      keys.replace(readApiKeys(sources));
      log.info({ keys: keys.size, tenants: keys.tenants.length, file }, "API keys reloaded");
    } catch (error) {
      log.error({ file, err: error }, "API keys file changed but cannot be used: the previous keys stay in force");
    }
  };
  const watcher: FSWatcher = watch(dirname(file), (_event, name) => {
    // Kubernetes swaps `..data`; other names in the folder are other files.
    if (name !== null && name !== basename(file) && !name.startsWith("..")) return;
    clearTimeout(timer);
    timer = setTimeout(reload, RELOAD_SETTLE_MS);
  });
  return () => {
    clearTimeout(timer);
    watcher.close();
  };
}

export class ApiKeys {
  #entries: readonly ApiKeyEntry[];

  constructor(entries: readonly ApiKeyEntry[]) {
    this.#entries = entries;
  }

  /** Takes a new set of keys; calls already admitted keep the tenant they were given. */
  replace(entries: readonly ApiKeyEntry[]): void {
    this.#entries = entries;
  }

  get size(): number {
    return this.#entries.length;
  }

  get tenants(): string[] {
    return [...new Set(this.#entries.map((entry) => entry.tenant))];
  }

  /** The tenant of the key given as an `authorization` metadata value (`Bearer <key>`). */
  authenticate(authorization: string | undefined): Authentication {
    if (authorization === undefined || authorization === "") {
      return {
        ok: false,
        message:
          "this gateway requires an API key: send `authorization: Bearer <key>` as gRPC metadata or an HTTP header (SDK option apiKey, CLI --api-key or SPECGATE_API_KEY)",
      };
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!match) return { ok: false, message: 'the authorization value must be "Bearer <key>"' };
    const hash = hashApiKey(match[1]);
    let tenant: string | undefined;
    for (const entry of this.#entries) {
      if (timingSafeEqual(entry.hash, hash) && tenant === undefined) tenant = entry.tenant;
    }
    return tenant === undefined ? { ok: false, message: "the API key is not valid" } : { ok: true, tenant };
  }
}
