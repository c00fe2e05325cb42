/**
 * Request deserializers that never throw. grpc-js answers a request its deserializer rejects with INTERNAL, as if the
 * server had failed; bytes that are not the method's message are the caller's mistake. So a message that does not
 * decode arrives at the handler as a marker holding the decoder's complaint, and validation answers it
 * INVALID_ARGUMENT.
 */
import type * as grpc from "@grpc/grpc-js";

const UNDECODABLE = Symbol("undecodable");

interface Undecodable {
  readonly [UNDECODABLE]: string;
}

/** What is wrong with a request that did not decode as `messageName`, or undefined for one that decoded. */
export function undecodableProblem(request: object, messageName: string): string | undefined {
  const reason = (request as Partial<Undecodable>)[UNDECODABLE];
  return reason === undefined ? undefined : `the message is not a valid ${messageName}: ${reason}`;
}

/** `service` with every method's request deserializer made lenient as above. */
export function withLenientRequests<Service extends grpc.ServiceDefinition>(service: Service): Service {
  const methods = Object.entries(service).map(([name, method]) => {
    const requestDeserialize = (bytes: Buffer): unknown => {
      try {
        return method.requestDeserialize(bytes);
      } catch (error) {
        const marker: Undecodable = { [UNDECODABLE]: error instanceof Error ? error.message : String(error) };
        return marker;
      }
    };
    return [name, { ...method, requestDeserialize }];
  });
  return Object.fromEntries(methods) as Service;
}
