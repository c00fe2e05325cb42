/**
 * The Draft gRPC service (draft.proto): one bidirectional Session stream per gateway connection, many sequences
 * multiplexed on it. A failure of one sequence answers a DraftError with a code and the stream carries on; gRPC status
 * codes are kept for what concerns a whole call (bad unary requests, a server shutting down).
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { DraftHandlers } from "../../gen/specgate/v1/Draft.ts";
import type { DraftClientMessage__Output } from "../../gen/specgate/v1/DraftClientMessage.ts";
import type { DraftServerMessage } from "../../gen/specgate/v1/DraftServerMessage.ts";
import type { DraftStats } from "../../gen/specgate/v1/DraftStats.ts";
import type { Proposal } from "../../gen/specgate/v1/Proposal.ts";
import { toWire } from "../../proto/draft-distribution.ts";
import { draftService, SERVICE_NAMES } from "../../proto/load.ts";
import { seededSamplingFromWire } from "../../proto/sampling-params.ts";
import { encodeTree } from "../engine/token-tree.ts";
import { addStandardServices, bindServer, drain, setServing, withinGrace } from "../grpc/server.ts";
import { type ServerTlsFiles, serverTlsCredentials } from "../grpc/tls.ts";
import type { RedisTarget } from "../replica-link/redis-target.ts";
import type { ProposalResult } from "./draft-calls.ts";
import { asDraftFailure, DraftFailure } from "./draft-failure.ts";
import type { ServedDrafter } from "./drafters.ts";
import type { SequenceEvents } from "./sequence-table.ts";
import { DraftSequences, type VerdictArgs, type VerdictProposal } from "./sequences.ts";
import { listenForVerdicts } from "./verdicts.ts";

type SessionCall = grpc.ServerDuplexStream<DraftClientMessage__Output, DraftServerMessage>;

interface Session {
  readonly call: SessionCall;
  /** Operations of this session not yet answered. */
  readonly pending: Set<Promise<void>>;
  readonly send: (message: DraftServerMessage) => void;
}

/** A draft that ran, for observers (telemetry). */
export interface ProposeCall {
  readonly sequenceId: string;
  readonly round: number;
  readonly k: number;
  /** W3C trace context of the request's round (ProposeRequest.trace_context); on a verdict, of the settled round. */
  readonly traceContext: Readonly<Record<string, string>>;
  /** Drafted on the target's verdict rather than on a Propose. */
  readonly onVerdict: boolean;
  /** performance.now() when the Propose or the verdict was taken up. */
  readonly started: number;
}

/** Called when a draft has run, with its proposal or its failure (not for a Propose answered by an earlier draft). */
export type ProposeObserver = (call: ProposeCall, outcome: ProposalResult | DraftFailure) => void;

/** The Draft service's handlers over a sequence table. */
export class DraftService {
  readonly #sessions = new Map<string, Session>();
  readonly #observers: ProposeObserver[] = [];
  #nextSession = 0;

  /** `verdictChannel()` names the channel proposals advertise now (empty while verdicts cannot be heard). */
  constructor(
    readonly sequences: DraftSequences,
    private readonly logger: Logger,
    private readonly verdictChannel: () => string = () => "",
  ) {}

  /** Adds an observer of every draft run, asked for or on a verdict (the seam telemetry hangs on). */
  observe(observer: ProposeObserver): void {
    this.#observers.push(observer);
  }

  handlers(): DraftHandlers {
    return {
      Session: (call) => this.#session(call),
      Release: (call, callback) => {
        const ids = call.request.sequence_ids;
        if (ids.some((id) => id.length === 0)) {
          callback({ code: grpc.status.INVALID_ARGUMENT, details: "release: sequence_ids must not be empty strings" });
          return;
        }
        Promise.all(ids.map((id) => this.sequences.close(id))).then(
          (closed) =>
            callback(null, { released: closed.filter(Boolean).length, cache_bytes: this.sequences.cacheBytes() }),
          (error: unknown) => callback({ code: grpc.status.INTERNAL, details: String(error) }),
        );
      },
      Stats: (_call, callback) => callback(null, this.stats()),
    };
  }

  stats(): DraftStats {
    const c = this.sequences.counters();
    return {
      sequences: c.sequences,
      cached_sequences: c.cachedSequences,
      cache_bytes: c.cacheBytes,
      cache_capacity_bytes: c.capacityBytes,
      evictions: c.evictions,
      proposals: c.proposals,
      draft_tokens: c.draftTokens,
      prefills: c.prefills,
      verdict_proposals: c.verdictProposals,
      verdicts: c.verdicts,
      drafters: [...this.sequences.drafters.keys()],
      sessions: this.#sessions.size,
    };
  }

  /**
   * Ends every session once its running operations are answered, with UNAVAILABLE so that gateways reconnect (to
   * another draft replica) or carry on without a draft.
   */
  async endSessions(): Promise<void> {
    await Promise.all(
      [...this.#sessions.values()].map(async (session) => {
        await Promise.allSettled([...session.pending]);
        session.call.emit("error", { code: grpc.status.UNAVAILABLE, details: "draft service is shutting down" });
      }),
    );
    await this.sequences.idle();
  }

  /**
   * Takes a target's verdict (DraftVerdict): settles the round unless the gateway's Accept did, and sends the next
   * round's proposal, if one was drafted, on the stream of the gateway that owns the sequence.
   */
  async onVerdict(verdict: VerdictArgs): Promise<void> {
    let drafted: VerdictProposal | undefined;
    try {
      drafted = await this.sequences.settleOnVerdict(verdict);
    } catch (error) {
      // An unsound verdict (the gateway's own Accept then fails the same way and re-opens the sequence).
      this.logger.warn({ err: error, ...verdict }, "draft verdict not applied");
      return;
    }
    if (drafted === undefined) return;
    const { sequenceId } = verdict;
    const call: ProposeCall = {
      sequenceId,
      round: drafted.round,
      k: drafted.k,
      traceContext: drafted.traceContext,
      onVerdict: true,
      started: drafted.started,
    };
    for (const observer of this.#observers) observer(call, drafted.result);
    const { result } = drafted;
    if (result instanceof DraftFailure) {
      this.logger.debug({ sequenceId, round: drafted.round, code: result.code }, "draft on verdict failed");
      return;
    }
    this.#sessions.get(drafted.owner)?.send({ proposal: this.#proposal(sequenceId, drafted.round, result, true) });
  }

  #proposal(sequenceId: string, round: number, result: ProposalResult, onVerdict: boolean): Proposal {
    return {
      sequence_id: sequenceId,
      round,
      tokens: result.tokens,
      distributions: result.distributions.map(toWire),
      ...(result.tree && {
        tree: { ...encodeTree(result.tree), distributions: result.tree.distributions?.map(toWire) ?? [] },
      }),
      draft_time_ms: result.draftTimeMs,
      prefilled: result.prefilled,
      verdict_channel: this.verdictChannel(),
      on_verdict: onVerdict,
    };
  }

  #session(call: SessionCall): void {
    const id = `session-${++this.#nextSession}`;
    let ended = false;
    const send = (message: DraftServerMessage) => {
      if (!ended && !call.writableEnded && !call.destroyed) call.write(message);
    };
    const session: Session = { call, pending: new Set(), send };
    this.#sessions.set(id, session);
    const log = this.logger.child({ session: id, peer: call.getPeer() });
    log.debug("session opened");
    const finish = (reason: string) => {
      if (!this.#sessions.delete(id)) return;
      ended = true;
      // Nobody will settle or close this session's sequences any more: free them now. A gateway that reconnects
      // gets DRAFT_ERROR_UNKNOWN_SEQUENCE and re-opens with the full history.
      void this.sequences.closeOwnedBy(id).then((closed) => log.debug({ reason, closed }, "session ended"));
    };
    call.on("data", (message: DraftClientMessage__Output) => {
      const operation = this.#handle(id, message, send, log);
      session.pending.add(operation);
      void operation.finally(() => session.pending.delete(operation));
    });
    call.on("end", () => {
      // The gateway half-closed: answer what it asked, then end the stream.
      void Promise.allSettled([...session.pending]).then(() => {
        finish("client ended the stream");
        if (!call.writableEnded) call.end();
      });
    });
    call.on("cancelled", () => finish("cancelled"));
    call.on("error", (error) => finish(`stream error: ${error.message}`));
    call.on("close", () => finish("closed"));
  }

  async #handle(
    session: string,
    message: DraftClientMessage__Output,
    send: (message: DraftServerMessage) => void,
    log: Logger,
  ): Promise<void> {
    let sequenceId = "";
    let round = 0;
    try {
      switch (message.message) {
        case "open": {
          const open = required(message.open, "open");
          sequenceId = checkedId(open.sequence_id);
          let sampling: ReturnType<typeof seededSamplingFromWire>;
          try {
            sampling = seededSamplingFromWire(open.sampling);
          } catch (error) {
            throw new DraftFailure("DRAFT_ERROR_INVALID_ARGUMENT", `open: ${(error as Error).message}`);
          }
          await this.sequences.open(session, { sequenceId, drafter: open.drafter, tokens: open.tokens, sampling });
          return;
        }
        case "propose": {
          const propose = required(message.propose, "propose");
          sequenceId = checkedId(propose.sequence_id);
          round = propose.round;
          const started = performance.now();
          const call = {
            sequenceId,
            round,
            k: propose.k,
            traceContext: propose.trace_context,
            onVerdict: false,
            started,
          };
          let result: ProposalResult | undefined;
          try {
            result = await this.sequences.propose({
              sequenceId,
              round,
              k: propose.k,
              historyLength: propose.history_length,
              kNext: propose.k_next,
              traceContext: propose.trace_context,
              ...(propose.tree && { tree: { width: propose.tree.width, nodes: propose.tree.nodes } }),
            });
          } catch (error) {
            for (const observer of this.#observers) observer(call, asDraftFailure(error));
            throw error;
          }
          // Undefined: drafted on the verdict of the round before, and sent then.
          if (result === undefined) return;
          for (const observer of this.#observers) observer(call, result);
          send({ proposal: this.#proposal(sequenceId, round, result, false) });
          return;
        }
        case "accept": {
          const accept = required(message.accept, "accept");
          sequenceId = checkedId(accept.sequence_id);
          await this.sequences.accept({
            sequenceId,
            round: accept.round,
            accepted: accept.accepted,
            appended: accept.appended,
            path: accept.path,
          });
          return;
        }
        case "close": {
          sequenceId = checkedId(required(message.close, "close").sequence_id);
          await this.sequences.close(sequenceId);
          return;
        }
        default:
          throw new DraftFailure("DRAFT_ERROR_INVALID_ARGUMENT", "message sets none of open, propose, accept, close");
      }
    } catch (error) {
      const failure = asDraftFailure(error);
      if (failure.code === "DRAFT_ERROR_INTERNAL") log.error({ err: error, sequenceId, round }, "draft failed");
      else log.debug({ code: failure.code, sequenceId, round, reason: failure.message }, "draft error");
      send({ error: { sequence_id: sequenceId, round, code: failure.code, message: failure.message } });
    }
  }
}

function required<T>(value: T | null | undefined, field: string): T {
  if (value === null || value === undefined)
    throw new DraftFailure("DRAFT_ERROR_INVALID_ARGUMENT", `${field} is empty`);
  return value;
}

function checkedId(sequenceId: string): string {
  if (sequenceId.length === 0) throw new DraftFailure("DRAFT_ERROR_INVALID_ARGUMENT", "sequence_id must not be empty");
  return sequenceId;
}

export interface DraftServerOptions {
  readonly host: string;
  /** 0: a free port. */
  readonly port: number;
  readonly drafters: ReadonlyMap<string, ServedDrafter>;
  readonly capacityBytes: number;
  readonly logger: Logger;
  readonly events?: SequenceEvents;
  /**
   * Redis on which target replicas publish their verdicts (draft.proto, "Drafting on the verdict"); without it the
   * service drafts on Propose alone.
   */
  readonly redis?: RedisTarget;
  /** Serve TLS from these files (mutual TLS with a client CA); default plaintext. */
  readonly tls?: ServerTlsFiles;
}

export interface RunningDraftServer {
  /** `host:port` as bound. */
  readonly address: string;
  readonly port: number;
  readonly service: DraftService;
  /**
   * Health NOT_SERVING, answers what is running, ends the sessions, stops the server (cancelling what remains after
   * `graceMs`) and closes the drafters' models.
   */
  stop(graceMs: number): Promise<void>;
}

/** Binds the Draft service with health (SERVING once bound) and reflection. */
export async function startDraftServer(options: DraftServerOptions): Promise<RunningDraftServer> {
  const sequences = new DraftSequences(options.drafters, {
    capacityBytes: options.capacityBytes,
    events: options.events,
  });
  const verdicts = options.redis ? await listenForVerdicts(options.redis, options.logger) : undefined;
  const service = new DraftService(sequences, options.logger, () => verdicts?.channel() ?? "");
  verdicts?.onVerdict((verdict) => void service.onVerdict(verdict));
  const server = new grpc.Server();
  server.addService(draftService, service.handlers());
  const health = addStandardServices(server, [SERVICE_NAMES.draft]);
  const port = await bindServer(server, options.host, options.port, options.tls && serverTlsCredentials(options.tls));
  setServing(health, SERVICE_NAMES.draft, true);
  let stopping: Promise<void> | undefined;
  return {
    address: `${options.host}:${port}`,
    port,
    service,
    stop(graceMs) {
      stopping ??= (async () => {
        setServing(health, SERVICE_NAMES.draft, false);
        await withinGrace(service.endSessions(), graceMs);
        await drain(server, graceMs);
        verdicts?.close();
        await Promise.all([...options.drafters.values()].map((d) => d.close()));
      })();
      return stopping;
    },
  };
}
