/**
 * The Gateway contract as the SDK loads it: the .proto files npm run gen:proto puts beside the generated types
 * (gen/proto/, shipped in the package), decoded with the options every specgate process uses (proto/load.ts; a
 * contracts test keeps the two equal), so the SDK's messages have the shape its generated types describe.
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "./gen/gateway.ts";

export const LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true } as const;

const packageDefinition = protoLoader.loadSync("specgate/v1/gateway.proto", {
  ...LOADER_OPTIONS,
  includeDirs: [fileURLToPath(new URL("./gen/proto/", import.meta.url))],
});

/** The Gateway client constructor: `new GatewayClient(address, credentials)`. */
export const GatewayClient = (grpc.loadPackageDefinition(packageDefinition) as unknown as ProtoGrpcType).specgate.v1
  .Gateway;
