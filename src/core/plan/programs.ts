import type { InstrKind, Instruction, Plan } from './types.js';

/** A plan stage's three programs, by the field that holds each one's node indices. */
export type StageProgram = 'forward' | 'backwardB' | 'backwardW';

/** The programs each compute instruction runs (SEND, RECV, ALLREDUCE and OPTIMIZER_STEP run none). */
export const PROGRAMS: Partial<Record<InstrKind, readonly StageProgram[]>> = {
  FORWARD: ['forward'], BACKWARD_B: ['backwardB'], BACKWARD_W: ['backwardW'], BACKWARD: ['backwardB', 'backwardW'],
};

/**
 * Whether a compute instruction (its kind at its stage) reads boundary tensor `tensor`: the tensor
 * arrives at that stage and one of the instruction's programs takes it as an input.
 */
export function readsBoundary(plan: Plan, ins: { kind: InstrKind; stage: number }, tensor: number): boolean {
  const t = plan.tensors[tensor]!;
  if (t.toStage !== ins.stage) return false;
  const s = plan.stages[ins.stage]!;
  return (PROGRAMS[ins.kind] ?? []).some((k) => s[k].some((n) => plan.nodes[n]!.inputs.includes(t.value)));
}

/** An instruction as messages name it: `FORWARD stage 1 mb 3`, `SEND tensor 2 mb 0 to rank 1`. */
export function instructionLabel(ins: Instruction): string {
  switch (ins.kind) {
    case 'SEND': return `SEND tensor ${ins.tensor} mb ${ins.mb} to rank ${ins.peer}`;
    case 'RECV': return `RECV tensor ${ins.tensor} mb ${ins.mb} from rank ${ins.peer}`;
    case 'ALLREDUCE': return `ALLREDUCE bucket ${ins.bucket}`;
    case 'OPTIMIZER_STEP': return 'OPTIMIZER_STEP';
    default: return `${ins.kind} stage ${ins.stage} mb ${ins.mb}`;
  }
}
