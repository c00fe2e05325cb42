/**
 * The identity of a sequence's first tokens, for verify jobs that carry only what the replica's cache lacks
 * (target.proto HeldPrefix): the prefix length and a 64-bit rolling hash, kept as two 32-bit lanes. Each lane is a
 * polynomial hash modulo 2^32 with its own multiplier, so extending a prefix by n tokens costs O(n) on either side and
 * neither ever rehashes the context.
 */
import type { HeldPrefix } from "../../gen/specgate/v1/HeldPrefix.ts";

export interface PrefixHash {
  readonly length: number;
  readonly high: number;
  readonly low: number;
}

export const EMPTY_PREFIX: PrefixHash = { length: 0, high: 0, low: 0 };

const HIGH_MULTIPLIER = 0x9e3779b1;
const LOW_MULTIPLIER = 0x85ebca77;
const TOKEN_MIX = 0xc2b2ae3d;

/** `prefix` extended by `tokens[from..to)`. */
export function extendPrefix(prefix: PrefixHash, tokens: readonly number[], from = 0, to = tokens.length): PrefixHash {
  let { high, low } = prefix;
  for (let i = from; i < to; i++) {
    // Token + 1, mixed, so that token 0 still moves the hash.
    const mixed = Math.imul(tokens[i] + 1, TOKEN_MIX);
    high = (Math.imul(high, HIGH_MULTIPLIER) + mixed) >>> 0;
    low = (Math.imul(low, LOW_MULTIPLIER) + (mixed ^ (mixed >>> 15))) >>> 0;
  }
  return { length: prefix.length + Math.max(0, to - from), high, low };
}

export function samePrefix(a: PrefixHash, b: PrefixHash): boolean {
  return a.length === b.length && a.high === b.high && a.low === b.low;
}

export function toWire(prefix: PrefixHash): HeldPrefix {
  return { length: prefix.length, hash_high: prefix.high, hash_low: prefix.low };
}

export function fromWire(wire: { length: number; hash_high: number; hash_low: number }): PrefixHash {
  return { length: wire.length, high: wire.hash_high, low: wire.hash_low };
}
