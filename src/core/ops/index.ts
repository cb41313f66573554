// The explicit list of every op cleave knows. Importing this module registers them once.
import { ATTENTION_OPS } from './attention.js';
import { CONV_OPS } from './conv.js';
import { EINSUM_OPS } from './einsum.js';
import { ELEMENTWISE_OPS } from './elementwise.js';
import { GATED_OPS } from './gated.js';
import { GATHERND_OPS } from './gathernd.js';
import { GRAD_OPS } from './gradops.js';
import { LINALG_OPS } from './linalg.js';
import { LOSS_OPS } from './loss.js';
import { MOVEMENT_OPS } from './movement.js';
import { NORM_OPS } from './norm.js';
import { POSITIONAL_OPS } from './positional.js';
import { REDUCE_OPS } from './reduce.js';
import { GRADIENTS } from './gradients.js';
import { registerGradients, registerOps } from './registry.js';
import { SHAPE_OPS } from './shapeops.js';
import { SOFTMAX_OPS } from './softmax.js';

registerOps([
  ...ELEMENTWISE_OPS, ...MOVEMENT_OPS, ...SHAPE_OPS, ...REDUCE_OPS, ...LINALG_OPS,
  ...SOFTMAX_OPS, ...NORM_OPS, ...CONV_OPS, ...LOSS_OPS, ...GRAD_OPS, ...ATTENTION_OPS, ...POSITIONAL_OPS,
  ...GATED_OPS, ...EINSUM_OPS,
  ...GATHERND_OPS,
]);
registerGradients(GRADIENTS);

export { allOps, checkAttrs, findOp, flagAttr, getOp, normalizeAttrs } from './registry.js';
export type { Cost, OpContext, OpDef, LiftedInput, AttrConstraints, AttrSpec, AttrType, GradContext, GradRule, OpEmitter } from './registry.js';
