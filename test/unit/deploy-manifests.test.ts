/**
 * Static validation of deploy/ and k8s/. Docker, compose and Kubernetes cannot run here, so what a container engine
 * or an API server would check (schemas, references, selectors, ports) is checked offline, and so is what only the
 * services know: every environment variable is a setting the started script reads, every value passes the service's
 * own config schema, and ports, drains, threads and cache caps agree with the manifests around them.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, it } from "node:test";
import { type Copy, execForm, inherited, parseCopy, parseStages, type Stage } from "../support/dockerfile.ts";
import { entryScript, envNamesRead, ROOT, runtimeImports, serviceConfig } from "../support/entry-points.ts";
import { unknownFields } from "../support/k8s-fields.ts";
import { applyJsonPatch, isObject, type Json, type JsonObject, strategicMerge } from "../support/k8s-patch.ts";
import { buildKustomization, type K8sObject, objectId, podSpecs, readYamlDocuments } from "../support/kustomize.ts";
import { ingressAllowed, type Source, selectorMatches } from "../support/network-policy.ts";

const DOCKERFILE = join(ROOT, "deploy", "Dockerfile");
const COMPOSE = join(ROOT, "deploy", "compose.yaml");
const OVERLAYS = ["cpu", "gpu"] as const;
const PACKAGE = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

const stages = parseStages(readFileSync(DOCKERFILE, "utf8"));
const builds = new Map(
  OVERLAYS.map((overlay) => [overlay, buildKustomization(join(ROOT, "k8s", "overlays", overlay))]),
);

// ---------------------------------------------------------------------------------------------------------------
// Image facts

function stage(name: string): Stage {
  const found = stages.find((candidate) => candidate.name === name);
  assert.ok(found, `Dockerfile has no stage ${name}`);
  return found;
}

/** The Dockerfile stage an image reference was built from: specgate-models → models, a *cuda tag → runtime-cuda. */
function imageStage(image: string): string | undefined {
  const [name, tag = ""] = image.split("/").at(-1)?.split(":") ?? [];
  if (name === "specgate-models") return "models";
  if (name === "specgate") return tag.endsWith("cuda") ? "runtime-cuda" : "runtime";
  return undefined;
}

function imageArgv(stageName: string, command: string[] | undefined, args: string[] | undefined): string[] {
  const entrypoint = inherited(stages, stageName, "ENTRYPOINT");
  const cmd = inherited(stages, stageName, "CMD");
  const head = command ?? (entrypoint ? execForm(entrypoint) : []);
  const tail = args ?? (command === undefined && cmd ? execForm(cmd) : []);
  return [...head, ...tail];
}

/** Paths (relative to the root) the final image holds: the COPY sources of the stages it is assembled from. */
function copiedPaths(stageName: string, seen = new Set<string>()): string[] {
  if (seen.has(stageName)) return [];
  seen.add(stageName);
  const own = stage(stageName);
  const copies = own.instructions.filter((i) => i.keyword === "COPY").map(parseCopy);
  const paths = copies.filter((copy) => copy.from === undefined).flatMap((copy) => copy.sources);
  const fromStages = copies.flatMap((copy) => (copy.from ? [copy.from] : []));
  const parent = stages.some((candidate) => candidate.name === own.base) ? [own.base] : [];
  return [...paths, ...[...fromStages, ...parent].flatMap((name) => copiedPaths(name, seen))];
}

function imageHolds(stageName: string, file: string): boolean {
  return copiedPaths(stageName).some((path) => file === path || file.startsWith(`${path.replace(/\/$/, "")}/`));
}

/** Models the `models` stage builds into the seeding image (its models-cli `--only` list). */
function seededModels(): Set<string> {
  const run = stage("models").instructions.find((i) => i.keyword === "RUN" && i.args.includes("models-cli.ts"));
  assert.ok(run, "the models stage runs services/model-builder/models-cli.ts");
  return new Set([...run.args.matchAll(/--only\s+(\S+)/g)].map((match) => match[1]));
}

// ---------------------------------------------------------------------------------------------------------------
// Running one container: the script, its environment, its configuration

interface RunningContainer {
  /** Where it is declared, for messages. */
  where: string;
  stage: string;
  argv: string[];
  env: Record<string, string>;
}

/** What a service container must agree with: the resolved config and the facts around it. */
interface ServiceFacts {
  entry: string;
  config: Record<string, unknown>;
}

async function startFacts(container: RunningContainer): Promise<ServiceFacts | undefined> {
  const entry = entryScript(container.argv);
  if (entry === undefined) return undefined;
  const argv = container.argv.slice(container.argv.indexOf(entry) + 1);
  const config = await serviceConfig(entry, argv, container.env);
  return config === undefined ? undefined : { entry, config };
}

function checkScript(container: RunningContainer): void {
  const entry = entryScript(container.argv);
  if (container.argv[0] !== "node") {
    assert.ok(["cp", "redis-server"].includes(container.argv[0]), `${container.where}: runs ${container.argv[0]}`);
    return;
  }
  assert.deepEqual(container.argv.slice(0, 3), ["node", "--import", "tsx"], `${container.where}: node --import tsx`);
  assert.ok(entry && existsSync(join(ROOT, entry)), `${container.where}: script ${entry} exists in the repository`);
  assert.ok(imageHolds(container.stage, entry), `${container.where}: ${entry} is copied into the image`);
}

function checkEnvNames(container: RunningContainer): void {
  const entry = entryScript(container.argv);
  if (entry === undefined) return;
  const known = envNamesRead(entry);
  for (const name of Object.keys(container.env)) {
    assert.ok(known.has(name), `${container.where}: ${name} is not read by ${entry} or anything it loads`);
  }
}

/** Every container in every deployment file, with the image stage and fully resolved environment. */
interface Deployment {
  name: string;
  containers: RunningContainer[];
}

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes helpers

const workloadKinds = new Set(["Deployment", "StatefulSet", "DaemonSet", "Job"]);

function workloads(objects: readonly K8sObject[]): K8sObject[] {
  return objects.filter((object) => workloadKinds.has(object.kind));
}

function templateLabels(workload: K8sObject): Record<string, string> {
  const template = (workload.spec as JsonObject).template as JsonObject;
  return ((template.metadata as JsonObject)?.labels ?? {}) as Record<string, string>;
}

function find(objects: readonly K8sObject[], kind: string, name: string): K8sObject | undefined {
  return objects.find((object) => object.kind === kind && object.metadata.name === name);
}

function containersOf(pod: JsonObject): JsonObject[] {
  return [...((pod.initContainers ?? []) as JsonObject[]), ...((pod.containers ?? []) as JsonObject[])];
}

function containerPorts(pod: JsonObject): { name?: string; containerPort: number }[] {
  return ((pod.containers ?? []) as JsonObject[]).flatMap(
    (container) => (container.ports ?? []) as { name?: string; containerPort: number }[],
  );
}

function portNumber(pod: JsonObject, port: Json | undefined): number | undefined {
  const ports = containerPorts(pod);
  if (typeof port === "number") return ports.some((p) => p.containerPort === port) ? port : undefined;
  return ports.find((p) => p.name === port)?.containerPort;
}

const QUANTITY_SUFFIX: Record<string, number> = {
  "": 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

function quantity(value: Json | undefined): number {
  const match = /^(\d+(?:\.\d+)?)([a-zA-Z]*)$/.exec(String(value));
  assert.ok(match && match[2] in QUANTITY_SUFFIX, `quantity ${value}`);
  return Number(match[1]) * QUANTITY_SUFFIX[match[2]];
}

/** Stand-ins for values the kubelet fills in, per fieldRef path. */
function fieldRefValue(workload: K8sObject, fieldPath: string): string {
  if (fieldPath === "status.podIP") return "10.0.0.7";
  if (fieldPath === "metadata.name") return `${workload.metadata.name}-0`;
  if (fieldPath === "metadata.labels['apps.kubernetes.io/pod-index']") {
    assert.equal(workload.kind, "StatefulSet", `${objectId(workload)}: pod-index exists on StatefulSet pods only`);
    return "0";
  }
  assert.fail(`${objectId(workload)}: no stand-in for fieldRef ${fieldPath}`);
}

function keyRefValue(objects: readonly K8sObject[], kind: "ConfigMap" | "Secret", ref: JsonObject): string | undefined {
  const source = find(objects, kind, ref.name as string);
  const key = ref.key as string;
  let value: string | undefined;
  if (source !== undefined) {
    const data = (source.data ?? {}) as Record<string, string>;
    const stringData = (source.stringData ?? {}) as Record<string, string>;
    value =
      stringData[key] ?? (kind === "Secret" && key in data ? Buffer.from(data[key], "base64").toString() : data[key]);
  }
  if (value === undefined) assert.equal(ref.optional, true, `${kind} ${ref.name} has no key ${key}`);
  return value;
}

function k8sContainers(objects: readonly K8sObject[], overlay: string): RunningContainer[] {
  const running: RunningContainer[] = [];
  for (const workload of workloads(objects)) {
    for (const pod of podSpecs(workload)) {
      for (const container of containersOf(pod)) {
        const where = `${overlay} ${objectId(workload)} ${container.name}`;
        const stageName = imageStage(container.image as string);
        if (stageName === undefined) continue;
        const env: Record<string, string> = {};
        for (const variable of (container.env ?? []) as JsonObject[]) {
          const name = variable.name as string;
          assert.ok(!(name in env), `${where}: ${name} set twice`);
          const from = variable.valueFrom as JsonObject | undefined;
          let value: string | undefined;
          if (from === undefined) value = String(variable.value ?? "");
          else if (isObject(from.fieldRef)) value = fieldRefValue(workload, from.fieldRef.fieldPath as string);
          else if (isObject(from.configMapKeyRef)) value = keyRefValue(objects, "ConfigMap", from.configMapKeyRef);
          else if (isObject(from.secretKeyRef)) value = keyRefValue(objects, "Secret", from.secretKeyRef);
          else assert.fail(`${where}: ${name} has an unsupported valueFrom`);
          if (value !== undefined) env[name] = value;
        }
        assert.equal(container.envFrom, undefined, `${where}: envFrom would hide which variables a container gets`);
        const argv = imageArgv(
          stageName,
          container.command as string[] | undefined,
          container.args as string[] | undefined,
        );
        running.push({ where, stage: stageName, argv, env });
      }
    }
  }
  return running;
}

function k8sContainerFor(objects: readonly K8sObject[], overlay: string, workload: K8sObject, name: string) {
  return k8sContainers(objects, overlay).find((c) => c.where === `${overlay} ${objectId(workload)} ${name}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Compose helpers

interface ComposeService extends JsonObject {}

/** `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$`, with every variable unset: the defaults a fresh shell gets. */
function interpolate(value: Json): Json {
  if (typeof value === "string") {
    return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (match, _name, fallback) =>
      match === "$$" ? "$" : (fallback ?? ""),
    );
  }
  if (Array.isArray(value)) return value.map(interpolate);
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, interpolate(item)]));
  return value;
}

const compose = interpolate(readYamlDocuments(COMPOSE)[0]) as JsonObject;
const composeServices = compose.services as Record<string, ComposeService>;

function composeStage(service: ComposeService): string | undefined {
  if (isObject(service.build)) return (service.build.target as string | undefined) ?? stages.at(-1)?.name;
  return typeof service.image === "string" ? imageStage(service.image) : undefined;
}

function composeEnv(service: ComposeService): Record<string, string> {
  const environment = service.environment ?? {};
  assert.ok(isObject(environment), "compose environment is written as a mapping");
  return Object.fromEntries(Object.entries(environment).map(([key, value]) => [key, String(value)]));
}

function composeContainers(): RunningContainer[] {
  return Object.entries(composeServices).flatMap(([name, service]) => {
    const stageName = composeStage(service);
    if (stageName === undefined) return [];
    const argv = imageArgv(
      stageName,
      service.entrypoint as string[] | undefined,
      service.command as string[] | undefined,
    );
    return [{ where: `compose ${name}`, stage: stageName, argv, env: composeEnv(service) }];
  });
}

function healthcheckPort(service: ComposeService): number | undefined {
  const test = (service.healthcheck as JsonObject | undefined)?.test as string[] | undefined;
  const address = test?.find((word) => /^[\w.-]+:\d+$/.test(word));
  return address === undefined ? undefined : Number(address.split(":")[1]);
}

function allDeployments(): Deployment[] {
  return [
    ...OVERLAYS.map((overlay) => ({
      name: `k8s/overlays/${overlay}`,
      containers: k8sContainers(builds.get(overlay) ?? [], overlay),
    })),
    { name: "deploy/compose.yaml", containers: composeContainers() },
  ];
}

// ---------------------------------------------------------------------------------------------------------------

describe("patch and kustomize subset", () => {
  it("merges containers and env by name, replaces tolerations, deletes nulls", () => {
    const original: JsonObject = {
      spec: {
        containers: [
          { name: "a", image: "x", env: [{ name: "A", value: "1" }] },
          { name: "b", image: "y" },
        ],
        tolerations: [{ key: "k1" }],
        nodeSelector: { zone: "z" },
      },
    };
    const merged = strategicMerge(original, {
      spec: {
        containers: [{ name: "a", env: [{ name: "B", value: "2" }] }],
        tolerations: [{ key: "k2" }],
        nodeSelector: null,
      },
    });
    assert.deepEqual(merged, {
      spec: {
        containers: [
          {
            name: "a",
            image: "x",
            env: [
              { name: "A", value: "1" },
              { name: "B", value: "2" },
            ],
          },
          { name: "b", image: "y" },
        ],
        tolerations: [{ key: "k2" }],
      },
    });
    assert.throws(() => strategicMerge({ hostAliases: [] }, { hostAliases: [{ ip: "1" }] }), /not implemented/);
  });

  it("applies JSON patches and fails on a failed test or a missing parent", () => {
    const document = { a: { list: [1, 2] }, "x/y": 1 };
    assert.deepEqual(
      applyJsonPatch(document, [
        { op: "test", path: "/a/list/0", value: 1 },
        { op: "add", path: "/a/list/-", value: 3 },
        { op: "replace", path: "/x~1y", value: 2 },
        { op: "remove", path: "/a/list/0" },
      ]),
      { a: { list: [2, 3] }, "x/y": 2 },
    );
    assert.throws(() => applyJsonPatch(document, [{ op: "test", path: "/a/list/0", value: 2 }]), /test failed/);
    assert.throws(() => applyJsonPatch(document, [{ op: "add", path: "/b/c", value: 1 }]), /no member "b"/);
  });

  it("denies ingress to selected pods except what a rule admits", () => {
    const policy = (spec: JsonObject) =>
      ({
        apiVersion: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        metadata: { name: "p", namespace: "n" },
        spec,
      }) as K8sObject;
    const destination = { namespace: "n", podLabels: { app: "x" }, namedPorts: { web: 80 } };
    const friend: Source = { kind: "pod", namespace: "n", namespaceLabels: {}, podLabels: { role: "friend" } };
    const stranger: Source = { kind: "pod", namespace: "n", namespaceLabels: {}, podLabels: {} };
    assert.ok(ingressAllowed([], destination, 80, stranger));
    const policies = [
      policy({ podSelector: {}, policyTypes: ["Ingress"] }),
      policy({
        podSelector: { matchLabels: { app: "x" } },
        ingress: [{ from: [{ podSelector: { matchLabels: { role: "friend" } } }], ports: [{ port: "web" }] }],
      }),
    ];
    assert.ok(ingressAllowed(policies, destination, 80, friend));
    assert.ok(!ingressAllowed(policies, destination, 81, friend));
    assert.ok(!ingressAllowed(policies, destination, 80, stranger));
    assert.ok(!ingressAllowed(policies, destination, 80, { kind: "external" }));
  });
});

describe("Dockerfile", () => {
  const ignored = readFileSync(join(ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));

  it("copies only sources that exist and are not excluded from the build context", () => {
    for (const current of stages) {
      for (const instruction of current.instructions.filter((i) => i.keyword === "COPY")) {
        const copy: Copy = parseCopy(instruction);
        if (copy.from !== undefined) {
          const earlier = stages.slice(0, stages.indexOf(current)).some((s) => s.name === copy.from);
          assert.ok(earlier, `line ${instruction.line}: --from=${copy.from} is no earlier stage`);
          continue;
        }
        for (const source of copy.sources) {
          assert.ok(existsSync(join(ROOT, source)), `line ${instruction.line}: ${source} does not exist`);
          for (const pattern of ignored) {
            const top = source.replace(/^\.\//, "").split("/")[0];
            assert.notEqual(pattern, top, `line ${instruction.line}: ${source} is excluded by .dockerignore`);
          }
        }
      }
    }
  });

  it("runs as a numeric non-root user, through tsx, with a health check script that exists", () => {
    for (const name of ["runtime", "runtime-cuda"]) {
      const user = inherited(stages, name, "USER");
      assert.match(user?.args ?? "", /^[1-9]\d*:[1-9]\d*$/, `${name}: USER uid:gid, not root`);
      assert.deepEqual(execForm(inherited(stages, name, "ENTRYPOINT") ?? assert.fail()), ["node", "--import", "tsx"]);
      const cmd = execForm(inherited(stages, name, "CMD") ?? assert.fail());
      assert.ok(existsSync(join(ROOT, cmd[0])), `${name}: CMD ${cmd[0]} exists`);
      const health = execForm(inherited(stages, name, "HEALTHCHECK") ?? assert.fail(`${name}: HEALTHCHECK`));
      const script = entryScript(health);
      assert.ok(script && existsSync(join(ROOT, script)) && imageHolds(name, script), `${name}: ${script}`);
    }
  });

  it("installs tsx with the production dependencies when it is a dev dependency", () => {
    if ("tsx" in PACKAGE.dependencies) return;
    const install = stage("deps").instructions.find((i) => i.keyword === "RUN" && i.args.includes("npm ci"));
    assert.match(install?.args ?? "", /--omit=dev/);
    assert.match(install?.args ?? "", /tsx@/);
  });

  it("holds every file and production package each script it runs loads", () => {
    const scripts = new Map<string, string>();
    for (const deployment of allDeployments()) {
      for (const container of deployment.containers) {
        const entry = entryScript(container.argv);
        if (entry !== undefined) scripts.set(`${container.stage} ${entry}`, container.where);
      }
    }
    for (const name of ["runtime", "runtime-cuda"]) {
      for (const instruction of ["CMD", "HEALTHCHECK"]) {
        const argv = execForm(inherited(stages, name, instruction) ?? assert.fail());
        const entry = entryScript(argv[0] === "node" ? argv : ["node", "--import", "tsx", ...argv]);
        scripts.set(`${name} ${entry}`, `Dockerfile ${name} ${instruction}`);
      }
    }
    assert.ok(scripts.size >= 5, `found the scripts: ${[...scripts.keys()].join(", ")}`);
    for (const [key, where] of scripts) {
      const [stageName, entry] = key.split(" ");
      const { files, packages } = runtimeImports(entry);
      for (const file of files) assert.ok(imageHolds(stageName, file), `${where}: ${entry} loads ${file}, not copied`);
      for (const name of packages) {
        assert.ok(name in PACKAGE.dependencies, `${where}: ${entry} loads ${name}, not a production dependency`);
      }
    }
  });

  it("builds every model the deployments name into the seeding image", async () => {
    const seeded = seededModels();
    // The gpu overlay reads models from a volume filled out of band; the cpu overlay and compose seed this image's.
    const containers = [...k8sContainers(builds.get("cpu") ?? [], "cpu"), ...composeContainers()];
    for (const container of containers) {
      const facts = await startFacts(container);
      if (facts === undefined) continue;
      const drafters = facts.config.drafters;
      const models = [
        facts.config.model,
        ...(typeof drafters === "string"
          ? drafters.split(",").map((entry) => entry.split("=")[1])
          : ((drafters ?? []) as { model?: string }[]).map((drafter) => drafter.model)),
      ];
      for (const model of models.filter((m): m is string => typeof m === "string" && m !== "ngram")) {
        assert.ok(seeded.has(model), `${container.where}: model ${model} is not built by the models stage`);
      }
    }
  });
});

describe("every deployment", () => {
  for (const deployment of allDeployments()) {
    describe(deployment.name, () => {
      it("runs scripts that exist in the image, through tsx", () => {
        assert.ok(deployment.containers.length >= 3, "gateway, draft and target containers found");
        for (const container of deployment.containers) checkScript(container);
      });

      it("sets only environment variables the code it runs reads", () => {
        for (const container of deployment.containers) checkEnvNames(container);
      });

      it("gives each service a configuration its own schema accepts, listening on every interface", async () => {
        for (const container of deployment.containers) {
          const facts = await startFacts(container);
          if (facts === undefined) continue;
          assert.equal(facts.config.host, "0.0.0.0", `${container.where}: other containers must reach it`);
        }
      });

      it("agrees between gateway and draft service on the drafters, and with the target on the model", async () => {
        const configs = new Map<string, Record<string, unknown>[]>();
        for (const container of deployment.containers) {
          const facts = await startFacts(container);
          if (facts !== undefined) configs.set(facts.entry, [...(configs.get(facts.entry) ?? []), facts.config]);
        }
        const gateway = configs.get("gateway/main.ts")?.[0];
        const draft = configs.get("services/draft/main.ts")?.[0];
        const targets = configs.get("services/target/main.ts") ?? [];
        assert.ok(gateway && draft && targets.length > 0, "gateway, draft and target are all deployed");
        assert.deepEqual(gateway.drafters, draft.drafters, "gateway and draft service list the same drafters");
        for (const target of targets) assert.equal(target.model, gateway.model, "one target model");
        const replicaIds = targets.map((target) => target.replicaId);
        assert.equal(new Set(replicaIds).size, replicaIds.length, "target replica ids are distinct");
      });
    });
  }
});

describe("Kubernetes manifests", () => {
  it("parse, every file of them", () => {
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        if (entry.isDirectory()) walk(join(dir, entry.name));
        else if (/\.ya?ml$/.test(entry.name)) files.push(join(dir, entry.name));
      }
    };
    walk(join(ROOT, "k8s"));
    assert.ok(files.length >= 10);
    for (const file of files) assert.doesNotThrow(() => readYamlDocuments(file), relative(ROOT, file));
  });

  for (const overlay of OVERLAYS) {
    describe(`overlay ${overlay}`, () => {
      const objects = builds.get(overlay) ?? [];

      it("validates every object against its Kubernetes schema, with no unknown field", async () => {
        assert.ok(objects.length >= 15);
        for (const object of objects) {
          const group = object.apiVersion.includes("/") ? object.apiVersion : "v1";
          const module = (await import(`kubernetes-models/${group}/${object.kind}`)) as Record<
            string,
            new (
              data: unknown,
            ) => { validate(): void }
          >;
          const Model = module[object.kind];
          assert.ok(Model, `${objectId(object)}: no model for ${object.apiVersion} ${object.kind}`);
          assert.doesNotThrow(() => new Model(object).validate(), objectId(object));
          assert.deepEqual(unknownFields(object), [], objectId(object));
        }
      });

      it("puts everything in the specgate namespace", () => {
        assert.ok(find(objects, "Namespace", "specgate"));
        for (const object of objects.filter((o) => o.kind !== "Namespace")) {
          assert.equal(object.metadata.namespace, "specgate", objectId(object));
        }
      });

      it("selects each workload's own pods, and nothing else", () => {
        const all = workloads(objects);
        for (const workload of all) {
          const selector = (workload.spec as JsonObject).selector as JsonObject;
          assert.ok(selectorMatches(selector, templateLabels(workload)), `${objectId(workload)}: selector`);
          const others = all.filter((other) => other !== workload && selectorMatches(selector, templateLabels(other)));
          assert.deepEqual(others.map(objectId), [], `${objectId(workload)}: selector also matches`);
        }
      });

      it("routes every Service port to a port of the one workload it selects", () => {
        for (const service of objects.filter((o) => o.kind === "Service")) {
          const spec = service.spec as JsonObject;
          const selected = workloads(objects).filter((w) =>
            selectorMatches({ matchLabels: spec.selector as Record<string, string> }, templateLabels(w)),
          );
          assert.equal(selected.length, 1, `${objectId(service)} selects ${selected.map(objectId)}`);
          const pod = podSpecs(selected[0])[0];
          for (const port of spec.ports as JsonObject[]) {
            assert.ok(portNumber(pod, port.targetPort ?? port.port), `${objectId(service)} port ${port.name}`);
          }
        }
        for (const statefulSet of objects.filter((o) => o.kind === "StatefulSet")) {
          const governing = find(objects, "Service", (statefulSet.spec as JsonObject).serviceName as string);
          assert.equal((governing?.spec as JsonObject | undefined)?.clusterIP, "None", `${objectId(statefulSet)}`);
        }
      });

      it("points probes at container ports, and the service's own gRPC port at gRPC probes", async () => {
        for (const workload of workloads(objects)) {
          const pod = podSpecs(workload)[0];
          for (const container of (pod.containers ?? []) as JsonObject[]) {
            for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
              const probe = container[kind] as JsonObject | undefined;
              if (probe === undefined) continue;
              const action = (probe.grpc ?? probe.tcpSocket ?? probe.httpGet) as JsonObject | undefined;
              if (action !== undefined) {
                assert.ok(portNumber(pod, action.port), `${objectId(workload)} ${kind} port ${action.port}`);
              }
            }
            const running = k8sContainerFor(objects, overlay, workload, container.name as string);
            const facts = running && (await startFacts(running));
            if (facts === undefined) continue;
            assert.equal(portNumber(pod, "grpc"), facts.config.port, `${objectId(workload)}: grpc port = config port`);
            for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
              const grpc = (container[kind] as JsonObject | undefined)?.grpc as JsonObject | undefined;
              assert.equal(
                grpc?.port,
                facts.config.port,
                `${objectId(workload)}: ${kind} is a gRPC probe of the server`,
              );
            }
          }
        }
      });

      it("exposes and annotates each service's metrics port, the one its telemetry opens", async () => {
        const { defaultMetricsPort } = await import("../../services/telemetry/metrics-endpoint.ts");
        const roles: Record<string, "gateway" | "draft" | "target"> = {
          "gateway/main.ts": "gateway",
          "services/draft/main.ts": "draft",
          "services/target/main.ts": "target",
        };
        for (const workload of workloads(objects)) {
          const pod = podSpecs(workload)[0];
          for (const container of (pod.containers ?? []) as JsonObject[]) {
            const running = k8sContainerFor(objects, overlay, workload, container.name as string);
            const facts = running && (await startFacts(running));
            if (facts === undefined) continue;
            const replicas = workload.kind === "StatefulSet" ? ((workload.spec as JsonObject).replicas as number) : 1;
            const annotations = ((workload.spec as JsonObject).template as JsonObject).metadata as JsonObject;
            const port = portNumber(pod, "metrics");
            assert.equal(String(port), (annotations.annotations as Record<string, string>)["prometheus.io/port"]);
            for (let replica = 0; replica < replicas; replica++) {
              const opened: number =
                (facts.config.metricsPort as number | undefined) ?? defaultMetricsPort(roles[facts.entry], replica);
              assert.equal(port, opened, `${objectId(workload)} pod ${replica}: metrics port`);
            }
          }
        }
      });

      it("gives every pod time to drain, threads within its CPU limit, a cache cap within its memory", async () => {
        for (const workload of workloads(objects)) {
          const pod = podSpecs(workload)[0];
          for (const container of (pod.containers ?? []) as JsonObject[]) {
            const running = k8sContainerFor(objects, overlay, workload, container.name as string);
            const facts = running && (await startFacts(running));
            if (facts === undefined) continue;
            const where = objectId(workload);
            const preStop = (((container.lifecycle as JsonObject)?.preStop as JsonObject)?.sleep as JsonObject)
              ?.seconds;
            const grace = pod.terminationGracePeriodSeconds as number;
            const drainMs = facts.config.drainMs as number;
            assert.ok(grace * 1000 > Number(preStop ?? 0) * 1000 + drainMs, `${where}: grace ${grace}s vs drain`);
            const limits = (container.resources as JsonObject).limits as JsonObject;
            if (facts.config.executionProvider === "cpu") {
              const threads = facts.config.intraOpThreads as number;
              assert.ok(threads >= 1 && threads <= quantity(limits.cpu), `${where}: ${threads} threads`);
            }
            if (facts.config.cacheBytes !== undefined) {
              assert.ok((facts.config.cacheBytes as number) < quantity(limits.memory), `${where}: cache cap`);
            }
          }
        }
      });

      it("reaches the draft service and Redis at Services that lead to them", async () => {
        for (const container of k8sContainers(objects, overlay)) {
          const facts = await startFacts(container);
          if (facts === undefined) continue;
          const addresses: [string, string][] = [];
          if (typeof facts.config.draftAddress === "string") addresses.push([facts.config.draftAddress, "draft"]);
          if (typeof facts.config.redisUrl === "string") addresses.push([new URL(facts.config.redisUrl).host, "redis"]);
          for (const [address, component] of addresses) {
            const [host, port] = address.split(":");
            const service = find(objects, "Service", host);
            assert.ok(service, `${container.where}: no Service ${host}`);
            const spec = service.spec as JsonObject;
            const servicePort = (spec.ports as JsonObject[]).find((p) => p.port === Number(port));
            assert.ok(servicePort, `${container.where}: Service ${host} has no port ${port}`);
            assert.equal((spec.selector as Record<string, string>)["app.kubernetes.io/component"], component);
          }
        }
      });

      it("runs every container non-root, read-only, without capabilities, with requests and limits", () => {
        const uid = Number(inherited(stages, "runtime", "USER")?.args.split(":")[0]);
        for (const workload of workloads(objects)) {
          const pod = podSpecs(workload)[0];
          const security = pod.securityContext as JsonObject;
          assert.equal(security.runAsNonRoot, true, objectId(workload));
          assert.deepEqual(security.seccompProfile, { type: "RuntimeDefault" }, objectId(workload));
          assert.equal(pod.automountServiceAccountToken, false, objectId(workload));
          const volumes = new Map(((pod.volumes ?? []) as JsonObject[]).map((v) => [v.name as string, v]));
          for (const container of containersOf(pod)) {
            const where = `${objectId(workload)} ${container.name}`;
            const context = container.securityContext as JsonObject;
            assert.equal(context.allowPrivilegeEscalation, false, where);
            assert.equal(context.readOnlyRootFilesystem, true, where);
            assert.deepEqual((context.capabilities as JsonObject).drop, ["ALL"], where);
            if (imageStage(container.image as string) !== undefined) assert.equal(security.runAsUser, uid, where);
            const resources = container.resources as JsonObject;
            for (const kind of ["requests", "limits"]) {
              for (const resource of ["cpu", "memory"]) {
                assert.ok((resources[kind] as JsonObject)?.[resource], `${where}: ${kind}.${resource}`);
              }
            }
            const mounts = (container.volumeMounts ?? []) as JsonObject[];
            for (const mount of mounts) assert.ok(volumes.has(mount.name as string), `${where}: volume ${mount.name}`);
            const running = k8sContainerFor(objects, overlay, workload, container.name as string);
            if (running?.argv.includes("tsx")) {
              assert.ok(
                mounts.some((m) => m.mountPath === "/tmp" && m.readOnly !== true),
                `${where}: tsx needs a writable /tmp`,
              );
            }
          }
          for (const volume of volumes.values()) {
            const claim = volume.persistentVolumeClaim as JsonObject | undefined;
            if (claim !== undefined) {
              assert.ok(find(objects, "PersistentVolumeClaim", claim.claimName as string), `${objectId(workload)}`);
            }
            assert.equal(volume.hostPath, undefined, `${objectId(workload)}: hostPath breaks the restricted profile`);
          }
        }
      });

      it("budgets disruptions and autoscales the gateway on CPU", () => {
        const all = workloads(objects).filter((w) => w.kind !== "Job");
        for (const budget of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
          const selector = (budget.spec as JsonObject).selector as JsonObject;
          const covered = all.filter((w) => selectorMatches(selector, templateLabels(w)));
          assert.equal(covered.length, 1, `${objectId(budget)} covers ${covered.map(objectId)}`);
        }
        for (const component of ["gateway", "draft", "target"]) {
          assert.ok(find(objects, "PodDisruptionBudget", `specgate-${component}`), component);
        }
        const hpa = find(objects, "HorizontalPodAutoscaler", "specgate-gateway");
        assert.ok(hpa, "the gateway has a HorizontalPodAutoscaler");
        const ref = (hpa.spec as JsonObject).scaleTargetRef as JsonObject;
        const gateway = find(objects, ref.kind as string, ref.name as string);
        assert.ok(gateway, "the HPA scales an existing workload");
        assert.equal((gateway.spec as JsonObject).replicas, undefined, "the HPA alone sets the gateway's replicas");
        const container = (podSpecs(gateway)[0].containers as JsonObject[])[0];
        assert.ok(((container.resources as JsonObject).requests as JsonObject).cpu, "CPU utilisation needs a request");
      });

      it("lets strangers reach the gateway's gRPC and HTTP API ports only", () => {
        const policies = objects.filter((o) => o.kind === "NetworkPolicy");
        const namespaceLabels = { "kubernetes.io/metadata.name": "specgate" };
        const component = (w: K8sObject) => templateLabels(w)["app.kubernetes.io/component"];
        const sources: Record<string, Source> = {
          external: { kind: "external" },
          "pod in another namespace": {
            kind: "pod",
            namespace: "other",
            namespaceLabels: { "kubernetes.io/metadata.name": "other" },
            podLabels: { "app.kubernetes.io/component": "gateway", "app.kubernetes.io/name": "specgate" },
          },
          "stranger in the namespace": { kind: "pod", namespace: "specgate", namespaceLabels, podLabels: { app: "x" } },
          prometheus: {
            kind: "pod",
            namespace: "monitoring",
            namespaceLabels: { "kubernetes.io/metadata.name": "monitoring" },
            podLabels: { "app.kubernetes.io/name": "prometheus" },
          },
        };
        for (const workload of workloads(objects)) {
          sources[component(workload)] = {
            kind: "pod",
            namespace: "specgate",
            namespaceLabels,
            podLabels: templateLabels(workload),
          };
        }
        const expected = (source: string, destination: string, portName: string): boolean =>
          (destination === "gateway" && (portName === "grpc" || portName === "http")) ||
          (source === "prometheus" && portName === "metrics") ||
          (source === "gateway" && ["draft", "target"].includes(destination) && portName === "grpc") ||
          (["gateway", "target", "draft"].includes(source) && destination === "redis" && portName === "redis");
        for (const workload of workloads(objects)) {
          const pod = podSpecs(workload)[0];
          const ports = containerPorts(pod);
          const namedPorts = Object.fromEntries(ports.map((p) => [p.name ?? "", p.containerPort]));
          const destination = { namespace: "specgate", podLabels: templateLabels(workload), namedPorts };
          for (const port of ports) {
            for (const [name, source] of Object.entries(sources)) {
              assert.equal(
                ingressAllowed(policies, destination, port.containerPort, source),
                expected(name, component(workload), port.name ?? ""),
                `${name} → ${component(workload)}:${port.name}`,
              );
            }
          }
        }
      });

      it("lets the gateway reserve the KV memory of one target replica's cache, as the replicas are set", async () => {
        const cacheBytes = new Map<string, number>();
        for (const workload of workloads(objects)) {
          for (const container of (podSpecs(workload)[0].containers ?? []) as JsonObject[]) {
            const running = k8sContainerFor(objects, overlay, workload, container.name as string);
            const facts = running && (await startFacts(running));
            if (facts?.entry === "services/target/main.ts") cacheBytes.set("target", Number(facts.config.cacheBytes));
            if (facts?.entry === "gateway/main.ts") {
              cacheBytes.set("gateway", Number(facts.config.kvBudgetBytes || facts.config.targetCacheBytes));
            }
          }
        }
        assert.ok(cacheBytes.has("target") && cacheBytes.has("gateway"), "both found");
        assert.equal(cacheBytes.get("gateway"), cacheBytes.get("target"));
      });

      it(`uses the ${overlay === "gpu" ? "CUDA" : "CPU"} provider and image, one GPU per target replica on GPU`, async () => {
        for (const workload of workloads(objects)) {
          for (const container of (podSpecs(workload)[0].containers ?? []) as JsonObject[]) {
            const running = k8sContainerFor(objects, overlay, workload, container.name as string);
            const facts = running && (await startFacts(running));
            if (running === undefined || facts === undefined || facts.config.executionProvider === undefined) continue;
            const limits = (container.resources as JsonObject).limits as JsonObject;
            const where = objectId(workload);
            if (overlay === "gpu") {
              assert.equal(facts.config.executionProvider, "cuda", where);
              assert.equal(facts.config.deviceId, 0, `${where}: the pod's one GPU is device 0`);
              assert.equal(limits["nvidia.com/gpu"], 1, `${where}: one GPU`);
              assert.equal(running.stage, "runtime-cuda", `${where}: the CUDA image`);
            } else {
              assert.equal(facts.config.executionProvider, "cpu", where);
              assert.equal(limits["nvidia.com/gpu"], undefined, where);
              assert.equal(running.stage, "runtime", where);
            }
          }
        }
      });
    });
  }
});

describe("compose stack", () => {
  const services = composeServices;

  it("has the whole stack, with dependencies that exist and wait for health where it is checked", () => {
    for (const name of ["redis", "models", "draft", "gateway", "otel-collector", "prometheus", "tempo", "grafana"]) {
      assert.ok(services[name], `service ${name}`);
    }
    assert.ok(Object.keys(services).filter((name) => /^target-\d+$/.test(name)).length >= 2, "two target replicas");
    for (const [name, service] of Object.entries(services)) {
      const dependsOn = (service.depends_on ?? {}) as Record<string, JsonObject>;
      for (const [dependency, { condition }] of Object.entries(dependsOn)) {
        assert.ok(services[dependency], `${name} depends on missing ${dependency}`);
        if (condition === "service_healthy") assert.ok(services[dependency].healthcheck, `${dependency} healthcheck`);
        if (condition === "service_completed_successfully") assert.equal(services[dependency].restart, "no");
      }
    }
  });

  it("mounts files and builds from contexts that exist, publishing on loopback only", () => {
    const deployDir = join(ROOT, "deploy");
    for (const [name, service] of Object.entries(services)) {
      for (const volume of (service.volumes ?? []) as string[]) {
        const source = volume.split(":")[0];
        if (source.startsWith(".") || source.startsWith("/")) {
          assert.ok(existsSync(join(deployDir, source)), `${name}: ${source} does not exist`);
        } else {
          assert.ok((compose.volumes as JsonObject)[source] !== undefined, `${name}: volume ${source} not declared`);
        }
      }
      if (isObject(service.build)) {
        assert.ok(existsSync(join(deployDir, service.build.context as string)), `${name}: build context`);
        assert.ok(existsSync(join(deployDir, service.build.context as string, service.build.dockerfile as string)));
        const target = service.build.target as string;
        stage(target);
        assert.equal(
          service.build.additional_contexts,
          undefined,
          `${name}: the image builds from the repository alone`,
        );
      }
      for (const port of (service.ports ?? []) as string[]) assert.match(port, /^127\.0\.0\.1:/, `${name}: ${port}`);
    }
  });

  it("checks each specgate service's health on the port its config listens on, with time to drain", async () => {
    for (const [name, service] of Object.entries(services)) {
      const [container] = composeContainers().filter((c) => c.where === `compose ${name}`);
      const facts = container && (await startFacts(container));
      if (facts === undefined) continue;
      assert.equal(healthcheckPort(service), facts.config.port, `${name}: healthcheck port`);
      const grace = /^(\d+)s$/.exec(String(service.stop_grace_period));
      assert.ok(grace && Number(grace[1]) * 1000 > (facts.config.drainMs as number), `${name}: stop_grace_period`);
    }
  });

  it("sends traces to a collector that receives the services' OTLP protocol and exports to compose services", () => {
    const collector = readYamlDocuments(join(ROOT, "deploy", "otel-collector.yaml"))[0] as JsonObject;
    const protocols = ((collector.receivers as JsonObject).otlp as JsonObject).protocols as JsonObject;
    for (const container of composeContainers()) {
      const endpoint = container.env.OTEL_EXPORTER_OTLP_ENDPOINT;
      if (endpoint === undefined) continue;
      const url = new URL(endpoint);
      assert.ok(services[url.hostname], `${container.where}: ${url.hostname} is a compose service`);
      const protocol = container.env.OTEL_EXPORTER_OTLP_PROTOCOL ?? "http/protobuf";
      const receiver = protocols[protocol === "grpc" ? "grpc" : "http"] as JsonObject | null | undefined;
      assert.ok(receiver !== undefined, `${container.where}: the collector receives OTLP over ${protocol}`);
      const listen = String(receiver?.endpoint ?? (protocol === "grpc" ? ":4317" : ":4318"));
      assert.equal(listen.split(":").at(-1), url.port, `${container.where}: collector port`);
    }
    const pipelines = (collector.service as JsonObject).pipelines as Record<string, JsonObject>;
    assert.ok((pipelines.traces.receivers as string[]).includes("otlp"), "the traces pipeline takes OTLP");
    for (const [name, exporter] of Object.entries((collector.exporters ?? {}) as Record<string, JsonObject | null>)) {
      const endpoint = exporter?.endpoint;
      if (typeof endpoint !== "string") continue;
      const host = new URL(endpoint.includes("://") ? endpoint : `http://${endpoint}`).hostname;
      assert.ok(services[host], `collector exporter ${name} sends to ${host}, not a compose service`);
    }
  });

  it("provisions Grafana data sources that are compose services", () => {
    const dir = join(ROOT, "deploy", "grafana", "provisioning", "datasources");
    const files = readdirSync(dir).filter((file) => /\.ya?ml$/.test(file));
    assert.ok(files.length > 0, "data source provisioning files");
    for (const file of files) {
      for (const source of ((readYamlDocuments(join(dir, file))[0] as JsonObject).datasources ?? []) as JsonObject[]) {
        const host = new URL(source.url as string).hostname;
        assert.ok(services[host], `${file}: data source ${source.name} at ${host}, not a compose service`);
      }
    }
  });

  it("lets Prometheus scrape every specgate service on the port its telemetry opens", async () => {
    const prometheusFile = join(ROOT, "deploy", "prometheus.yml");
    const config = readYamlDocuments(prometheusFile)[0] as JsonObject;
    const targets = new Set(
      ((config.scrape_configs ?? []) as JsonObject[]).flatMap((job) =>
        ((job.static_configs ?? []) as JsonObject[]).flatMap((group) => group.targets as string[]),
      ),
    );
    const { defaultMetricsPort } = await import("../../services/telemetry/metrics-endpoint.ts");
    const roles = {
      "gateway/main.ts": "gateway",
      "services/draft/main.ts": "draft",
      "services/target/main.ts": "target",
    };
    for (const container of composeContainers()) {
      const facts = await startFacts(container);
      if (facts === undefined) continue;
      const replica = Number(facts.config.replicaId ?? 0);
      const role = roles[facts.entry as keyof typeof roles] as "gateway" | "draft" | "target";
      const port = (facts.config.metricsPort as number | undefined) ?? defaultMetricsPort(role, replica);
      const host = container.where.replace(/^compose /, "");
      assert.ok(targets.has(`${host}:${port}`), `prometheus.yml scrapes ${host}:${port}`);
    }
  });
});
