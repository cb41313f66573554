import protobuf from 'protobufjs';

/**
 * The plan file's protobuf schema (cleave.plan, version 1). Field numbers are stable; new fields get
 * new numbers; a reader refuses plans of a newer major version.
 */
type F = { type: string; id: number; rule?: 'repeated' };
const msg = (fields: Record<string, F>): Record<string, unknown> => ({ fields, edition: 'proto2' });
const rep = (type: string, id: number): F => ({ type, id, rule: 'repeated' });

const descriptor = {
  nested: {
    cleave: {
      nested: {
        Plan: msg({
          version: { type: 'int32', id: 1 }, producer: { type: 'string', id: 2 }, model: { type: 'ModelInfo', id: 3 },
          world: { type: 'World', id: 4 }, schedule: { type: 'ScheduleInfo', id: 5 }, values: rep('ValueDef', 6),
          nodes: rep('NodeDef', 7), stages: rep('StageDef', 8), tensors: rep('TensorDef', 9), groups: rep('GroupDef', 10),
          buckets: rep('BucketDef', 11), ranks: rep('RankDef', 12), prediction: { type: 'Prediction', id: 13 },
        }),
        ModelInfo: msg({
          name: { type: 'string', id: 1 }, source: { type: 'string', id: 2 }, opset: { type: 'int32', id: 3 }, loss: { type: 'string', id: 4 },
          microbatchSize: { type: 'int64', id: 5 }, dtypePolicy: { type: 'string', id: 6 }, optimizer: { type: 'string', id: 7 }, parameters: { type: 'int64', id: 8 },
          lossValue: { type: 'int32', id: 9 }, labelsValue: { type: 'sint32', id: 10 }, classes: { type: 'int32', id: 11 },
          lossSeedValue: { type: 'sint32', id: 12 }, sourceFromPlan: { type: 'string', id: 13 }, optimizerConfig: { type: 'OptimizerDef', id: 14 },
        }),
        OptimizerDef: msg({
          kind: { type: 'string', id: 1 }, lr: { type: 'double', id: 2 }, weightDecay: { type: 'double', id: 3 }, momentum: { type: 'double', id: 4 },
          beta1: { type: 'double', id: 5 }, beta2: { type: 'double', id: 6 }, eps: { type: 'double', id: 7 }, clip: { type: 'double', id: 8 },
        }),
        Pair: msg({ a: { type: 'int32', id: 1 }, b: { type: 'int32', id: 2 } }),
        World: msg({ pp: { type: 'int32', id: 1 }, dp: { type: 'int32', id: 2 }, virtualStages: { type: 'int32', id: 3 }, placement: { type: 'string', id: 4 }, size: { type: 'int32', id: 5 } }),
        ScheduleInfo: msg({
          name: { type: 'string', id: 1 }, microbatches: { type: 'int32', id: 2 }, activeMicrobatches: { type: 'int32', id: 3 },
          device: { type: 'string', id: 4 }, split: { type: 'bool', id: 5 },
        }),
        ValueDef: msg({ name: { type: 'string', id: 1 }, dtype: { type: 'int32', id: 2 }, shape: rep('int64', 3), kind: { type: 'string', id: 4 }, data: { type: 'bytes', id: 5 }, weight: { type: 'WeightDef', id: 6 } }),
        WeightDef: msg({
          kind: { type: 'string', id: 1 }, file: { type: 'string', id: 2 }, offset: { type: 'int64', id: 3 }, length: { type: 'int64', id: 4 },
          sha256: { type: 'string', id: 5 }, dtype: { type: 'int32', id: 6 }, shape: rep('int64', 7), name: { type: 'string', id: 8 },
        }),
        NodeDef: msg({
          name: { type: 'string', id: 1 }, op: { type: 'string', id: 2 }, inputs: rep('sint32', 3), outputs: rep('int32', 4),
          attrs: { type: 'string', id: 5 }, phase: { type: 'string', id: 6 }, stage: { type: 'int32', id: 7 },
        }),
        Slot: msg({ value: { type: 'int32', id: 1 }, offset: { type: 'int64', id: 2 }, bytes: { type: 'int64', id: 3 } }),
        WorkspaceDef: msg({ bytes: { type: 'int64', id: 1 }, slots: rep('Slot', 2) }),
        StageDef: msg({
          index: { type: 'int32', id: 1 }, ppRank: { type: 'int32', id: 2 }, forward: rep('int32', 3), backwardB: rep('int32', 4), backwardW: rep('int32', 5),
          params: rep('int32', 6), forwardWorkspace: { type: 'WorkspaceDef', id: 7 }, backwardBWorkspace: { type: 'WorkspaceDef', id: 8 },
          backwardWWorkspace: { type: 'WorkspaceDef', id: 9 }, fwdMs: { type: 'double', id: 10 }, bMs: { type: 'double', id: 11 }, wMs: { type: 'double', id: 12 },
          grads: rep('Pair', 13), states: rep('Pair', 14),
        }),
        TensorDef: msg({
          id: { type: 'int32', id: 1 }, value: { type: 'int32', id: 2 }, fromStage: { type: 'int32', id: 3 }, toStage: { type: 'int32', id: 4 },
          direction: { type: 'string', id: 5 }, bytes: { type: 'int64', id: 6 },
        }),
        GroupDef: msg({ id: { type: 'int32', id: 1 }, kind: { type: 'string', id: 2 }, ranks: rep('int32', 3) }),
        BucketDef: msg({
          id: { type: 'int32', id: 1 }, group: { type: 'int32', id: 2 }, params: rep('int32', 3), bytes: { type: 'int64', id: 4 },
          scale: { type: 'double', id: 5 }, stage: { type: 'int32', id: 6 },
        }),
        InstructionDef: msg({
          kind: { type: 'int32', id: 1 }, stage: { type: 'sint32', id: 2 }, mb: { type: 'sint32', id: 3 }, tensor: { type: 'sint32', id: 4 },
          peer: { type: 'sint32', id: 5 }, bucket: { type: 'sint32', id: 6 }, group: { type: 'sint32', id: 7 },
          startMs: { type: 'double', id: 8 }, endMs: { type: 'double', id: 9 },
        }),
        AllocationDef: msg({
          what: { type: 'string', id: 1 }, offset: { type: 'int64', id: 2 }, bytes: { type: 'int64', id: 3 }, first: { type: 'int32', id: 4 }, last: { type: 'int32', id: 5 },
        }),
        RankDef: msg({
          rank: { type: 'int32', id: 1 }, ppRank: { type: 'int32', id: 2 }, dpRank: { type: 'int32', id: 3 }, instructions: rep('InstructionDef', 4),
          arenaBytes: { type: 'int64', id: 5 }, allocations: rep('AllocationDef', 6), bubble: { type: 'double', id: 7 },
        }),
        Prediction: msg({ stepMs: { type: 'double', id: 1 }, pipelineMs: { type: 'double', id: 2 } }),
      },
    },
  },
};

const root = protobuf.Root.fromJSON(descriptor as protobuf.INamespace);
export const PlanProto = root.lookupType('cleave.Plan');
/** File magic: a plan starts with these bytes, then the protobuf message. */
export const PLAN_MAGIC = new TextEncoder().encode('CLEAVEPLAN\n');
