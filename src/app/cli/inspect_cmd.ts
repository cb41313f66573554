import type { Command } from 'commander';
import { exporterMadeParams, frozenBuffers, importOnnx, unsupportedError } from '../../../compiler/onnx/import.js';
import { type FusionReport, emptyFusionReport, fuseForward } from '../../../compiler/passes/fusions.js';
import { printGraph } from '../../core/ir/print.js';
import { inspectModel, renderInspect } from './inspect.js';
import { renderFusions } from './fusions.js';
import { dimBinding, positiveInt } from './options.js';

/** What compile's forward fusions do to the model (the training-only folds into products come after autodiff). */
function forwardFusions(model: string, batch: number, dims: Record<string, number> | undefined): FusionReport {
  const g = importOnnx(model, { batch, dims });
  const r = emptyFusionReport(frozenBuffers(g), exporterMadeParams(g));
  fuseForward(g, r);
  return r;
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('summarize an ONNX model: inputs, outputs, parameters, ops and FLOPs, scopes, unsupported ops')
    .argument('<model>', 'ONNX model file')
    .option('--batch <n>', 'size of the symbolic batch dimension', positiveInt('--batch'), 1)
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding)
    .option('--graph', 'also print the imported graph, one line per node')
    .option('--fusions', 'also say what the forward fusions do to it: each rule with its count, the buffers kept constant, and what stays unfused and why')
    .option('--json', 'print the report as JSON')
    .action((model: string, o: { batch: number; dim?: Record<string, number>; graph?: boolean; fusions?: boolean; json?: boolean }) => {
      const report = inspectModel(model, { batch: o.batch, dims: o.dim });
      const err = report.unsupported.length ? unsupportedError(report.unsupported, model) : undefined;
      const fusions = o.fusions && !err ? forwardFusions(model, o.batch, o.dim) : undefined;
      if (o.json) {
        // One object: the report with the error that ends the command beside it.
        const full = { ...report, ...(fusions ? { fusions } : {}) };
        process.stdout.write(JSON.stringify(err ? { ...full, error: { message: err.message, exitCode: 2, internal: false } } : full, null, 2) + '\n');
        if (err) err.inJsonReport = true;
      } else {
        process.stdout.write(renderInspect(report));
        if (fusions) process.stdout.write(`\n${renderFusions(fusions).join('\n')}\n`);
      }
      if (o.graph && !err) process.stdout.write('\n' + printGraph(importOnnx(model, { batch: o.batch, dims: o.dim })));
      if (err) throw err;
    });
}
