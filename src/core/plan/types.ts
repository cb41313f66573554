/**
 * The plan: everything a runtime needs to run one training step on every rank, decided ahead of
 * time. Weights are not in it, but where they lie is (since version 6): each parameter's and state's
 * byte range in the ONNX file or its external data, so a rank reads its own and nothing else. The
 * protobuf schema in schema.ts mirrors these types field for field.
 */
export const PLAN_VERSION = 6;

export type InstrKind = 'FORWARD' | 'BACKWARD_B' | 'BACKWARD_W' | 'BACKWARD' | 'SEND' | 'RECV' | 'ALLREDUCE' | 'OPTIMIZER_STEP';
export const INSTR_KINDS: readonly InstrKind[] = ['FORWARD', 'BACKWARD_B', 'BACKWARD_W', 'BACKWARD', 'SEND', 'RECV', 'ALLREDUCE', 'OPTIMIZER_STEP'];

export interface PlanValue {
  name: string;
  /** ONNX element type code. */
  dtype: number;
  /** Static shape for one microbatch. */
  shape: number[];
  kind: 'input' | 'param' | 'state' | 'const' | 'node';
  /** Constants only: little-endian bytes. */
  data?: Uint8Array;
  /** Parameters and states (plans since version 6): where the initial bytes lie. */
  weight?: WeightRef;
}

/**
 * Where a parameter's or state's initial value lies, relative to the plan's model: a byte range of
 * the model file (`file` '') or of one of its external data files (`file` a location in the model's
 * folder), little-endian elements of `dtype` (an ONNX code) and `shape`, with the SHA-256 of those
 * bytes (a model changed since compile is refused, not read); or, for values ONNX keeps in typed
 * fields, the initializer to decode by name.
 */
export type WeightRef =
  | { kind: 'bytes'; file: string; offset: number; length: number; sha256: string; dtype: number; shape: number[] }
  | { kind: 'initializer'; name: string };

export interface PlanNode {
  name: string;
  op: string;
  /** Value indices; -1 for an absent optional input. */
  inputs: number[];
  outputs: number[];
  /** Attributes as JSON (tensors as {dtype, shape, data: base64}). */
  attrs: string;
  phase: string;
  stage: number;
}

/** Where each internal value of a program lives in its workspace. */
export interface Workspace {
  bytes: number;
  slots: { value: number; offset: number; bytes: number }[];
}

export interface PlanStage {
  index: number;
  /** Pipeline rank (within a data-parallel replica) that runs it. */
  ppRank: number;
  forward: number[];
  backwardB: number[];
  backwardW: number[];
  /** Parameters (value indices) the stage reads. */
  params: number[];
  workspaces: { forward: Workspace; backwardB: Workspace; backwardW: Workspace };
  /** Gradient contributions: the value whose data is added to the parameter's gradient. */
  grads: { param: number; value: number }[];
  /** State updates (BatchNorm running statistics): the value written back to the state. */
  states: { state: number; value: number }[];
  fwdMs: number;
  bMs: number;
  wMs: number;
}

/** A value crossing between stages: an activation forward or a gradient back. */
export interface BoundaryTensor {
  id: number;
  value: number;
  fromStage: number;
  toStage: number;
  direction: 'activation' | 'gradient';
  bytes: number;
}

export interface CommGroup {
  id: number;
  /** 'dp': a pipeline rank's data-parallel replicas; 'tied': every rank holding a shared parameter. */
  kind: 'dp' | 'tied';
  ranks: number[];
}

export interface Bucket {
  id: number;
  group: number;
  /** Parameter value indices whose gradients the bucket reduces. */
  params: number[];
  bytes: number;
  /** Applied after the sum: 1/dp averages over data-parallel replicas. */
  scale: number;
  /** The stage whose last backward makes the bucket final, per member rank. */
  stage: number;
}

export interface Instruction {
  kind: InstrKind;
  stage: number;
  mb: number;
  /** SEND/RECV: boundary tensor id. */
  tensor: number;
  /** SEND/RECV: world rank of the other side. */
  peer: number;
  bucket: number;
  group: number;
  startMs: number;
  endMs: number;
}

export interface Allocation {
  what: string;
  offset: number;
  bytes: number;
  /** Instruction indices (inclusive) during which the buffer is live. */
  first: number;
  last: number;
}

export interface RankPlan {
  rank: number;
  ppRank: number;
  dpRank: number;
  instructions: Instruction[];
  memory: { arenaBytes: number; allocations: Allocation[] };
  bubble: number;
}

/**
 * The optimizer a plan was compiled for, with its hyperparameters: what `cleave run` trains with
 * unless a flag overrides it (and says so). Its state is what the memory plan holds.
 */
export interface PlanOptimizer {
  kind: 'sgd' | 'adam' | 'adamw';
  lr: number;
  weightDecay: number;
  /** SGD only (0: plain SGD, no momentum buffer). */
  momentum: number;
  /** Adam and AdamW only. */
  beta1: number;
  beta2: number;
  eps: number;
  /** Global gradient-norm clipping (0: none). */
  clip: number;
}

export interface Plan {
  version: number;
  producer: string;
  model: {
    name: string;
    /** The ONNX model the plan was compiled from, as an absolute path (plans before version 4: as typed). */
    source: string;
    /** The same file relative to the plan's folder ('' in plans before version 4), tried first: plan and model may move together. */
    sourceFromPlan: string;
    opset: number;
    loss: string;
    microbatchSize: number;
    dtypePolicy: string;
    /** The optimizer family the memory plan holds state for: sgd, sgd-momentum, adam, adamw. */
    optimizer: string;
    /** The optimizer and hyperparameters to train with (plans before version 4: derived from `optimizer`). */
    optimizerConfig: PlanOptimizer;
    parameters: number;
    /** Value index of the scalar loss (on the last stage). */
    lossValue: number;
    /** Value index of the labels input the loss added (−1 for a model's own loss). */
    labelsValue: number;
    /** Classes of the logits a cross-entropy loss reads (the vocabulary of a language model); 0 otherwise. */
    classes: number;
    /** Value index of the constant 1 that seeds the backward pass (float16 loss scaling scales it); −1 if unknown (version 1 plans). */
    lossSeedValue: number;
  };
  world: { pp: number; dp: number; virtualStages: number; placement: 'cluster' | 'spread'; size: number };
  schedule: { name: string; microbatches: number; activeMicrobatches: number; device: string; split: boolean };
  values: PlanValue[];
  nodes: PlanNode[];
  stages: PlanStage[];
  tensors: BoundaryTensor[];
  groups: CommGroup[];
  buckets: Bucket[];
  ranks: RankPlan[];
  prediction: { stepMs: number; pipelineMs: number };
  /**
   * SHA-256 (hex) of the file's body, as read and verified ('' for plans before version 5, which
   * carried none, and for a plan not read from a file). Not stored in the body: the file holds it.
   */
  checksum?: string;
}
