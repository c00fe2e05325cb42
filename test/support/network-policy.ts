/**
 * Ingress reachability under Kubernetes NetworkPolicy semantics (networking.k8s.io/v1): a pod selected by at least one
 * Ingress policy accepts only what some rule of those policies allows; a pod selected by none accepts everything.
 * Used to prove which sources can reach which ports of the rendered manifests.
 */
import type { JsonObject } from "./k8s-patch.ts";
import type { K8sObject } from "./kustomize.ts";

export type Labels = Readonly<Record<string, string>>;

interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: "In" | "NotIn" | "Exists" | "DoesNotExist"; values?: string[] }[];
}

export function selectorMatches(selector: LabelSelector | undefined, labels: Labels): boolean {
  if (selector === undefined) return true;
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[key] !== value) return false;
  }
  for (const { key, operator, values = [] } of selector.matchExpressions ?? []) {
    const has = key in labels;
    const ok =
      operator === "In"
        ? has && values.includes(labels[key])
        : operator === "NotIn"
          ? !has || !values.includes(labels[key])
          : operator === "Exists"
            ? has
            : !has;
    if (!ok) return false;
  }
  return true;
}

/** Where a connection comes from: a pod (namespace + labels) or an address outside the cluster. */
export type Source =
  | { kind: "pod"; namespace: string; namespaceLabels: Labels; podLabels: Labels }
  | { kind: "external" };

/** The pod being reached, with its named container ports for named-port rules. */
export interface Destination {
  namespace: string;
  podLabels: Labels;
  namedPorts: Readonly<Record<string, number>>;
}

interface PolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: { cidr: string; except?: string[] };
}

interface PolicyPort {
  port?: number | string;
  endPort?: number;
  protocol?: string;
}

function peerMatches(peer: PolicyPeer, policyNamespace: string, source: Source): boolean {
  if (peer.ipBlock !== undefined) return source.kind === "external";
  if (source.kind === "external") return false;
  const namespaceOk =
    peer.namespaceSelector === undefined
      ? source.namespace === policyNamespace
      : selectorMatches(peer.namespaceSelector, source.namespaceLabels);
  return namespaceOk && selectorMatches(peer.podSelector, source.podLabels);
}

function portMatches(rulePort: PolicyPort, port: number, destination: Destination): boolean {
  if ((rulePort.protocol ?? "TCP") !== "TCP") return false;
  if (rulePort.port === undefined) return true;
  const start = typeof rulePort.port === "number" ? rulePort.port : destination.namedPorts[rulePort.port];
  if (start === undefined) return false;
  return rulePort.endPort === undefined ? port === start : port >= start && port <= rulePort.endPort;
}

function policyTypes(spec: JsonObject): string[] {
  if (Array.isArray(spec.policyTypes)) return spec.policyTypes as string[];
  return spec.egress === undefined ? ["Ingress"] : ["Ingress", "Egress"];
}

/** True when `source` may open a TCP connection to `port` of the destination pod. */
export function ingressAllowed(
  policies: readonly K8sObject[],
  destination: Destination,
  port: number,
  source: Source,
): boolean {
  const governing = policies.filter((policy) => {
    const spec = policy.spec as JsonObject;
    return (
      policy.kind === "NetworkPolicy" &&
      policy.metadata.namespace === destination.namespace &&
      policyTypes(spec).includes("Ingress") &&
      selectorMatches(spec.podSelector as LabelSelector, destination.podLabels)
    );
  });
  if (governing.length === 0) return true;
  return governing.some((policy) =>
    ((policy.spec as JsonObject).ingress as JsonObject[] | undefined)?.some((rule) => {
      const from = (rule.from ?? []) as PolicyPeer[];
      const ports = (rule.ports ?? []) as PolicyPort[];
      const fromOk =
        from.length === 0 || from.some((peer) => peerMatches(peer, policy.metadata.namespace as string, source));
      const portOk = ports.length === 0 || ports.some((rulePort) => portMatches(rulePort, port, destination));
      return fromOk && portOk;
    }),
  );
}
