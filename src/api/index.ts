// cleave's public API: SMP's training-script flow, and the model builder.
export * from './smp.js';
export { ModelBuilder } from './builder.js';
export { tensor } from '../ir/tensor.js';
export type { Tensor } from '../ir/tensor.js';
