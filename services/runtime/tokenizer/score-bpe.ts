/**
 * Score-ordered BPE merging as llama2.c's `encode` does it: repeatedly merge the adjacent pair whose concatenation is
 * the vocabulary entry with the highest score (leftmost pair on ties) until no pair is in the vocabulary.
 *
 * llama2.c rescans every pair after each merge (quadratic in prompt length). Here the symbols form a linked list and
 * the candidate pairs sit in a max-heap; a popped pair is used only if both symbols are still as they were when it was
 * pushed, so the merge order — and therefore the output — is the same, in O(n log n).
 */

export interface MergeVocabulary {
  /** Piece of every id, one char per byte (latin1), so that concatenation is byte concatenation. */
  readonly pieces: readonly string[];
  readonly scores: ArrayLike<number>;
  /** Id of a piece (the first id when a piece occurs twice). */
  readonly idOf: ReadonlyMap<string, number>;
}

interface Candidate {
  readonly left: number;
  readonly right: number;
  readonly leftId: number;
  readonly rightId: number;
  readonly merged: number;
  readonly score: number;
}

/** True when `a` must be merged before `b`: higher score first, then the leftmost pair (as llama2.c's scan). */
function precedes(a: Candidate, b: Candidate): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

class CandidateHeap {
  private readonly items: Candidate[] = [];

  get size(): number {
    return this.items.length;
  }

  push(c: Candidate): void {
    const items = this.items;
    let i = items.push(c) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!precedes(items[i], items[parent])) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }

  pop(): Candidate {
    const items = this.items;
    const top = items[0];
    const last = items.pop() as Candidate;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && precedes(items[l], items[best])) best = l;
        if (r < items.length && precedes(items[r], items[best])) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best], items[i]];
        i = best;
      }
    }
    return top;
  }
}

/** Merges `ids` (initial symbols, e.g. one per character) into the final token ids. */
export function mergeByScore(ids: readonly number[], vocab: MergeVocabulary): number[] {
  const n = ids.length;
  const token = Int32Array.from(ids);
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  const alive = new Uint8Array(n).fill(1);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const heap = new CandidateHeap();
  const consider = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const merged = vocab.idOf.get(vocab.pieces[token[left]] + vocab.pieces[token[right]]);
    if (merged === undefined) return;
    heap.push({ left, right, leftId: token[left], rightId: token[right], merged, score: vocab.scores[merged] });
  };
  for (let i = 0; i + 1 < n; i++) consider(i, i + 1);

  while (heap.size > 0) {
    const c = heap.pop();
    const stale =
      !alive[c.left] ||
      !alive[c.right] ||
      next[c.left] !== c.right ||
      token[c.left] !== c.leftId ||
      token[c.right] !== c.rightId;
    if (stale) continue;
    token[c.left] = c.merged;
    alive[c.right] = 0;
    const after = next[c.right];
    next[c.left] = after;
    if (after >= 0) prev[after] = c.left;
    consider(prev[c.left], c.left);
    consider(c.left, after);
  }

  const out: number[] = [];
  for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push(token[i]);
  return out;
}
