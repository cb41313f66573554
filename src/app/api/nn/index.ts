// cleave's module library: models written in TypeScript, traced into the IR.
export { Module, Sequential, type Layer } from './module.js';
export { Operand, SymTensor, Parameter, State, type TensorLike, op, opN, constant, where, concat } from './tensor.js';
export { partition } from './partition.js';
export { trace, exportOnnx, type InputSpec, type Model, type ForwardOutput, type TraceOptions } from './trace.js';
export { checkStageOrder } from './stages.js';
export { Linear, Embedding, type LinearOptions } from './linear.js';
export { LayerNorm, BatchNorm2d } from './norm.js';
export { Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, type Conv2dOptions, type PoolOptions, type Size2 } from './conv.js';
export { ReLU, GELU, Tanh, Sigmoid, Dropout } from './activation.js';
export { CausalSelfAttention, type AttentionOptions } from './attention.js';
export { Mlp, TransformerBlock, GPT, type MlpOptions, type BlockOptions, type GptOptions } from './transformer.js';
export type { ModelSpec } from '../model_file.js';
