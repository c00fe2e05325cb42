/**
 * The gateway's side of the draft service: ONE Session stream multiplexing every sequence of this gateway
 * (draft.proto). It never fails a request: when the draft service is unreachable, slow or confused, `propose`
 * answers `undefined` and the round runs as plain decoding (K = 0). Speculation resumes by itself: after a failure the
 * link tries a new stream at most every `retryMs`, and sequences are re-opened with their full history on the new
 * stream before their next proposal.
 *
 * A draft service that hears the target's verdicts drafts round r + 1 the moment round r is verified and sends that
 * Proposal unasked (draft.proto, "Drafting on the verdict"). One that arrives before the gateway asks for it is kept
 * (the latest per sequence) and answers the ask at once; the ask still goes out, as does the Accept before it, so that
 * the draft service learns the K and trace context for the round after (it answers neither a second time).
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { DraftClient as DraftStub } from "../gen/specgate/v1/Draft.ts";
import type { DraftClientMessage } from "../gen/specgate/v1/DraftClientMessage.ts";
import type { DraftServerMessage__Output } from "../gen/specgate/v1/DraftServerMessage.ts";
import type { Proposal__Output } from "../gen/specgate/v1/Proposal.ts";
import type { ProposeRequest } from "../gen/specgate/v1/ProposeRequest.ts";
import type { SamplingParams } from "../gen/specgate/v1/SamplingParams.ts";
import type { TreeShape } from "../gen/specgate/v1/TreeShape.ts";
import { DraftClient } from "../proto/load.ts";

/** What the link needs to know of a sequence to (re-)open it on any stream. */
export interface DraftedSequence {
  readonly sequenceId: string;
  readonly drafter: string;
  readonly sampling: SamplingParams;
  /** Every committed token right now (prompt + generated). */
  history(): readonly number[];
}

export interface DraftLinkOptions {
  readonly address: string;
  /** A proposal not answered this long is given up (the round runs without a draft). */
  readonly proposeTimeoutMs: number;
  /** Least time between attempts to open a new stream after a failure. */
  readonly retryMs: number;
  readonly logger: Logger;
  /** TLS to the draft service (default: plaintext, for loopback or a network the cluster's policies close). */
  readonly credentials?: grpc.ChannelCredentials;
}

type Stream = grpc.ClientDuplexStream<DraftClientMessage, DraftServerMessage__Output>;

interface Waiting {
  readonly round: number;
  readonly resolve: (answer: Proposal__Output | "reopen" | undefined) => void;
  readonly timer: NodeJS.Timeout;
}

/** A generation no stream has: the sequence is to be opened again (with its full history) before its next proposal. */
const REOPEN = 0;

/** Error codes after which re-opening the sequence with its full history fixes the next proposal. */
const REOPEN_CODES = new Set(["DRAFT_ERROR_UNKNOWN_SEQUENCE", "DRAFT_ERROR_DESYNC"]);

export class DraftLink {
  readonly #stub: DraftStub;
  readonly #options: DraftLinkOptions;
  #stream: Stream | undefined;
  /** Bumped for every new stream: a sequence opened on an older one must be opened again. */
  #generation = 0;
  #lastFailure = Number.NEGATIVE_INFINITY;
  /** Per sequence, the stream generation it was opened on, or REOPEN. */
  readonly #openedOn = new Map<string, number>();
  readonly #waiting = new Map<string, Waiting>();
  /** Proposals drafted on a verdict that came before their round was asked for, by sequence. */
  readonly #early = new Map<string, Proposal__Output>();
  #closed = false;

  constructor(options: DraftLinkOptions) {
    this.#options = options;
    this.#stub = new DraftClient(options.address, options.credentials ?? grpc.credentials.createInsecure());
  }

  /** The channel to the draft service, for its unary RPCs (Stats, Release). */
  get client(): DraftStub {
    return this.#stub;
  }

  /** False while the link is backing off after a failure (rounds then run without a draft). */
  get available(): boolean {
    return this.#stream !== undefined || performance.now() - this.#lastFailure >= this.#options.retryMs;
  }

  /**
   * Asks for up to k draft tokens after the sequence's history, and for `kNext` more on this round's verdict (0:
   * none); with `tree`, for token trees of that shape, k and kNext deep. Undefined when no proposal can be had (the
   * caller runs the round without a draft). A proposal drafted on the verdict of the round before may hold more than k
   * tokens, or be a tree or a chain whatever this round asks.
   */
  async propose(
    sequence: DraftedSequence,
    round: number,
    k: number,
    kNext: number,
    traceContext: Record<string, string> = {},
    tree?: TreeShape,
  ): Promise<Proposal__Output | undefined> {
    const early = this.#early.get(sequence.sequenceId);
    this.#early.delete(sequence.sequenceId);
    for (let attempt = 0; attempt < 2; attempt++) {
      const stream = this.#ensureStream();
      if (!stream) return undefined;
      if (this.#openedOn.get(sequence.sequenceId) !== this.#generation) this.#open(stream, sequence);
      const propose = {
        sequence_id: sequence.sequenceId,
        round,
        k,
        history_length: sequence.history().length,
        trace_context: traceContext,
        k_next: kNext,
        ...(tree && { tree }),
      };
      if (early?.round === round) {
        stream.write({ propose });
        return early;
      }
      const answer = await this.#ask(stream, propose);
      if (answer !== "reopen") return answer;
      this.#openedOn.set(sequence.sequenceId, REOPEN);
    }
    return undefined;
  }

  /**
   * Settles a round: the draft keeps `accepted` of its proposal (for a tree, the nodes of `path`) and appends the
   * target's tokens.
   */
  accept(
    sequenceId: string,
    round: number,
    accepted: number,
    appended: readonly number[],
    path: readonly number[] = [],
  ): void {
    if (this.#openedOn.get(sequenceId) !== this.#generation || !this.#stream) return;
    this.#stream.write({
      accept: { sequence_id: sequenceId, round, accepted, appended: [...appended], path: [...path] },
    });
  }

  /**
   * The sequence ended: the draft frees its cache. Also when the sequence waits to be re-opened: a failed settlement or
   * a late proposal leaves it open over there (the draft ignores ids it does not hold).
   */
  close(sequenceId: string): void {
    this.#waiting.get(sequenceId)?.resolve(undefined);
    this.#early.delete(sequenceId);
    if (this.#openedOn.has(sequenceId) && this.#stream) {
      this.#stream.write({ close: { sequence_id: sequenceId } });
    }
    this.#openedOn.delete(sequenceId);
  }

  /** Ends the stream (the draft service frees what this gateway still held) and the channel. */
  shutdown(): void {
    this.#closed = true;
    for (const id of [...this.#waiting.keys()]) this.#waiting.get(id)?.resolve(undefined);
    this.#stream?.end();
    this.#stream = undefined;
    this.#stub.close();
  }

  #open(stream: Stream, sequence: DraftedSequence): void {
    stream.write({
      open: {
        sequence_id: sequence.sequenceId,
        drafter: sequence.drafter,
        tokens: [...sequence.history()],
        sampling: sequence.sampling,
      },
    });
    this.#openedOn.set(sequence.sequenceId, this.#generation);
  }

  #ask(stream: Stream, propose: ProposeRequest & { sequence_id: string; round: number }) {
    const { sequence_id: sequenceId, round } = propose;
    this.#waiting.get(sequenceId)?.resolve(undefined);
    return new Promise<Proposal__Output | "reopen" | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.#options.logger.warn({ sequenceId, round }, "draft proposal timed out; round runs without a draft");
        // The late answer (if any) will be dropped; re-open so both sides agree on the history again.
        this.#openedOn.set(sequenceId, REOPEN);
        finish(undefined);
      }, this.#options.proposeTimeoutMs);
      const finish = (answer: Proposal__Output | "reopen" | undefined) => {
        clearTimeout(timer);
        if (this.#waiting.get(sequenceId)?.timer === timer) this.#waiting.delete(sequenceId);
        resolve(answer);
      };
      this.#waiting.set(sequenceId, { round, resolve: finish, timer });
      stream.write({ propose });
    });
  }

  #ensureStream(): Stream | undefined {
    if (this.#closed) return undefined;
    if (this.#stream) return this.#stream;
    if (!this.available) return undefined;
    const stream = this.#stub.Session();
    const generation = ++this.#generation;
    this.#stream = stream;
    stream.on("data", (message: DraftServerMessage__Output) => this.#receive(message));
    const fail = (why: string) => {
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      this.#lastFailure = performance.now();
      if (!this.#closed)
        this.#options.logger.warn({ generation, why }, "draft stream lost; rounds run without a draft");
      for (const id of [...this.#waiting.keys()]) this.#waiting.get(id)?.resolve(undefined);
      this.#early.clear();
    };
    stream.on("error", (error: grpc.ServiceError) => fail(error.details || error.message));
    stream.on("end", () => fail("draft service ended the stream"));
    return stream;
  }

  #receive(message: DraftServerMessage__Output): void {
    const { proposal } = message;
    if (proposal) {
      const waiting = this.#waiting.get(proposal.sequence_id);
      if (waiting && waiting.round === proposal.round) waiting.resolve(proposal);
      else if (proposal.on_verdict && this.#openedOn.get(proposal.sequence_id) === this.#generation) {
        this.#early.set(proposal.sequence_id, proposal);
      }
      return;
    }
    const error = message.error;
    if (!error) return;
    const waiting = this.#waiting.get(error.sequence_id);
    this.#options.logger.debug({ ...error }, "draft error");
    if (!waiting || (error.round !== 0 && error.round !== waiting.round)) {
      // A failed Open or Accept: the sequence is out of step; re-open it before its next proposal.
      if (this.#openedOn.has(error.sequence_id)) this.#openedOn.set(error.sequence_id, REOPEN);
      return;
    }
    waiting.resolve(REOPEN_CODES.has(error.code) ? "reopen" : undefined);
  }
}
