/**
 * The draft service's calls to its drafters: proposals of different sequences for the same drafter are batched into
 * one drafter call (one forward per draft step for all of them). A call first makes room under the cache cap for
 * what each proposal adds and rebuilds the caches the table dropped; when the drafter call fails, the caches of its
 * sequences are in no known state and are dropped.
 */
import { Batcher } from "../batching/batcher.ts";
import { isTreeDrafter } from "../engine/drafter.ts";
import type { SparseDistribution } from "../engine/sampling.ts";
import type { TokenTree } from "../engine/token-tree.ts";
import { asDraftFailure, DraftFailure, invalidArgument } from "./draft-failure.ts";
import type { ServedDrafter } from "./drafters.ts";
import type { SequenceTable, TableSequence } from "./sequence-table.ts";

export interface ProposalResult {
  /** Drafter that proposed. */
  readonly drafter: string;
  readonly tokens: number[];
  /** Sampling mode: the (quantised) q each token was drawn from. Empty when greedy. */
  readonly distributions: SparseDistribution[];
  /** The proposed token tree, when one was asked for (then `tokens` is empty). */
  readonly tree?: TokenTree;
  /** Wall time of the drafter call this proposal was part of (including a rebuild of the cache). */
  readonly draftTimeMs: number;
  /** The drafter cache was (re)built from the history for this proposal. */
  readonly prefilled: boolean;
}

interface ProposeItem<S> {
  readonly sequence: S;
  readonly k: number;
  /** A tree k deep of this branching instead of a chain. */
  readonly tree?: { readonly width: number; readonly nodes: number };
}

export class DraftCalls<S extends TableSequence> {
  readonly #batchers = new Map<ServedDrafter, Batcher<ProposeItem<S>, ProposalResult>>();

  constructor(readonly table: SequenceTable<S>) {
    for (const served of table.drafters.values()) {
      // A proposal starts its drafter call at once when the drafter is idle; the ones that arrive meanwhile share the
      // next call.
      const batcher = new Batcher<ProposeItem<S>, ProposalResult>({
        shareTurn: false,
        key: (item) => item.sequence.id,
        run: (items) => this.#call(served, items),
      });
      this.#batchers.set(served, batcher);
    }
  }

  /**
   * Proposes k tokens (k >= 1, within the drafter's context length) after the sequence's history, or a tree k deep of
   * the given branching, in the next call of its drafter; the sequence's cache is not evicted meanwhile.
   */
  async propose(sequence: S, k: number, tree?: ProposeItem<S>["tree"]): Promise<ProposalResult> {
    const batcher = this.#batchers.get(sequence.served);
    if (!batcher) throw new Error(`no batch for drafter ${sequence.served.spec.name}`);
    sequence.busy = true;
    try {
      return await batcher.submit({ sequence, k, tree });
    } finally {
      sequence.busy = false;
    }
  }

  async #call(served: ServedDrafter, items: ProposeItem<S>[]): Promise<(ProposalResult | Error)[]> {
    const started = performance.now();
    const results: (ProposalResult | Error)[] = [];
    const admitted: { index: number; item: ProposeItem<S>; prefilled: boolean }[] = [];
    let reserved = 0;
    for (const [index, item] of items.entries()) {
      const { sequence, k, tree } = item;
      if (tree && !isTreeDrafter(served.drafter)) {
        results[index] = invalidArgument(`drafter ${served.spec.name} does not draft trees`);
        continue;
      }
      // After proposing, the cache holds the history and k − 1 draft tokens (the last one is never fed), or for a tree
      // at most the root and every node.
      const bytesAfter = (sequence.history.length + (tree ? tree.nodes : k - 1)) * served.kvBytesPerToken;
      const need = Math.max(0, bytesAfter - this.table.cachedBytes(sequence));
      if (!this.table.reserve(need)) {
        results[index] = new DraftFailure(
          "DRAFT_ERROR_RESOURCE_EXHAUSTED",
          `sequence ${sequence.id} needs ${need} bytes of draft KV cache; the cap is ` +
            `${this.table.options.capacityBytes} bytes and the other caches in use cannot be evicted`,
        );
        continue;
      }
      reserved += need;
      try {
        const prefilled = !sequence.cached;
        if (prefilled) await this.table.prefill(sequence);
        admitted.push({ index, item, prefilled });
      } catch (error) {
        results[index] = asDraftFailure(error);
      }
    }
    try {
      const chains = admitted.filter(({ item }) => !item.tree);
      const trees = admitted.filter(({ item }) => item.tree);
      const { drafter } = served;
      // One after the other: a drafter's model runs one forward at a time.
      const drafts =
        chains.length > 0
          ? await drafter.propose(chains.map(({ item }) => ({ sequenceId: item.sequence.id, k: item.k })))
          : [];
      const grown =
        trees.length > 0 && isTreeDrafter(drafter)
          ? await drafter.proposeTrees(
              trees.map(({ item }) => ({
                sequenceId: item.sequence.id,
                shape: { depth: item.k, width: item.tree?.width ?? 1, nodes: item.tree?.nodes ?? item.k },
              })),
            )
          : [];
      const draftTimeMs = performance.now() - started;
      const common = { drafter: served.spec.name, draftTimeMs };
      chains.forEach(({ index, prefilled }, j) => {
        const { tokens, distributions = [] } = drafts[j];
        results[index] = { ...common, tokens, distributions, prefilled };
      });
      trees.forEach(({ index, prefilled }, j) => {
        results[index] = { ...common, tokens: [], distributions: [], tree: grown[j], prefilled };
      });
    } catch (error) {
      // After a failed drafter call its state for these sequences is unknown: drop their caches so that their next
      // proposal rebuilds them from the history.
      for (const { index, item } of admitted) {
        this.table.dropCache(item.sequence);
        results[index] = asDraftFailure(error);
      }
    } finally {
      this.table.unreserve(reserved);
    }
    return results;
  }
}
