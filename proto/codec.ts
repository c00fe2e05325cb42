/**
 * Binary encode/decode of specgate.v1 messages outside gRPC (queue payloads, Redis values), with protobufjs on the
 * same .proto files and the same conversion options as the gRPC loader, so a decoded message has exactly the shape
 * of its generated `__Output` type.
 */
import protobuf from "protobufjs";
import { CONVERSION_OPTIONS, PROTO_FILES, protoPath } from "./load.ts";

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => protoPath(target);
root.loadSync(PROTO_FILES, { keepCase: true });

export interface MessageCodec<In, Out> {
  encode(message: In): Uint8Array;
  decode(bytes: Uint8Array): Out;
}

/** Codec of the message `specgate.v1.<name>`; `In`/`Out` are its generated input and `__Output` types. */
export function messageCodec<In extends object, Out>(name: string): MessageCodec<In, Out> {
  const type = root.lookupType(`specgate.v1.${name}`);
  return {
    encode(message) {
      return type.encode(type.fromObject(message)).finish();
    },
    decode(bytes) {
      return type.toObject(type.decode(bytes), CONVERSION_OPTIONS) as Out;
    },
  };
}

/**
 * The value names of the enum `specgate.v1.<name>`. A decoded message holds one of these for every number the schema
 * names, and the bare number for any other (proto3 keeps unknown enum values), so membership tells the two apart.
 */
export function enumNames<Name extends string>(name: string): ReadonlySet<Name> {
  return new Set(Object.keys(root.lookupEnum(`specgate.v1.${name}`).values) as Name[]);
}
