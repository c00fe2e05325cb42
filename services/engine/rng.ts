/**
 * Counter-based random numbers (Philox4x32-10, Salmon et al. 2011): every draw is a pure function of
 * (seed, position, stream). A request's whole random state is its seed, so the draft service can sample a draft
 * token and a target replica in another process can draw the acceptance test for the same position without sharing
 * or shipping any generator state, and a sequence can move between replicas mid-request.
 */

/** What a draw is for. Each (position, stream) pair is consumed at most once per request. */
export const Stream = {
  /** The draft sampling its proposal for a position. */
  draft: 0,
  /** The target's accept/reject test of the draft token at a position. */
  accept: 1,
  /** The target sampling a position itself: plain decoding, the correction after a rejection, or the bonus token. */
  target: 2,
} as const;
export type Stream = (typeof Stream)[keyof typeof Stream];

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO_32 = 4294967296;

/** High 32 bits of the 64-bit product of two uint32s, exact in doubles (Math.imul only yields the low half). */
function mulHi(a: number, b: number): number {
  const low = (a & 0xffff) * b;
  const high = (a >>> 16) * b;
  const highHi = Math.floor(high / TWO_32);
  const highLo = high - highHi * TWO_32;
  return (highHi * 65536 + Math.floor((highLo * 65536 + low) / TWO_32)) >>> 0;
}

/** Philox4x32 with 10 rounds: four uint32 counter words and two key words to four uint32 outputs. */
export function philox4x32(counter: readonly number[], key: readonly number[]): [number, number, number, number] {
  let [c0, c1, c2, c3] = counter.map((w) => w >>> 0);
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let round = 0; round < 10; round++) {
    const hi0 = mulHi(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulHi(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** Largest seed kept exactly (seeds travel as JSON numbers and protobuf uint64 alike). */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

/**
 * A uniform double in [0, 1) for the given seed, absolute sequence position and stream. 53 random bits from two
 * output words; positions and seeds are non-negative safe integers. `lane` tells apart draws of one position and
 * stream (the siblings a tree tries at one depth); lane 0 is a chain's draw.
 */
export function uniform(seed: number, position: number, stream: Stream, lane = 0): number {
  const [a, b] = philox4x32(
    [position >>> 0, Math.floor(position / TWO_32) >>> 0, stream, lane],
    [seed >>> 0, Math.floor(seed / TWO_32) >>> 0],
  );
  return ((a >>> 5) * 67108864 + (b >>> 6)) / 9007199254740992;
}

/** A fresh seed for requests that did not ask for one; reported back so the run can be reproduced. */
export function randomSeed(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (words[0] & 0x1fffff) * TWO_32 + words[1];
}
