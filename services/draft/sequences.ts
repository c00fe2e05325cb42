/**
 * The draft service's sequences: per sequence its drafter, sampling, committed history and outstanding proposal, and
 * the rounds the gateway and the target settle on them. Operations on one sequence run in the order they were issued.
 * The table of sequences and their caches is sequence-table.ts; the batched drafter calls, draft-calls.ts.
 *
 * A round is settled either by the gateway's Accept or by the target's DraftVerdict, whichever comes first
 * (draft.proto, "Drafting on the verdict"); a verdict that settles the round also drafts the next one when the round's
 * Propose asked for it, and the gateway's Accept and Propose that follow for those rounds are then answered by what
 * was done.
 */
import type { SeededSampling } from "../../proto/sampling-params.ts";
import { pathTokens, ROOT, type TokenTree, TREE_LIMITS } from "../engine/token-tree.ts";
import type { Branching } from "../engine/tree-policy.ts";
import { DraftCalls, type ProposalResult } from "./draft-calls.ts";
import { asDraftFailure, DraftFailure, invalidArgument } from "./draft-failure.ts";
import type { ServedDrafter } from "./drafters.ts";
import { OperationQueues } from "./operation-queues.ts";
import { SequenceTable, type SequenceTableOptions, type TableCounters, type TableSequence } from "./sequence-table.ts";

export interface OpenArgs {
  readonly sequenceId: string;
  readonly drafter: string;
  /** Full history: prompt (BOS included) + everything generated so far. */
  readonly tokens: readonly number[];
  readonly sampling: SeededSampling;
}

export interface ProposeArgs {
  readonly sequenceId: string;
  readonly round: number;
  readonly k: number;
  /** History length the caller believes the draft holds. */
  readonly historyLength: number;
  /** Tokens to draft for round + 1 when this round's verdict arrives (0: none). */
  readonly kNext?: number;
  /** Trace context of the asking round, kept for a draft on its verdict (which belongs to that round's trace). */
  readonly traceContext?: Readonly<Record<string, string>>;
  /** Draft token trees of this branching, k (and kNext) deep, instead of chains. */
  readonly tree?: Branching;
}

/** The target's verdict on a round (DraftVerdict). */
export interface VerdictArgs {
  readonly sequenceId: string;
  readonly round: number;
  readonly accepted: number;
  readonly nextToken: number;
  /** A tree round's accepted nodes. */
  readonly path: readonly number[];
}

/** A proposal drafted on a verdict: for round `round`, of the sequence's owner. */
export interface VerdictProposal {
  readonly owner: string;
  readonly round: number;
  readonly k: number;
  readonly result: ProposalResult | DraftFailure;
  /** performance.now() when the verdict was taken up. */
  readonly started: number;
  /** ProposeArgs.traceContext of the settled round. */
  readonly traceContext: Readonly<Record<string, string>>;
}

export interface AcceptArgs {
  readonly sequenceId: string;
  readonly round: number;
  readonly accepted: number;
  readonly appended: readonly number[];
  /** A tree round's accepted nodes (then `appended` holds exactly the target's token). */
  readonly path: readonly number[];
}

export interface SequenceCounters extends TableCounters {
  readonly proposals: number;
  readonly draftTokens: number;
  readonly verdictProposals: number;
  readonly verdicts: number;
}

interface Sequence extends TableSequence {
  /** The session (gateway stream) that opened it: the sequence ends with that session. */
  readonly owner: string;
  history: number[];
  proposal: { readonly round: number; readonly tokens: number[]; readonly tree?: TokenTree } | undefined;
  /**
   * K to draft on the verdict of the round proposed last (ProposeRequest.k_next), the branching of its tree (undefined:
   * a chain), and that round's trace context.
   */
  kNext: number;
  tree: Branching | undefined;
  traceContext: Readonly<Record<string, string>>;
  /**
   * Last round a verdict settled, and last round drafted on a verdict: the gateway's Accepts and Proposes up to them,
   * which may still be on their way (it saw the verdicts later), are already done.
   */
  verdictRound: number;
  verdictDraftRound: number;
}

export class DraftSequences {
  readonly #table: SequenceTable<Sequence>;
  readonly #calls: DraftCalls<Sequence>;
  readonly #operations = new OperationQueues();
  #proposals = 0;
  #draftTokens = 0;
  #verdictProposals = 0;
  #verdicts = 0;

  constructor(
    readonly drafters: ReadonlyMap<string, ServedDrafter>,
    options: SequenceTableOptions,
  ) {
    this.#table = new SequenceTable(drafters, options);
    this.#calls = new DraftCalls(this.#table);
  }

  /** Starts or restarts a sequence (replacing any previous state). The cache is built lazily, at the first proposal. */
  open(owner: string, args: OpenArgs): Promise<void> {
    return this.#operations.run(args.sequenceId, () => {
      const served = this.drafters.get(args.drafter);
      if (!served) {
        throw new DraftFailure(
          "DRAFT_ERROR_UNKNOWN_DRAFTER",
          `drafter "${args.drafter}" is not served here (served: ${[...this.drafters.keys()].join(", ")})`,
        );
      }
      if (args.tokens.length === 0) throw invalidArgument("open.tokens must hold the history (at least BOS)");
      this.#table.forget(args.sequenceId);
      this.#table.put({
        id: args.sequenceId,
        owner,
        served,
        sampling: args.sampling,
        history: [...args.tokens],
        proposal: undefined,
        kNext: 0,
        tree: undefined,
        traceContext: {},
        verdictRound: 0,
        verdictDraftRound: 0,
        cached: false,
        busy: false,
      });
    });
  }

  /**
   * Proposes up to k tokens after the sequence's history (fewer near the drafter's context length, or none).
   * Undefined when this round (or a later one) was already drafted on a verdict (that Proposal went out then).
   */
  propose(args: ProposeArgs): Promise<ProposalResult | undefined> {
    return this.#operations.run(args.sequenceId, async () => {
      const sequence = this.#require(args.sequenceId);
      checkRound(args.round, "propose");
      if (args.tree) checkTree(args.tree, Math.max(args.k, args.kNext ?? 0));
      // Also from a Propose answered by a draft on the verdict: the latest word on the round after.
      sequence.kNext = args.kNext ?? 0;
      sequence.tree = args.tree;
      sequence.traceContext = args.traceContext ?? {};
      if (args.round <= sequence.verdictDraftRound) return undefined;
      if (!(Number.isInteger(args.k) && args.k >= 1)) throw invalidArgument(`propose.k must be >= 1, got ${args.k}`);
      if (args.historyLength !== sequence.history.length) {
        throw new DraftFailure(
          "DRAFT_ERROR_DESYNC",
          `history_length ${args.historyLength} differs from the ${sequence.history.length} tokens held for ` +
            `sequence ${sequence.id}: re-open it with the full history`,
        );
      }
      return this.#draft(sequence, args.round, args.k);
    });
  }

  /**
   * Settles a round: keeps the first `accepted` tokens of that round's proposal, then appends the target's tokens.
   * With accepted = 0 it also serves rounds the draft did not propose for (K = 0, or after a DraftError): the
   * appended tokens are simply added to the history. A round a verdict already settled is left as it is.
   */
  accept(args: AcceptArgs): Promise<void> {
    return this.#operations.run(args.sequenceId, () => {
      const sequence = this.#require(args.sequenceId);
      checkRound(args.round, "accept");
      if (args.round <= sequence.verdictRound) return;
      this.#settle(sequence, args.round, args.accepted, args.appended, args.path);
    });
  }

  /**
   * Settles a round on the target's verdict, unless the gateway's Accept came first, and then drafts the next round
   * when its Propose asked for that. Undefined when there is nothing to send; a failed draft is left to the gateway's
   * Propose, which follows and drafts again.
   */
  settleOnVerdict(args: VerdictArgs): Promise<VerdictProposal | undefined> {
    return this.#operations.run(args.sequenceId, async () => {
      const sequence = this.#table.get(args.sequenceId);
      if (sequence?.proposal === undefined || sequence.proposal.round !== args.round) return undefined;
      const started = performance.now();
      this.#settle(sequence, args.round, args.accepted, [args.nextToken], args.path);
      sequence.verdictRound = args.round;
      this.#verdicts++;
      const { kNext: k, owner, traceContext } = sequence;
      if (k === 0) return undefined;
      const round = args.round + 1;
      try {
        const result = await this.#draft(sequence, round, k);
        sequence.verdictDraftRound = round;
        this.#verdictProposals++;
        return { owner, round, k, result, started, traceContext };
      } catch (error) {
        return { owner, round, k, result: asDraftFailure(error), started, traceContext };
      }
    });
  }

  /** Ends a sequence and frees its cache; resolves true when it was open. Unknown ids are ignored. */
  close(sequenceId: string): Promise<boolean> {
    return this.#operations.run(sequenceId, () => this.#table.forget(sequenceId));
  }

  /** Ends every sequence a session opened (its gateway stream ended: nobody will settle or close them). */
  async closeOwnedBy(owner: string): Promise<number> {
    const owned = [...this.#table.values()].filter((s) => s.owner === owner).map((s) => s.id);
    // Re-checked inside each close: the id may have been re-opened by another session meanwhile.
    const closed = await Promise.all(
      owned.map((id) =>
        this.#operations.run(id, () => (this.#table.get(id)?.owner === owner ? this.#table.forget(id) : false)),
      ),
    );
    return closed.filter(Boolean).length;
  }

  /** KV cache bytes held by all drafters now. */
  cacheBytes(): number {
    return this.#table.cacheBytes();
  }

  counters(): SequenceCounters {
    return {
      ...this.#table.counters(),
      proposals: this.#proposals,
      draftTokens: this.#draftTokens,
      verdictProposals: this.#verdictProposals,
      verdicts: this.#verdicts,
    };
  }

  /** Waits for every running operation (a draining server lets them finish before ending its streams). */
  idle(): Promise<void> {
    return this.#operations.idle();
  }

  async #draft(sequence: Sequence, round: number, asked: number): Promise<ProposalResult> {
    this.#table.put(sequence);
    sequence.proposal = undefined;
    const k = Math.min(asked, sequence.served.contextLength - sequence.history.length + 1);
    let result: ProposalResult = {
      drafter: sequence.served.spec.name,
      tokens: [],
      distributions: [],
      draftTimeMs: 0,
      prefilled: false,
    };
    if (k > 0) result = await this.#calls.propose(sequence, k, sequence.tree);
    sequence.proposal = { round, tokens: result.tokens, tree: result.tree };
    this.#proposals++;
    this.#draftTokens += result.tree?.tokens.length ?? result.tokens.length;
    return result;
  }

  #settle(
    sequence: Sequence,
    round: number,
    accepted: number,
    appended: readonly number[],
    path: readonly number[],
  ): void {
    const proposal = sequence.proposal?.round === round ? sequence.proposal : undefined;
    if (proposal?.tree) {
      this.#settlePath(sequence, proposal.tree, accepted, appended, path);
      return;
    }
    if (path.length > 0) throw invalidArgument(`accept.path is set but round ${round} proposed no tree`);
    const proposed = proposal?.tokens ?? [];
    if (!(Number.isInteger(accepted) && accepted >= 0 && accepted <= proposed.length)) {
      throw invalidArgument(
        `accept.accepted ${accepted} is outside 0..${proposed.length} ` +
          `(tokens proposed for sequence ${sequence.id} in round ${round})`,
      );
    }
    const kept = sequence.history.length + accepted;
    this.#table.commit(sequence, kept, appended);
    sequence.history = sequence.history.concat(proposed.slice(0, accepted), appended);
    sequence.proposal = undefined;
    this.#table.put(sequence);
  }

  /** Settles a tree round: the history takes the tokens of the accepted path, then the target's token. */
  #settlePath(
    sequence: Sequence,
    tree: TokenTree,
    accepted: number,
    appended: readonly number[],
    path: readonly number[],
  ): void {
    if (accepted !== path.length || appended.length !== 1) {
      throw invalidArgument(
        `a tree round settles with accepted = len(path) and one appended token (got accepted ${accepted}, ` +
          `${path.length} path nodes, ${appended.length} appended)`,
      );
    }
    path.forEach((node, depth) => {
      const parent = depth === 0 ? ROOT : path[depth - 1];
      if (!(Number.isInteger(node) && node >= 0 && node < tree.tokens.length && tree.parents[node] === parent)) {
        throw invalidArgument(`accept.path [${path.join(", ")}] does not descend the proposed tree from its root`);
      }
    });
    this.#table.commitPath(sequence, path, appended[0]);
    sequence.history = sequence.history.concat(pathTokens(tree, path), appended);
    sequence.proposal = undefined;
    this.#table.put(sequence);
  }

  #require(sequenceId: string): Sequence {
    const sequence = this.#table.get(sequenceId);
    if (!sequence) {
      throw new DraftFailure(
        "DRAFT_ERROR_UNKNOWN_SEQUENCE",
        `sequence ${sequenceId} is not open here: re-open it with the full history`,
      );
    }
    return sequence;
  }
}

/** A tree within what one verify forward takes (token-tree.ts TREE_LIMITS). */
function checkTree(tree: Branching, depth: number): void {
  const { maxNodes, maxDepth } = TREE_LIMITS;
  if (!(Number.isInteger(tree.width) && tree.width >= 1)) {
    throw invalidArgument(`propose.tree.width must be >= 1, got ${tree.width}`);
  }
  if (!(Number.isInteger(tree.nodes) && tree.nodes >= 1 && tree.nodes <= maxNodes)) {
    throw invalidArgument(`propose.tree.nodes must lie in 1..${maxNodes}, got ${tree.nodes}`);
  }
  if (depth > maxDepth) throw invalidArgument(`a tree is at most ${maxDepth} deep; k ${depth} asks for more`);
}

/** Rounds count from 1: round 0 would pass for a round already settled or drafted on a verdict. */
function checkRound(round: number, message: string): void {
  if (!(Number.isInteger(round) && round >= 1)) throw invalidArgument(`${message}.round must be >= 1, got ${round}`);
}
