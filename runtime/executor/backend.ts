import type { Instruction } from '../../src/core/plan/types.js';
import type { Tensor } from '../../src/core/ir/tensor.js';

/** A microbatch's data: every graph input a stage may read (model inputs and labels), by name. */
export type Feeds = Readonly<Record<string, Tensor>>;

export interface OptimizerOptions {
  lr: number;
  /** Clip the global gradient norm (over every stage) to this value. */
  clip?: number;
}

/**
 * What the executor drives on one rank. Every operation returns a promise so that a backend can
 * enqueue work and return at once (the CUDA backend enqueues on streams); the CPU backend computes
 * synchronously and communicates asynchronously.
 */
export interface Backend {
  /**
   * Zeroes gradient accumulators and forgets the previous step's microbatches. `feeds` are the
   * step's data by microbatch (a backend may stage them up front, as a captured CUDA graph must).
   */
  beginStep(feeds: readonly Feeds[]): void;
  /** Runs the program(s) of a FORWARD, BACKWARD_B, BACKWARD_W or BACKWARD instruction. */
  compute(ins: Instruction, feeds: Feeds): Promise<void>;
  send(ins: Instruction): Promise<void>;
  recv(ins: Instruction): Promise<void>;
  allreduce(ins: Instruction): Promise<void>;
  /**
   * Optional: settles once the step's queued work is done, without blocking the host (a multi-GPU
   * rank polls, so that a peer's failure can still stop it). The executor awaits it before the losses.
   */
  drain?(): Promise<void>;
  /** Losses of the microbatches this rank computed (the last stage's rank), by microbatch. */
  losses(): Map<number, number>;
  /** Averages gradients over microbatches, clips the global norm, updates the parameters. */
  optimizerStep(o: OptimizerOptions): Promise<{ gradNorm: number }>;
}
