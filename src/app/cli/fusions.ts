import type { FusionReport } from '../../../compiler/passes/fusions.js';
import { table } from '../../core/util/format.js';

/** The fusion report as lines: what each rule did, the buffers made constants, what stayed unfused and why. */
export function renderFusions(r: FusionReport): string[] {
  const out: string[] = [];
  const fused = r.rules.filter((x) => x.count > 0);
  out.push(fused.length ? 'fusions' : 'fusions: none applied');
  if (fused.length) out.push(table(['rule', 'count'], fused.map((x) => [x.rule, String(x.count)])));
  if (r.frozen.length) {
    out.push(`buffers: ${r.frozen.length} initializer${r.frozen.length > 1 ? 's' : ''} the exporter folded from buffers, kept constant (not trained)`);
    out.push(table(['initializer', 'recognised as'], r.frozen.map((f) => [f.name, f.role])));
  }
  if (r.unfused.length) {
    out.push(`not fused: ${r.unfused.length} attention-like softmax${r.unfused.length > 1 ? 'es' : ''}`);
    out.push(table(['node', 'why'], r.unfused.map((u) => [u.node, u.reason])));
  } else out.push('not fused: nothing attention-like left');
  if (r.folded.length) {
    const shown = r.folded.slice(0, 6).join(', ') + (r.folded.length > 6 ? `, … (${r.folded.length - 6} more)` : '');
    out.push(`note: ${r.folded.length} parameter${r.folded.length > 1 ? 's are' : ' is'} not the model's own but the exporter's folding of them (${shown}); cleave trains them as they are, which is the model's training only where the fold was a transpose or a cast. An export with torch.onnx.export(..., dynamo=True, optimize=False), or do_constant_folding=False for the TorchScript exporter, keeps the model's own parameters`);
  }
  return out;
}
