import type { Command } from 'commander';
import { importOnnx, unsupportedError } from '../../compiler/onnx/import.js';
import { printGraph } from '../ir/print.js';
import { inspectModel, renderInspect } from './inspect.js';
import { dimBinding, positiveInt } from './options.js';

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('summarize an ONNX model: inputs, outputs, parameters, ops and FLOPs, scopes, unsupported ops')
    .argument('<model>', 'ONNX model file')
    .option('--batch <n>', 'size of the symbolic batch dimension', positiveInt('--batch'), 1)
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding)
    .option('--graph', 'also print the imported graph, one line per node')
    .option('--json', 'print the report as JSON')
    .action((model: string, o: { batch: number; dim?: Record<string, number>; graph?: boolean; json?: boolean }) => {
      const report = inspectModel(model, { batch: o.batch, dims: o.dim });
      const err = report.unsupported.length ? unsupportedError(report.unsupported, model) : undefined;
      if (o.json) {
        // One object: the report with the error that ends the command beside it.
        process.stdout.write(JSON.stringify(err ? { ...report, error: { message: err.message, exitCode: 2, internal: false } } : report, null, 2) + '\n');
        if (err) err.inJsonReport = true;
      } else process.stdout.write(renderInspect(report));
      if (o.graph && !err) process.stdout.write('\n' + printGraph(importOnnx(model, { batch: o.batch, dims: o.dim })));
      if (err) throw err;
    });
}
