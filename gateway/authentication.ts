/**
 * Who is calling: with API keys configured, every Gateway call must carry `authorization: Bearer <key>` (gRPC
 * metadata or HTTP header), and the caller's tenant is the key's. A request body naming another tenant is refused
 * (PERMISSION_DENIED) rather than silently relabelled: a client that believes it acts for tenant B must learn that its
 * key says A. Without keys (local default) the tenant is whatever the body says, unverified.
 */
import { type Metadata, status } from "@grpc/grpc-js";
import type { ApiKeys } from "./api-keys.ts";

export type CallIdentity =
  | { readonly ok: true; readonly tenant: string }
  | { readonly ok: false; readonly code: status; readonly message: string };

export function identifyCall(keys: ApiKeys | undefined, metadata: Metadata, bodyTenant: string): CallIdentity {
  return identifyCaller(keys, metadata.get("authorization").map(String), bodyTenant);
}

/** The same for any transport: `values` are the `authorization` metadata values or HTTP headers the call carried. */
export function identifyCaller(keys: ApiKeys | undefined, values: readonly string[], bodyTenant: string): CallIdentity {
  if (keys === undefined) return { ok: true, tenant: bodyTenant };
  if (values.length > 1) {
    return { ok: false, code: status.UNAUTHENTICATED, message: "send one authorization value, not several" };
  }
  const authenticated = keys.authenticate(values[0]);
  if (!authenticated.ok) return { ok: false, code: status.UNAUTHENTICATED, message: authenticated.message };
  if (bodyTenant !== "" && bodyTenant !== authenticated.tenant) {
    return {
      ok: false,
      code: status.PERMISSION_DENIED,
      message: `the request names tenant "${bodyTenant}" but its API key belongs to tenant "${authenticated.tenant}"; leave tenant_id empty or set it to the key's tenant`,
    };
  }
  return { ok: true, tenant: authenticated.tenant };
}
