import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    // onnxruntime-node's native sessions are safest in forked workers.
    pool: 'forks',
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
