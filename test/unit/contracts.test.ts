import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { DraftDistribution, DraftDistribution__Output } from "../../gen/specgate/v1/DraftDistribution.ts";
import type { VerifyJob } from "../../gen/specgate/v1/VerifyJob.ts";
import { messageCodec } from "../../proto/codec.ts";
import { fromWire, PROBABILITY_SCALE, quantise, toWire } from "../../proto/draft-distribution.ts";
import { CONVERSION_OPTIONS, DraftClient, GatewayClient, gatewayService, TargetClient } from "../../proto/load.ts";
import {
  decodeDraftVerdict,
  decodeReplicaAnnouncement,
  decodeVerifyJob,
  decodeVerifyPush,
  decodeVerifyReply,
  decodeVerifyResult,
  draftVerdictChannel,
  encodeDraftVerdict,
  encodeReplicaAnnouncement,
  encodeVerifyJob,
  encodeVerifyPush,
  encodeVerifyReply,
  encodeVerifyResult,
  QUEUE_PREFIX,
  replicaKey,
  verifyPushChannel,
  verifyQueueName,
  verifyReplyChannel,
} from "../../proto/verify-queue.ts";
import { LOADER_OPTIONS, GatewayClient as SdkGatewayClient } from "../../sdk/contract.ts";
import { folderImports, ROOT, runtimeImports } from "../support/entry-points.ts";

describe("generated service definitions", () => {
  it("expose the contract's methods", () => {
    assert.deepEqual(Object.keys(gatewayService).sort(), [
      "CancelBatch",
      "Generate",
      "GenerateStream",
      "GetBatch",
      "GetBatchResults",
      "ListBatches",
      "ListModels",
      "SubmitBatch",
    ]);
    assert.equal(gatewayService.GenerateStream.responseStream, true);
    for (const client of [GatewayClient, DraftClient, TargetClient]) assert.equal(typeof client, "function");
  });

  it("are the same in the SDK package, which loads the Gateway contract itself", () => {
    assert.deepEqual(LOADER_OPTIONS, { ...CONVERSION_OPTIONS, keepCase: true });
    const methods = (service: typeof gatewayService) =>
      Object.entries(service).map(([name, m]) => [name, m.path, m.requestStream, m.responseStream]);
    assert.deepEqual(methods(SdkGatewayClient.service), methods(gatewayService));
    // What the SDK sends, the gateway reads back as sent.
    const request = { text: "Once", max_tokens: 4, sampling: { temperature: 0.5, seed: 3 }, stop: ["."] };
    const sent = SdkGatewayClient.service.Generate.requestSerialize(request);
    const read = gatewayService.Generate.requestDeserialize(sent);
    assert.deepEqual([read.text, read.max_tokens, read.sampling?.seed, read.stop], ["Once", 4, 3, ["."]]);
  });
});

describe("verify queue payloads", () => {
  const q = toWire(quantise({ ids: [7, 3, 300], probs: [0.5, 0.25, 0.25] }));
  const job: VerifyJob = {
    sequence_id: "req-1",
    request_id: "req-1",
    round: 4,
    history: [1, 403, 407, 261],
    draft_tokens: [3, 7],
    draft_distributions: [q, q],
    sampling: { temperature: 0.8, top_k: 40, top_p: 0.95, seed: 2 ** 53 - 1 },
    acceptance: "ACCEPTANCE_MODE_LOSSY_TYPICAL",
    relaxed: { epsilon: 0.3, delta: 0.09 },
    trace_context: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    enqueued_at_unix_ms: 1732240000123.25,
    deadline_unix_ms: 0,
    model: "stories260k-x110m",
    job_id: "7c4f2b9e-job",
    reply_channel: "specgate:verify-reply:gateway-a",
    draft_verdict_channel: draftVerdictChannel("draft-a"),
    // Hash lanes above 2^31 come back unsigned.
    held_prefix: { length: 40, hash_high: 0xdeadbeef, hash_low: 7 },
  };
  const decodedJob = {
    ...job,
    // Decoded messages name the set member of each (synthetic) oneof, as the gRPC loader does.
    sampling: { ...job.sampling, _top_p: "top_p", _seed: "seed" },
    relaxed: { top_k: 0, epsilon: 0.3, delta: 0.09 },
    draft_tree: null,
    self_draft: null,
  };

  it("names everything of a replica with its id as the Redis Cluster hash tag, under the specgate prefix", () => {
    const names = [
      `${QUEUE_PREFIX}:${verifyQueueName("r0")}:wait`,
      verifyPushChannel("r0"),
      verifyReplyChannel("r0", "gateway-a"),
      replicaKey("r0"),
    ];
    for (const name of names) {
      assert.equal(name.match(/\{[^}]*\}/)?.[0], "{r0}", name);
      assert.ok(name.startsWith("specgate:"), name);
    }
  });

  it("round-trips a VerifyJob through BullMQ-safe job data", () => {
    const data = encodeVerifyJob(job);
    assert.equal(typeof data.verifyJob, "string");
    // BullMQ stores job data as JSON: the payload must survive it.
    const decoded = decodeVerifyJob(JSON.parse(JSON.stringify(data)));
    assert.deepEqual(decoded, decodedJob);
  });

  it("round-trips the pushed copy of a job, a reply and a draft verdict (binary pub/sub messages)", () => {
    assert.deepEqual(decodeVerifyPush(encodeVerifyPush(job)), decodedJob);
    assert.equal(job.draft_verdict_channel, "specgate:draft-verdict:{draft-a}");
    const failure = decodeVerifyReply(encodeVerifyReply({ job_id: "j", failure: "DEADLINE_EXCEEDED: too late" }));
    assert.deepEqual([failure.job_id, failure.result, failure.failure], ["j", null, "DEADLINE_EXCEEDED: too late"]);
    const verdict = { sequence_id: "req-1", round: 4, accepted: 2, next_token: 9, path: [0, 2] };
    assert.deepEqual(decodeDraftVerdict(encodeDraftVerdict(verdict)), verdict);
  });

  it("round-trips a tree job's tree and its verdict's path", () => {
    const tree = { tokens: [5, 6, 7], parents: [0, 0, 2], distributions: [q, q, q] };
    const treeJob = { ...job, draft_tokens: [], draft_distributions: [], draft_tree: tree };
    assert.deepEqual(decodeVerifyPush(encodeVerifyPush(treeJob)).draft_tree, tree);
    const result = { sequence_id: "req-1", round: 4, accepted: 2, next_token: 9, path: [1, 2] };
    assert.deepEqual(decodeVerifyResult(encodeVerifyResult(result)).path, [1, 2]);
  });

  it("fills defaults and keeps optional presence when decoding a sparse job", () => {
    const decoded = decodeVerifyJob(encodeVerifyJob({ sequence_id: "s", sampling: { temperature: 0 } }));
    assert.deepEqual(decoded.draft_tokens, []);
    assert.equal(decoded.acceptance, "ACCEPTANCE_MODE_UNSPECIFIED");
    assert.equal(decoded.sampling?.top_p, undefined);
    assert.equal(decoded.sampling?.seed, undefined);
    assert.equal(decoded.relaxed, null);
  });

  it("round-trips a VerifyResult and a replica announcement", () => {
    const result = {
      sequence_id: "req-1",
      round: 4,
      accepted: 2,
      next_token: 9,
      bonus: true,
      replica_id: "r0",
      batch_size: 5,
      queue_wait_ms: 0.5,
      verify_time_ms: 12.75,
      reprefilled: false,
      positions: 3,
      path: [],
      history_needed: false,
      // A self-drafted round's tree and drafting time.
      draft_tree: { tokens: [4, 5], parents: [0, 1], distributions: [] },
      draft_time_ms: 0.25,
    };
    assert.deepEqual(decodeVerifyResult(encodeVerifyResult(result)), result);
    const announcement = {
      replica_id: "r0",
      queue: verifyQueueName("r0"),
      address: "127.0.0.1:50061",
      model: "m",
      max_batch_size: 16,
      started_at_unix_ms: 5,
    };
    assert.deepEqual(decodeReplicaAnnouncement(encodeReplicaAnnouncement(announcement)), announcement);
  });

  it("rejects bytes that are not a VerifyJob", () => {
    assert.throws(() => decodeVerifyJob({ verifyJob: Buffer.from([0x0a, 0xff]).toString("base64") }));
  });
});

describe("draft distribution wire form", () => {
  it("quantises to numerators summing exactly to the scale, sorted by id", () => {
    const q = quantise({ ids: [9, 2, 5], probs: [1, 1, 1] });
    assert.deepEqual(Array.from(q.ids), [2, 5, 9]);
    const numerators = Array.from(q.probs, (p) => p * PROBABILITY_SCALE);
    assert.ok(numerators.every(Number.isInteger));
    assert.equal(
      numerators.reduce((a, b) => a + b, 0),
      PROBABILITY_SCALE,
    );
    // 65536 / 3 leaves a remainder of 1, given to the lowest id on ties.
    assert.deepEqual(numerators, [21846, 21845, 21845]);
  });

  it("drops tokens whose share rounds to zero and normalises", () => {
    const q = quantise({ ids: [0, 1, 2], probs: [2, 2, 1e-9] });
    assert.deepEqual(Array.from(q.ids), [0, 1]);
    assert.deepEqual(Array.from(q.probs), [0.5, 0.5]);
  });

  it("delta-encodes ids and reads back the identical distribution", () => {
    const q = quantise({ ids: [1000, 1001, 1003, 31999], probs: [0.4, 0.3, 0.2, 0.1] });
    const wire = toWire(q);
    assert.deepEqual(wire.token_ids, [1000, 1, 2, 30996]);
    const codec = messageCodec<DraftDistribution, DraftDistribution__Output>("DraftDistribution");
    const back = fromWire(codec.decode(codec.encode(wire)));
    assert.deepEqual(back, q);
  });

  it("is compact: a 40-token support costs about 2-3 bytes per token", () => {
    const ids = Array.from({ length: 40 }, (_, i) => 100 + i * 7);
    const wire = toWire(quantise({ ids, probs: ids.map((_, i) => 1 / (i + 1)) }));
    const bytes = messageCodec<DraftDistribution, DraftDistribution__Output>("DraftDistribution").encode(wire).length;
    assert.ok(bytes <= 40 * 3 + 8, `${bytes} bytes`);
  });

  it("rejects malformed wire distributions", () => {
    assert.throws(() => fromWire({ token_ids: [], probabilities: [] }), /empty/);
    assert.throws(() => fromWire({ token_ids: [1, 0], probabilities: [32768, 32768] }), /ascending/);
    assert.throws(() => fromWire({ token_ids: [1, 1], probabilities: [32768, 32767] }), /sums to 65535/);
    assert.throws(() => fromWire({ token_ids: [1, 1], probabilities: [65536, 0] }), /zero probability/);
  });

  it("rejects invalid inputs to quantise", () => {
    assert.throws(() => quantise({ ids: [1], probs: [Number.NaN] }), /invalid/);
    assert.throws(() => quantise({ ids: [1, 2], probs: [0, 0] }), /positive mass/);
    assert.throws(() => quantise({ ids: [1, 1], probs: [1, 1] }), /twice/);
  });
});

describe("import boundaries", () => {
  /** The imports from any of `folders` into any of `forbidden`, as "importer -> imported". */
  const crossings = (folders: readonly string[], forbidden: readonly string[]): string[] =>
    folders
      .flatMap(folderImports)
      .filter(([, imported]) => forbidden.some((folder) => imported.startsWith(`${folder}/`)))
      .map(([importer, imported]) => `${importer} -> ${imported}`);

  it("keep the replica's code out of the gateway, the draft service and the replica link", () => {
    // The gateway and the draft service reach replicas through the link, which holds none of the replica itself.
    assert.deepEqual(crossings(["gateway", "services/draft", "services/replica-link"], ["services/target"]), []);
  });

  it("keep the SDK package to its own files and its own dependencies", () => {
    // The client package is installed without the server: anything it loads from outside sdk/ would be missing, and
    // any package it loads that its manifest does not list would be absent or the server's.
    const outside = folderImports("sdk").filter(([, imported]) => !imported.startsWith("sdk/"));
    assert.deepEqual(
      outside.map(([importer, imported]) => `${importer} -> ${imported}`),
      [],
    );
    const manifest = JSON.parse(readFileSync(join(ROOT, "sdk", "package.json"), "utf8"));
    for (const entry of ["sdk/index.ts", "sdk/cli.ts"]) {
      const { files, packages } = runtimeImports(entry);
      assert.ok(files.has("sdk/contract.ts"), `${entry} loads the contract`);
      assert.deepEqual(
        [...packages].filter((name) => !(name in manifest.dependencies)),
        [],
        entry,
      );
    }
  });

  it("let the server depend on the SDK package, not the other way", () => {
    const server = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    const sdk = JSON.parse(readFileSync(join(ROOT, "sdk", "package.json"), "utf8"));
    assert.equal(server.dependencies[sdk.name], sdk.version);
    assert.ok(!(server.name in sdk.dependencies));
  });

  it("keep the services out of proto/", () => {
    assert.deepEqual(crossings(["proto"], ["services", "gateway", "sdk"]), []);
  });

  it("keep the offline model builder out of the services, which run only the serving half", () => {
    const services = readdirSync(join(ROOT, "services"), { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && entry.name !== "model-builder")
      .map((entry) => `services/${entry.name}`);
    assert.ok(services.includes("services/runtime"), "the scan reads the serving runtime");
    assert.deepEqual(crossings(["gateway", ...services], ["services/model-builder"]), []);
  });
});
