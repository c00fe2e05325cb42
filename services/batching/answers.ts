/**
 * Items handed in one by one and answered together: one call takes them all and answers each in order.
 */

/** An item handed in, and how to answer whoever handed it in. */
export interface Held<I, O> {
  readonly item: I;
  readonly resolve: (output: O) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Runs `call` on the held items and answers each with its outcome: an Error outcome fails that item alone; a rejection,
 * or a count of outcomes that is not one per item, fails them all.
 */
export async function answerAll<I, O>(
  held: readonly Held<I, O>[],
  call: (items: I[]) => Promise<(O | Error)[]>,
): Promise<void> {
  let outcomes: (O | Error)[];
  try {
    outcomes = await call(held.map((h) => h.item));
    if (outcomes.length !== held.length) {
      throw new Error(`batch call returned ${outcomes.length} outcomes for ${held.length} items`);
    }
  } catch (error) {
    for (const { reject } of held) reject(error);
    return;
  }
  held.forEach(({ resolve, reject }, i) => {
    const outcome = outcomes[i];
    if (outcome instanceof Error) reject(outcome);
    else resolve(outcome);
  });
}
