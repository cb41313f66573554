// cleave's public API: SMP's training-script flow, the nn module library, and the model builder.
export * from './smp.js';
export { ModelBuilder } from '../../core/ir/builder.js';
export { tensor } from '../../core/ir/tensor.js';
export type { Tensor } from '../../core/ir/tensor.js';
export * as nn from './nn/index.js';
// SMP's `smp.partition(i)`, beside the rest of the script API.
export { partition } from './nn/partition.js';
export type { SmpConfig } from './config.js';
export type { ModelConfig, TraceConfig } from './first_step.js';
