/**
 * The Target gRPC service: what a queue does not fit. Release frees sequences' KV caches, Stats reports memory and
 * batching counters. The server also serves grpc.health.v1.Health and reflection (services/grpc/server.ts).
 */
import * as grpc from "@grpc/grpc-js";
import type { HealthImplementation } from "grpc-health-check";
import type { TargetHandlers } from "../../gen/specgate/v1/Target.ts";
import type { TargetStats } from "../../gen/specgate/v1/TargetStats.ts";
import { SERVICE_NAMES, targetService } from "../../proto/load.ts";
import { addStandardServices, bindServer } from "../grpc/server.ts";

export interface TargetServiceBackend {
  /** Frees the sequences' caches; returns how many held one and the cache bytes left. */
  release(sequenceIds: readonly string[]): { released: number; cacheBytes: number };
  stats(): TargetStats;
}

export function targetHandlers(backend: TargetServiceBackend): TargetHandlers {
  return {
    Release(call, callback) {
      const ids = call.request.sequence_ids;
      if (ids.some((id) => id.length === 0)) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: "sequence_ids must not contain an empty id" });
        return;
      }
      const { released, cacheBytes } = backend.release(ids);
      callback(null, { released, cache_bytes: cacheBytes });
    },
    Stats(_call, callback) {
      callback(null, backend.stats());
    },
  };
}

export interface TargetServer {
  readonly server: grpc.Server;
  readonly health: HealthImplementation;
  readonly port: number;
}

/** Binds the Target service with health and reflection; health reports NOT_SERVING until `setServing`. */
export async function startTargetServer(
  backend: TargetServiceBackend,
  host: string,
  port: number,
): Promise<TargetServer> {
  const server = new grpc.Server();
  server.addService(targetService, targetHandlers(backend));
  const health = addStandardServices(server, [SERVICE_NAMES.target]);
  const bound = await bindServer(server, host, port);
  return { server, health, port: bound };
}
