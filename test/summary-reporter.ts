import type { Reporter, TestModule } from 'vitest/node';

/**
 * Ends the run with one plain line, 'N passed, N failed, N skipped', that any CI can read, and says
 * how many of the skipped are GPU tests (test/gpu/ skips itself where no GPU or addon exists).
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const count = { passed: 0, failed: 0, skipped: 0, gpu: 0 };
    for (const m of modules) {
      const gpuModule = /[\\/]test[\\/]gpu[\\/]/.test(m.moduleId);
      for (const t of m.children.allTests()) {
        const s = t.result().state;
        if (s === 'passed') count.passed++;
        else if (s === 'failed') count.failed++;
        else {
          count.skipped++;
          if (gpuModule) count.gpu++;
        }
      }
      // A module that failed to load has no tests but must not pass silently.
      if (m.state() === 'failed' && !m.children.size) count.failed++;
    }
    const why = count.gpu === 0 ? '' : count.gpu === count.skipped ? ` (all GPU tests: no usable GPU here)` : ` (${count.gpu} of them GPU tests: no usable GPU here)`;
    process.stdout.write(`\nvitest: ${count.passed} passed, ${count.failed} failed, ${count.skipped} skipped${why}\n`);
  }
}
