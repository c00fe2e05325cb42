/**
 * W3C trace context across process boundaries: gRPC metadata (calls between services) and a plain string record
 * (carried inside a BullMQ verify job or a draft-stream message, where one connection serves many requests).
 * With tracing off the global propagator is the API's no-op: inject writes nothing and extract returns the root.
 * Contexts are always passed explicitly (see start.ts: there is no ambient active context).
 */
import type { Metadata } from "@grpc/grpc-js";
import { type Context, propagation, ROOT_CONTEXT, type TextMapGetter } from "@opentelemetry/api";

/** Trace context as plain strings (`traceparent`, optionally `tracestate` and `baggage`), safe to serialise. */
export type TraceCarrier = Record<string, string>;

const metadataGetter: TextMapGetter<Metadata> = {
  keys: (metadata) => Object.keys(metadata.getMap()),
  get: (metadata, key) => {
    const values = metadata.get(key).filter((value): value is string => typeof value === "string");
    return values.length === 0 ? undefined : values;
  },
};

/** Writes the trace context of `from` (a request or round context) into outgoing call metadata. */
export function injectIntoMetadata(metadata: Metadata, from: Context): Metadata {
  propagation.inject(from, metadata, { set: (carrier, key, value) => carrier.set(key, value) });
  return metadata;
}

export function extractFromMetadata(metadata: Metadata, into: Context = ROOT_CONTEXT): Context {
  return propagation.extract(into, metadata, metadataGetter);
}

/** The trace context of `from` as plain strings, for a queue job or a stream message. */
export function injectIntoCarrier(from: Context): TraceCarrier {
  const carrier: TraceCarrier = {};
  propagation.inject(from, carrier);
  return carrier;
}

export function extractFromCarrier(carrier: TraceCarrier | undefined, into: Context = ROOT_CONTEXT): Context {
  return carrier === undefined ? into : propagation.extract(into, carrier);
}
