/**
 * The gateway's API keys and TLS in the Kubernetes manifests, checked offline beside test/unit/deploy-manifests.test.ts
 * (which checks every overlay as a whole): the keys file and the certificate files the gateway is told to read are
 * files of the Secrets mounted where it looks, the optional gateway-tls component turns TLS on with probes that speak
 * it, and the gateway's own configuration accepts the result.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { after, describe, it } from "node:test";
import { gatewayTlsFiles, loadGatewayConfig } from "../../gateway/config.ts";
import { envNamesRead, ROOT } from "../support/entry-points.ts";
import { unknownFields } from "../support/k8s-fields.ts";
import type { JsonObject } from "../support/k8s-patch.ts";
import { buildKustomization, type K8sObject, objectId, podSpecs } from "../support/kustomize.ts";

function gatewayOf(objects: readonly K8sObject[]): {
  pod: JsonObject;
  container: JsonObject;
  env: Record<string, string>;
} {
  const deployment = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "specgate-gateway");
  assert.ok(deployment, "the gateway Deployment");
  const pod = podSpecs(deployment)[0];
  const container = (pod.containers as JsonObject[]).find((c) => c.name === "gateway");
  assert.ok(container, "the gateway container");
  const env: Record<string, string> = {};
  for (const variable of (container.env ?? []) as JsonObject[]) {
    if (typeof variable.value === "string") env[variable.name as string] = variable.value;
  }
  return { pod, container, env };
}

/** The Secret and key a file path in the container comes from, through its volume mounts. */
function secretFileAt(pod: JsonObject, container: JsonObject, path: string): { secret: string; key: string } {
  const mount = ((container.volumeMounts ?? []) as JsonObject[]).find((m) =>
    path.startsWith(`${String(m.mountPath).replace(/\/$/, "")}/`),
  );
  assert.ok(mount, `${path} is under a volume mount`);
  assert.equal(mount.readOnly, true, `${path}: mounted read-only`);
  const volume = ((pod.volumes ?? []) as JsonObject[]).find((v) => v.name === mount.name);
  const secret = volume?.secret as JsonObject | undefined;
  assert.ok(secret, `${path}: volume ${mount.name} is a Secret`);
  const file = posix.relative(String(mount.mountPath), path);
  const items = secret.items as JsonObject[] | undefined;
  const key = items ? (items.find((item) => item.path === file)?.key as string | undefined) : file;
  assert.ok(key, `${path}: the Secret ${secret.secretName} projects a key to ${file}`);
  assert.notEqual(secret.optional, true, `${path}: a missing Secret must stop the pod, not start it open`);
  return { secret: secret.secretName as string, key };
}

describe("gateway security in the Kubernetes manifests", () => {
  for (const overlay of ["cpu", "gpu"]) {
    it(`overlay ${overlay}: every Gateway call needs a key from the specgate-api-keys Secret; tenants are capped`, () => {
      const { pod, container, env } = gatewayOf(buildKustomization(join(ROOT, "k8s", "overlays", overlay)));
      const config = loadGatewayConfig([], env);
      assert.ok(config?.apiKeysFile, "SPECGATE_API_KEYS_FILE is set");
      assert.deepEqual(secretFileAt(pod, container, config.apiKeysFile), {
        secret: "specgate-api-keys",
        key: "api-keys",
      });
      assert.ok(config.maxInFlightPerTenant > 0 && config.maxInFlightPerTenant < config.maxInFlight);
      assert.equal(gatewayTlsFiles(config), undefined, "plaintext behind the Ingress by default");
    });
  }

  describe("with the gateway-tls component", () => {
    const dir = mkdtempSync(join(tmpdir(), "specgate-kustomize-"));
    after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(
      join(dir, "kustomization.yaml"),
      [
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        `resources: [${join(ROOT, "k8s", "overlays", "cpu")}]`,
        `components: [${join(ROOT, "k8s", "components", "gateway-tls")}]`,
        "",
      ].join("\n"),
    );
    const objects = buildKustomization(dir);
    const { pod, container, env } = gatewayOf(objects);

    it("reads its certificate and key from the specgate-gateway-tls Secret (kubernetes.io/tls keys)", () => {
      const config = loadGatewayConfig([], env);
      assert.ok(config);
      const tls = gatewayTlsFiles(config);
      assert.ok(tls, "TLS is on");
      assert.deepEqual(secretFileAt(pod, container, tls.certFile), { secret: "specgate-gateway-tls", key: "tls.crt" });
      assert.deepEqual(secretFileAt(pod, container, tls.keyFile), { secret: "specgate-gateway-tls", key: "tls.key" });
      const read = envNamesRead("gateway/main.ts");
      for (const name of Object.keys(env)) assert.ok(read.has(name), `${name} is read by the gateway`);
    });

    it("probes over TLS with deploy/healthcheck.ts at the gateway's port, no plaintext gRPC probe left", () => {
      const config = loadGatewayConfig([], env);
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const probe = container[kind] as JsonObject;
        assert.equal(probe.grpc, undefined, `${kind}: kubelet's gRPC probe speaks plaintext only`);
        assert.deepEqual((probe.exec as JsonObject).command, [
          "node",
          "--import",
          "tsx",
          "deploy/healthcheck.ts",
          `127.0.0.1:${config?.port}`,
        ]);
      }
    });

    it("leaves every object valid and no longer calls the Service port cleartext HTTP/2", () => {
      for (const object of objects.filter((o) => o.metadata.name === "specgate-gateway")) {
        assert.deepEqual(unknownFields(object), [], objectId(object));
      }
      const service = objects.find((o) => o.kind === "Service" && o.metadata.name === "specgate-gateway");
      assert.ok(service, "the gateway Service");
      const ports = (service.spec as JsonObject).ports as JsonObject[];
      assert.equal(ports.length, 2, "gRPC and the HTTP API");
      assert.deepEqual(
        ports.map((p) => p.appProtocol),
        [undefined, undefined],
      );
    });
  });
});
