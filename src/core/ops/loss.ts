import { CleaveError } from '../errors.js';
import type { ValueType } from '../ir/graph.js';
import { formatShape } from '../ir/shape.js';
import { roundToDtype, tensor } from '../ir/tensor.js';
import type { OpContext, OpDef } from './registry.js';
import { elems, input, moved, requireFloat, str } from './util.js';

const at = (ctx: OpContext): string => `node '${ctx.node}'`;

/** scores [N, C, d1…], labels [N, d1…]: mean/sum/none of −log softmax at the label, with ignore_index and class weights. */
const softmaxCrossEntropy: OpDef = {
  op: 'SoftmaxCrossEntropyLoss', since: 13, category: 'loss', arity: [2, 3], outputs: [1, 2],
  attrs: { ignore_index: { type: 'int', optional: true }, reduction: { type: 'string', default: 'mean', oneOf: ['mean', 'sum', 'none'] } },
  infer(ctx) {
    const s = input(ctx, 0), l = input(ctx, 1);
    requireFloat(ctx, s.dtype);
    if (l.dtype !== 'int64' && l.dtype !== 'int32') throw new CleaveError(`${at(ctx)}: labels must be int32 or int64, got ${l.dtype}`);
    const want = [s.shape[0]!, ...s.shape.slice(2)];
    if (s.shape.length < 2 || l.shape.length !== want.length || l.shape.some((d, i) => d !== want[i] && typeof d === 'number' && typeof want[i] === 'number')) {
      throw new CleaveError(`${at(ctx)}: labels ${formatShape(l.shape)} do not match scores ${formatShape(s.shape)} (expected ${formatShape(want)})`);
    }
    const w = ctx.inputs[2];
    if (w && (w.shape.length !== 1 || w.shape[0] !== s.shape[1])) throw new CleaveError(`${at(ctx)}: weights ${formatShape(w.shape)} must be [${s.shape[1]}]`);
    const red = str(ctx.attrs, 'reduction');
    if (!['mean', 'sum', 'none'].includes(red)) throw new CleaveError(`${at(ctx)}: reduction '${red}' is not one of mean, sum, none`);
    const out: ValueType[] = [{ dtype: s.dtype, shape: red === 'none' ? l.shape : [] }, s];
    return out.slice(0, ctx.numOutputs);
  },
  cost: (ctx, outs) => ({ flops: 6 * elems(input(ctx, 0)), bytes: moved(ctx, outs) }),
  cuda(dev, [s, l, w], outs, attrs) {
    const red = str(attrs, 'reduction');
    if (w || red === 'none' || outs.length > 1 || s!.shape.length !== 2) {
      throw new CleaveError('SoftmaxCrossEntropyLoss on CUDA takes [rows, classes] scores, no weights, mean or sum, and gives the loss only');
    }
    dev.crossEntropy(s!, l!, outs[0]!, red === 'mean', attrs['ignore_index'] as number | undefined);
  },
  cpu([scores, labels, weights], attrs) {
    const s = scores!, l = labels!;
    const N = s.shape[0]!, C = s.shape[1]!;
    const inner = s.shape.slice(2).reduce((a, b) => a * b, 1);
    const ignore = attrs['ignore_index'] as number | undefined;
    const red = str(attrs, 'reduction');
    const logp = tensor(s.dtype, s.shape);
    const loss = tensor(s.dtype, l.shape);
    let total = 0, wsum = 0;
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < inner; i++) {
        let mx = -Infinity;
        for (let c = 0; c < C; c++) mx = Math.max(mx, s.data[(n * C + c) * inner + i]!);
        let sum = 0;
        for (let c = 0; c < C; c++) sum += Math.exp(s.data[(n * C + c) * inner + i]! - mx);
        const lse = mx + Math.log(sum);
        for (let c = 0; c < C; c++) logp.data[(n * C + c) * inner + i] = s.data[(n * C + c) * inner + i]! - lse;
        const y = l.data[n * inner + i]!;
        if (y === ignore) continue;
        if (y < 0 || y >= C) throw new CleaveError(`SoftmaxCrossEntropyLoss: label ${y} is out of range for ${C} classes`);
        const w = weights ? weights.data[y]! : 1;
        const v = -w * logp.data[(n * C + y) * inner + i]!;
        loss.data[n * inner + i] = v;
        total += v;
        wsum += w;
      }
    }
    const out = red === 'none' ? loss : tensor(s.dtype, [], [red === 'sum' ? total : wsum ? total / wsum : 0]);
    return [roundToDtype(out), roundToDtype(logp)];
  },
};

export const LOSS_OPS: OpDef[] = [softmaxCrossEntropy];
