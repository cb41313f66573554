import { describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { cudaEnvironment } from '../../runtime/launch/cuda_rank.js';
import { fixturePath } from '../helpers/fixtures.js';

// Interleaved at pp 4: the last rank exchanges tensors with the other ranks and shares the tied
// embedding's group with rank 0, which is more streams than CUDA's default 8 hardware queues (the
// plan that deadlocked on 4 GPUs).
const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 4, microbatches: 4, schedule: 'interleaved-1f1b', virtualStages: 2, batch: 8 }).plan;

describe('the CUDA settings of a multi-GPU rank', () => {
  it('asks for lazy module loading (the rank preloads its kernels) and CUDA\'s 32 hardware queues when unset', () => {
    const env: NodeJS.ProcessEnv = {};
    cudaEnvironment(plan, 3, env);
    expect(env['CUDA_DEVICE_MAX_CONNECTIONS']).toBe('32');
    expect(env['CUDA_MODULE_LOADING']).toBe('LAZY');
  });

  it('keeps EAGER or LAZY as set (LAZY: the rank preloads its kernels), and refuses anything else, naming the variable', () => {
    for (const v of ['eager', 'LAZY']) {
      const env: NodeJS.ProcessEnv = { CUDA_MODULE_LOADING: v };
      cudaEnvironment(plan, 0, env);
      expect(env['CUDA_MODULE_LOADING']).toBe(v.toUpperCase());
    }
    expect(() => cudaEnvironment(plan, 0, { CUDA_MODULE_LOADING: 'SOMETIMES' })).toThrow(/CUDA_MODULE_LOADING=SOMETIMES: CUDA knows EAGER and LAZY/);
  });

  it('keeps a setting that covers the rank\'s streams', () => {
    const env: NodeJS.ProcessEnv = { CUDA_DEVICE_MAX_CONNECTIONS: '16' };
    cudaEnvironment(plan, 3, env);
    expect(env['CUDA_DEVICE_MAX_CONNECTIONS']).toBe('16');
  });

  it('refuses a setting with fewer queues than streams, naming the variable and the count', () => {
    expect(() => cudaEnvironment(plan, 3, { CUDA_DEVICE_MAX_CONNECTIONS: '8' })).toThrow(/CUDA_DEVICE_MAX_CONNECTIONS=8 gives rank 3 too few hardware queues: its plan runs 9 streams \(compute, 5 rank pairs, 1 group, NCCL's 2\).*set 9 or more/);
    expect(() => cudaEnvironment(plan, 0, { CUDA_DEVICE_MAX_CONNECTIONS: '1' })).toThrow(/CUDA_DEVICE_MAX_CONNECTIONS=1 gives rank 0 too few/);
    expect(() => cudaEnvironment(plan, 0, { CUDA_DEVICE_MAX_CONNECTIONS: 'many' })).toThrow(/CUDA_DEVICE_MAX_CONNECTIONS=many/);
  });
});
