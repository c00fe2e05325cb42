/**
 * Story openings in the style of TinyStories, the prompt set of the speculation benchmarks and of the losslessness
 * tests: deterministic, varied in length and wording, and as many as asked for (up to 80).
 */

const OPENINGS = [
  "Once upon a time, there was",
  "One day, there was",
  "Once upon a time, in a small town, there lived",
  "Tom and Sue saw",
  "In the park, there was",
  "Lily met",
  "Ben found",
  "Mom told a story about",
];

const ENDINGS = [
  "a little girl named Lily. She",
  "a big brown dog who",
  "a boy who liked to",
  "a happy bird that",
  "an old man with a",
  "a cat named Tom. He",
  "a tiny red ball that",
  "a kind mom who",
  "friends who found a",
  "a fish in the pond. It",
];

export const MAX_PROMPTS = OPENINGS.length * ENDINGS.length;

/** The first `count` prompts (openings and endings combined in an order that keeps neighbours different). */
export function storyPrompts(count: number): string[] {
  if (count > MAX_PROMPTS) throw new RangeError(`at most ${MAX_PROMPTS} prompts`);
  return Array.from({ length: count }, (_, i) => {
    const opening = OPENINGS[i % OPENINGS.length];
    const ending = ENDINGS[(i + Math.floor(i / OPENINGS.length)) % ENDINGS.length];
    return `${opening} ${ending}`;
  });
}
