/**
 * The one place that loads the specgate.v1 contracts. Everyone imports service constructors and definitions from
 * here, so the loader options (and therefore the shape of every decoded message) are the same in every process:
 * field names as written in the .proto (snake_case, the same names the engine's statistics, the JSON output and
 * telemetry use), 64-bit integers as numbers, enums as their names, defaults filled in, oneofs as virtual
 * fields naming the set member. The generated types in gen/ (npm run gen:proto) use the same options.
 */
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as DraftProto } from "../gen/draft.ts";
import type { ProtoGrpcType as GatewayProto } from "../gen/gateway.ts";
import type { ProtoGrpcType as TargetProto } from "../gen/target.ts";

/** Root of the .proto include path (imports are written `specgate/v1/x.proto`). */
export const PROTO_ROOT = import.meta.dirname;

export const PROTO_FILES = [
  "specgate/v1/common.proto",
  "specgate/v1/gateway.proto",
  "specgate/v1/draft.proto",
  "specgate/v1/target.proto",
];

/** Options shared by proto-loader here and by the protobufjs codec (proto/codec.ts). */
export const CONVERSION_OPTIONS = { longs: Number, enums: String, defaults: true, oneofs: true } as const;

export const packageDefinition = protoLoader.loadSync(PROTO_FILES, {
  ...CONVERSION_OPTIONS,
  keepCase: true,
  includeDirs: [PROTO_ROOT],
});

type SpecgateV1 = GatewayProto["specgate"]["v1"] & DraftProto["specgate"]["v1"] & TargetProto["specgate"]["v1"];

const v1 = (grpc.loadPackageDefinition(packageDefinition) as unknown as { specgate: { v1: SpecgateV1 } }).specgate.v1;

/** Client constructors: `new GatewayClient(address, credentials)`. */
export const GatewayClient = v1.Gateway;
export const DraftClient = v1.Draft;
export const TargetClient = v1.Target;

/** Service definitions for `server.addService(...)`. */
export const gatewayService = v1.Gateway.service;
export const draftService = v1.Draft.service;
export const targetService = v1.Target.service;

/** Fully qualified service names (health-check keys, reflection). */
export const SERVICE_NAMES = {
  gateway: "specgate.v1.Gateway",
  draft: "specgate.v1.Draft",
  target: "specgate.v1.Target",
} as const;

/** Path of a .proto file under PROTO_ROOT. */
export function protoPath(file: string): string {
  return join(PROTO_ROOT, file);
}
