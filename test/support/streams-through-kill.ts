/**
 * Streams many requests at once and kills a process mid-run: `kill` is called once, when every stream has received
 * its first tokens, so that each has sequences in flight on the stack when it goes.
 */
import assert from "node:assert/strict";
import type { GenerateInput, SpecgateClient, StreamEvent } from "../../sdk/index.ts";

export interface StreamRun {
  readonly tokens: number[];
  /** The replicas the stream's end event names. */
  readonly replicas: Set<string>;
  /** The end event, if the stream ended with one. */
  readonly end: Extract<StreamEvent, { type: "end" }> | undefined;
}

export async function streamsThroughKill(
  client: SpecgateClient,
  inputs: readonly GenerateInput[],
  kill: () => void,
): Promise<{ readonly runs: StreamRun[]; readonly killed: boolean }> {
  let killed = false;
  let started = 0;
  const runs = await Promise.all(
    inputs.map(async (input) => {
      const tokens: number[] = [];
      const replicas = new Set<string>();
      let end: StreamRun["end"];
      for await (const event of client.stream(input)) {
        if (event.type === "delta") {
          if (tokens.length === 0) started++;
          tokens.push(...event.token_ids);
          if (!killed && started === inputs.length) {
            killed = true;
            kill();
          }
        } else if (event.type === "end") {
          end = event;
          for (const r of event.stats?.replicas ?? []) replicas.add(r);
        }
      }
      return { tokens, replicas, end };
    }),
  );
  return { runs, killed };
}

/** The kill came mid-run, and some stream's sequence moved from replica `from` to `to`. */
export function assertHandedOver(
  { runs, killed }: { readonly runs: readonly StreamRun[]; readonly killed: boolean },
  from: string,
  to: string,
): void {
  assert.ok(killed, `${from} was killed mid-run`);
  assert.ok(
    runs.some(({ replicas }) => replicas.has(from) && replicas.has(to)),
    `a sequence moved from ${from} to ${to}`,
  );
}
