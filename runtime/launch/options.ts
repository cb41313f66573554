import type { Tensor } from '../../src/core/ir/tensor.js';
import type { HostPhases } from '../../src/core/plan/measured.js';
import type { OptimizerConfig, Schedule } from '../optim/optimizer.js';

/** Where a run's data comes from; each data-parallel replica draws its own shard. */
export type DataOptions =
  | { kind: 'default' }
  | { kind: 'path'; path: string; tokenType?: 'uint16' | 'int32' }
  /** Explicit global batches, one per step (dp × the replica batch rows); replica d takes its slice. */
  | { kind: 'batches'; batches: Record<string, Tensor>[] };

export interface RunOptions {
  planFile: string;
  /** Initial weights: an ONNX file (default: the plan's source model), or a checkpoint to resume. */
  weights?: string;
  resume?: string;
  data: DataOptions;
  steps: number;
  optimizer: OptimizerConfig;
  schedule?: Schedule;
  clip?: number;
  seed?: number;
  saveEvery?: number;
  checkpointDir?: string;
  /**
   * Seconds a rank waits for a message before giving up (and stopping every rank); on CPU ranks
   * also how long a rank may go without progress inside a step (stuck in its compute) before the
   * run stops, naming it.
   */
  timeoutSeconds?: number;
  /**
   * Tests: make this rank throw at this instruction index (of this step, 1-based; default every
   * step), or with `hang`, hang in it as a kernel stuck in a loop would (CPU ranks; the watchdog's test).
   */
  failAt?: { rank: number; instruction: number; step?: number; hang?: boolean };
  /**
   * The run's id in the checkpoints it writes, the same for every rank: a random one per launch
   * unless given (the CPU and single-GPU launchers make one; multi-GPU ranks take rank 0's).
   */
  runId?: string;
  /** Return every rank's parameters at the end. */
  returnWeights?: boolean;
  /** Write the measured timeline of the last step, every rank on one clock, as a Perfetto / Chrome trace. */
  trace?: string;
  /** CUDA backend: capture the step as a CUDA graph after one eager step, then replay it. */
  cudaGraph?: boolean;
  /** CUDA backend: record each instruction's kernels once and launch them as a list (default on). */
  launchLists?: boolean;
  /** CUDA backend, fp16 plans: the initial loss scale (default 2^15, the largest a float16 seed holds). */
  lossScale?: number;
}

/** Messages from a rank's worker to the launcher. */
export type WorkerMessage =
  | { type: 'step'; rank: number; step: number; losses: number[]; gradNorm: number; lr: number; samples: number }
  | { type: 'saved'; rank: number; step: number; file: string; sha256: string }
  | { type: 'warning'; rank: number; message: string }
  /** `internal`: not a CleaveError (a bug, reported as one with its stack); else a user-facing failure. */
  | { type: 'error'; rank: number; message: string; internal?: boolean; stack?: string }
  | { type: 'done'; rank: number; weights?: [string, Tensor][]; times?: ([number, number] | null)[]; phases?: HostPhases };
