import type { InstrKind, Plan } from './types.js';

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
