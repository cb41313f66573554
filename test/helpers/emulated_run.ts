import { Cuda } from '../../runtime/backends/cuda/device.js';
import { CudaRankBackend } from '../../runtime/backends/cuda/rank_backend.js';
import { planWeights, runOnBackend } from '../../runtime/launch/cuda.js';
import type { OptimizerConfig } from '../../runtime/optim/optimizer.js';
import { readPlan } from '../../src/core/plan/io.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { HostCuda } from './host_cuda.js';

/**
 * Trains a one-rank plan file on the CUDA rank backend over the host emulation of the addon, on
 * the given batches; returns the losses and how many device blocks were left allocated (0 expected).
 */
export async function lossesOnEmulatedCuda(planFile: string, batches: Record<string, Tensor>[], steps: number, optimizer: OptimizerConfig): Promise<{ losses: number[]; liveBlocks: number }> {
  const plan = readPlan(planFile);
  const host = new HostCuda();
  const backend = new CudaRankBackend(plan, 0, planWeights(plan), optimizer, new Cuda(host.native));
  const run = await runOnBackend(backend, { planFile, data: { kind: 'batches', batches }, steps, optimizer });
  return { losses: run.steps.map((s) => s.loss), liveBlocks: host.liveBlocks };
}
