/** A small linear congruential generator: the same numbers in [0, 1) from the same seed, for test fixtures. */
export function seededRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
}
