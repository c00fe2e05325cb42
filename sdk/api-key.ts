/**
 * A specgate API key and the line that lists it in a gateway's keys file. A key is 32 random bytes, so the gateway is
 * given only its SHA-256 (`TENANT:SHA256HEX`): an unsalted fast hash is as hard to invert as the key is to guess, and
 * a leaked keys file lets nobody in. `specgate keygen` mints keys here; the gateway reads the lines back
 * (gateway/api-keys.ts).
 */
import { createHash, randomBytes } from "node:crypto";

/** Marks specgate keys, so one pasted where a hash belongs is recognised (and never echoed in an error). */
export const API_KEY_PREFIX = "sg_";
const TENANT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A new random key (`sg_` + 32 random bytes, base64url). */
export function newApiKey(): string {
  return `${API_KEY_PREFIX}${randomBytes(32).toString("base64url")}`;
}

export function hashApiKey(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}

/** The keys-file line of a key: `TENANT:SHA256HEX`. */
export function apiKeyLine(tenant: string, key: string): string {
  checkTenant(tenant);
  return `${tenant}:${hashApiKey(key).toString("hex")}`;
}

/** Throws a TypeError unless `tenant` is a valid tenant name. */
export function checkTenant(tenant: string): void {
  if (!TENANT.test(tenant)) {
    throw new TypeError(
      `tenant "${tenant}" is not a valid name: 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`,
    );
  }
}
