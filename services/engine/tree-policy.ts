/**
 * Tree shape policy: which tree, if any, a round drafts. Whether branching pays depends on the hardware (on a GPU at
 * batch 1, 64 positions cost about what one does; on this CPU 16 cost twice as much) and on the drafter, so the policy
 * measures instead of assuming: every shape on offer, the chain among them, is tried for a few rounds, then the one
 * with the most tokens per millisecond of round (drafting and verifying) is used, and the others are tried again now
 * and then so that a change of load or text is noticed. The depth stays the K policy's. Shared by the requests of one
 * drafter/target pair, like CostModel. Pure: the loop passes the measurements in.
 */

/** How a round's tree branches: `width` children per node, `nodes` in all (its depth is the K policy's); undefined is the chain. */
export interface Branching {
  readonly width: number;
  readonly nodes: number;
}

export interface TreeShaper {
  /** The shape of the next round, undefined for a chain. */
  choose(): Branching | undefined;
  /** A round ran with `shape`: its sequences gained `tokensPerSequence` tokens each, and it took `ms`. */
  observe(shape: Branching | undefined, tokensPerSequence: number, ms: number): void;
}

/** Always the same shape. */
export class FixedTreeShape implements TreeShaper {
  constructor(private readonly shape: Branching) {}
  choose(): Branching {
    return this.shape;
  }
  observe(): void {}
}

export interface AdaptiveTreeShapeOptions {
  /** Rounds each shape runs before the policy compares them. */
  readonly trials?: number;
  /** Every this many rounds, the longest-unused shape runs once more. */
  readonly reprobeEvery?: number;
  /** Weight of a new round in each shape's moving averages. */
  readonly weight?: number;
}

interface Arm {
  readonly shape: Branching | undefined;
  rounds: number;
  lastUsed: number;
  tokens: number;
  ms: number;
}

/** Picks among the chain and `shapes` by measured tokens per millisecond. */
export class AdaptiveTreeShape implements TreeShaper {
  private readonly arms: Arm[];
  private readonly trials: number;
  private readonly reprobeEvery: number;
  private readonly weight: number;
  private round = 0;

  constructor(shapes: readonly Branching[], options: AdaptiveTreeShapeOptions = {}) {
    this.arms = [undefined, ...shapes].map((shape) => ({ shape, rounds: 0, lastUsed: 0, tokens: 0, ms: 0 }));
    this.trials = options.trials ?? 4;
    this.reprobeEvery = options.reprobeEvery ?? 32;
    this.weight = options.weight ?? 0.2;
  }

  /** Tokens per millisecond a shape has given so far. */
  rate(shape: Branching | undefined): number {
    const arm = this.arms.find((a) => a.shape === shape);
    return arm && arm.ms > 0 ? arm.tokens / arm.ms : 0;
  }

  choose(): Branching | undefined {
    this.round++;
    const untried = this.arms.find((a) => a.rounds < this.trials);
    if (untried) return untried.shape;
    if (this.round % this.reprobeEvery === 0) {
      return this.arms.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a)).shape;
    }
    return this.arms.reduce((a, b) => (this.rate(b.shape) > this.rate(a.shape) ? b : a)).shape;
  }

  observe(shape: Branching | undefined, tokensPerSequence: number, ms: number): void {
    const arm = this.arms.find((a) => a.shape === shape);
    if (!arm) return;
    // The first round sets the averages; later ones move them.
    const w = arm.rounds === 0 ? 1 : this.weight;
    arm.tokens += w * (tokensPerSequence - arm.tokens);
    arm.ms += w * (ms - arm.ms);
    arm.rounds++;
    arm.lastUsed = this.round;
  }
}
