/**
 * The draft service's ear on Redis: a subscribed connection on a channel of its own, where target replicas publish
 * the verdicts of the rounds this service drafted (draft.proto, "Drafting on the verdict"). Proposals name the channel
 * only while the subscription stands, so gateways do not route verdicts to a channel nobody hears; a lost connection
 * costs latency alone (the gateway's Accept and Propose still arrive), and ioredis re-subscribes when it is back.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { decodeDraftVerdict, draftVerdictChannel } from "../../proto/verify-queue.ts";
import { onMessage, subscribe as subscribeTo } from "../replica-link/channels.ts";
import { openRedis, type RedisTarget } from "../replica-link/redis-target.ts";
import type { VerdictArgs } from "./sequences.ts";

export interface VerdictListener {
  /** The channel to advertise now: empty while not subscribed. */
  channel(): string;
  onVerdict(handler: (verdict: VerdictArgs) => void): void;
  close(): void;
}

/** Connects and subscribes; resolves once subscribed or given up for now (it tries again on every reconnection). */
export async function listenForVerdicts(redis: RedisTarget, logger: Logger): Promise<VerdictListener> {
  const channel = draftVerdictChannel(randomUUID());
  const subscriber = openRedis(redis, { lazyConnect: true });
  let handler: (verdict: VerdictArgs) => void = () => {};
  // Set once SUBSCRIBE succeeded: ioredis subscribes again by itself after a reconnection.
  let subscribed = false;
  let subscribing: Promise<void> | undefined;
  const subscribe = () => {
    subscribing ??= subscribeTo(subscriber, channel).then(
      () => {
        subscribed = true;
      },
      (error: unknown) => {
        subscribing = undefined;
        logger.warn({ err: error }, "verdict channel: not subscribed; drafting on Propose alone until it is");
      },
    );
    return subscribing;
  };
  subscriber.on("error", (error: Error) => logger.warn({ err: error }, "verdict channel: redis error"));
  subscriber.on("ready", () => void subscribe());
  onMessage(subscriber, (_channel, message) => {
    let verdict: ReturnType<typeof decodeDraftVerdict>;
    try {
      verdict = decodeDraftVerdict(message);
    } catch (error) {
      logger.warn({ err: error }, "verdict channel: not a DraftVerdict");
      return;
    }
    handler({
      sequenceId: verdict.sequence_id,
      round: verdict.round,
      accepted: verdict.accepted,
      nextToken: verdict.next_token,
      path: verdict.path,
    });
  });
  await subscribe();
  return {
    channel: () => (subscribed && subscriber.status === "ready" ? channel : ""),
    onVerdict(next) {
      handler = next;
    },
    close() {
      subscriber.disconnect();
    },
  };
}
