import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The slowest files, slowest first (seconds in the suite on 2 cores). They start first, so that
 * none of them starts last and runs alone while the other core has nothing left: vitest orders
 * files by their last durations only where its cache has them, and CI's clean install has none
 * (it would order by file size, and some of the slowest files are among the smallest).
 */
const SLOWEST = [
  'test/runtime/distributed.test.ts', // 80
  'test/api/traced_training.test.ts', // 80
  'test/runtime/cuda_emulated.test.ts', // 70
  'test/fuzz/fuzz.test.ts', // 50
  'test/runtime/run.test.ts', // 45
  'test/runtime/train.test.ts', // 35
  'test/runtime/cuda_multirank_emulated.test.ts', // 30
  'test/cli/trust_process.test.ts', // 22
  'test/autodiff/fixtures.test.ts', // 21
  'test/compiler/hf_fusion.test.ts', // 15
  'test/onnx/hf_models.test.ts', // 15
];

class SlowestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification): number => {
      const i = SLOWEST.findIndex((s) => f.moduleId.replace(/\\/g, '/').endsWith(s));
      return i < 0 ? SLOWEST.length : i;
    };
    // A stable sort: the other files keep vitest's order (failed first, then longest or largest).
    return [...(await super.sort(files))].sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    // onnxruntime-node's native sessions are safest in forked workers.
    pool: 'forks',
    // One test file per core: vitest's default leaves one core idle (cores − 1), which on a 2-core CI
    // machine runs the files one at a time, while most of a file's time is one thread's.
    maxWorkers: availableParallelism(),
    reporters: ['default', './test/summary-reporter.ts'],
    sequence: { sequencer: SlowestFirst },
  },
});
