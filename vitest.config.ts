import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

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
  },
});
