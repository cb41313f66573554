// Real Hugging Face models (fixtures/hf), compiled with their fusions (attention, rotary embedding,
// RMSNorm), trained by the CUDA rank backend on the host emulation of the addon against the CPU
// ranks: the CUDA side of every fused node these models get, without a GPU. test/gpu runs the
// kernels themselves on the device.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { prepareJob } from '../../src/app/api/train/job.js';
import { writePlan } from '../../src/core/plan/io.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { lossesOnEmulatedCuda } from '../helpers/emulated_run.js';

// Llama: grouped-query attention, rotary embedding and RMSNorm, each fused (GPT-2's masked ONNX
// Attention fuses to the same FusedAttention node; test/compiler/hf_fusion.test.ts checks it).
describe.each(['llama_dynamo18'])('%s on the CUDA rank backend (host emulation)', (name) => {
  it('trains with the CPU ranks\' losses (float32 ≤ 1e-4, bf16 ≤ 3e-2)', async () => {
    const model = join(FIXTURES, 'hf', `${name}.onnx`);
    const dir = mkdtempSync(join(tmpdir(), 'cleave-hf-emulated-'));
    try {
      const opt = { kind: 'adamw' as const, lr: 1e-3 };
      const job = prepareJob({ model, loss: 'auto', steps: 2, batch: 4, microbatches: 2, optimizer: opt, seed: 3 });
      const batches = Array.from({ length: 2 }, () => job.data.next(4));
      const run = { data: { kind: 'batches' as const, batches }, steps: 2, optimizer: opt };
      const losses: Record<string, number[]> = {};
      for (const policy of ['fp32', 'bf16'] as const) {
        const planFile = join(dir, `${policy}.plan`);
        const { plan: compiled } = compile({ model, loss: 'auto', partitions: 1, microbatches: 2, schedule: '1f1b', batch: 4, policy });
        for (const op of ['FusedAttention', 'RotaryEmbedding', 'RMSNormalization']) {
          const want = name.startsWith('gpt2') ? op === 'FusedAttention' : op !== 'RMSNormalization' || name.startsWith('llama');
          expect(compiled.nodes.some((n) => n.op === op), `${policy}: ${op} in the plan`).toBe(want);
        }
        writePlan(planFile, compiled);
        if (policy === 'fp32') losses['cpu'] = (await runPlanCpu({ planFile, ...run })).steps.map((s) => s.loss);
        const emulated = await lossesOnEmulatedCuda(planFile, batches, run.steps, opt);
        losses[policy] = emulated.losses;
        expect(emulated.liveBlocks, `${policy}: device memory left allocated`).toBe(0);
      }
      const tol: Record<string, number> = { fp32: 1e-4, bf16: 3e-2 };
      losses['cpu']!.forEach((l, i) => {
        for (const [p, t] of Object.entries(tol)) expect(Math.abs(losses[p]![i]! - l) / l, `${p} step ${i + 1}`).toBeLessThanOrEqual(t);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
