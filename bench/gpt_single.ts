// One-GPU training step of a GPT (default: 24 layers, d 2048, 16 heads, seq 1024, vocab 50304,
// GELU-tanh MLP of 4d, untied LM head, bf16 compute with float32 master weights, AdamW,
// microbatch 4 × 8 microbatches), built by cleave's model builder with random weights; then the
// same model in PyTorch (eager and torch.compile) on the same card, in the same run.
//
//   node dist/bench/gpt_single.js [--layers 24] [--dim 2048] [--heads 16] [--seq 1024] [--vocab 50304]
//                                 [--micro 4] [--microbatches 8] [--steps 4] [--profile] [--no-compile] [--no-graph] [--no-torch]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compile } from '../compiler/compile.js';
import { benchGpt, randomWeights } from './gpt_model.js';
import { cudaAvailable } from '../runtime/backends/cuda/native.js';
import { runWithWeights } from '../runtime/launch/cuda.js';
import { table } from '../src/core/util/format.js';
import { parameterStats } from '../src/core/ir/stats.js';
import '../src/core/ops/index.js';

const arg = (k: string, d: number): number => {
  const i = process.argv.indexOf(`--${k}`);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};
const cfg = { layers: arg('layers', 24), dim: arg('dim', 2048), heads: arg('heads', 16), seq: arg('seq', 1024), vocab: arg('vocab', 50304), micro: arg('micro', 4), m: arg('microbatches', 8), steps: arg('steps', 4) };
const profile = process.argv.includes('--profile');
// torch.compile's first compile takes minutes: skippable where device time is short.
const withCompile = !process.argv.includes('--no-compile');
const withGraph = !process.argv.includes('--no-graph');
const withTorch = !process.argv.includes('--no-torch');
if (!cudaAvailable()) {
  console.log('no CUDA device: this benchmark runs on a GPU host');
  process.exit(0);
}

const g = benchGpt(cfg);
const params = parameterStats(g).count;
const weights = randomWeights(g);
const log = (m: string): void => void process.stderr.write(`[${(performance.now() / 1000).toFixed(1)} s] ${m}\n`);
log(`weights ready: ${(params / 1e9).toFixed(2)} B parameters`);
const dir = mkdtempSync(join(tmpdir(), 'cleave-bench-'));
const { plan } = compile({ model: 'gpt-bench', graph: g, loss: { kind: 'cross-entropy' }, partitions: 1, microbatches: cfg.m, schedule: '1f1b', batch: cfg.m * cfg.micro, policy: 'bf16', device: 'h200' });
const planFile = join(dir, 'gpt.plan');
const { writePlan } = await import('../src/core/plan/io.js');
writePlan(planFile, plan);
const fused = plan.nodes.filter((n) => n.op === 'FusedAttention').length;
log(`plan compiled: ${plan.nodes.length} nodes, ${fused} fused attentions`);
const tokens = cfg.m * cfg.micro * cfg.seq;
// Training FLOPs: 6 per parameter per token, plus attention's 12·L·T·d per token (fwd + bwd).
const flops = 6 * params * tokens + 12 * cfg.layers * cfg.seq * cfg.dim * tokens;
const rows: string[][] = [];
// Three ways to enqueue the same kernels. JS per node: every node dispatched from JavaScript each
// step. Launch lists (the default): step 1 eager, step 2 recorded per instruction into the step
// arena, then one launch per instruction. CUDA graph: step 1 eager, step 2 captured whole, then
// one launch per step.
const modes = [
  { name: 'JS per node', lists: false, graph: false, warm: 1 },
  { name: 'launch lists', lists: true, graph: false, warm: 2 },
  ...(withGraph ? [{ name: 'CUDA graph', lists: false, graph: true, warm: 2 }] : []),
];
for (const mode of modes) {
  const run = await runWithWeights(plan, weights, { planFile, data: { kind: 'default' }, steps: cfg.steps + mode.warm - 1, optimizer: { kind: 'adamw', lr: 1e-4, weightDecay: 0.1 }, cudaGraph: mode.graph, launchLists: mode.lists },
    (r) => log(`${mode.name} step ${r.step}: loss ${r.loss.toFixed(3)}`));
  log(`cleave ${mode.name} steps (ms): ${run.stepMs.map((x) => x.toFixed(0)).join(', ')}`);
  const steady = run.stepMs.slice(mode.warm);
  const ms = steady.length ? steady.reduce((a, b) => a + b, 0) / steady.length : run.stepMs.at(-1)!;
  rows.push([`cleave ${mode.name} (bf16, ${fused} fused attentions)`, ms.toFixed(1), (tokens / ms * 1000).toFixed(0), (flops / ms / 1e9).toFixed(1), (run.peakBytes / 2 ** 30).toFixed(1), run.steps.at(-1)!.loss.toFixed(3)]);
}

let breakdown = '';
if (profile) {
  const { profileWithWeights } = await import('../runtime/launch/profile.js');
  const { byOp } = await profileWithWeights(plan, weights, { steps: 1, warmup: 1 });
  const total = byOp.reduce((a, b) => a + b.ms, 0);
  breakdown = `\nwhere a step's forward and backward time goes (each node synchronized and timed):\n` + table(['op', 'launches', 'ms', 'share'],
    byOp.slice(0, 20).map((x) => [x.op, String(x.launches), x.ms.toFixed(1), `${((100 * x.ms) / total).toFixed(1)}%`]));
}

const py = `
import math, time, torch, torch.nn as nn, torch.nn.functional as F
L, D, H, T, V, B, M = ${cfg.layers}, ${cfg.dim}, ${cfg.heads}, ${cfg.seq}, ${cfg.vocab}, ${cfg.micro}, ${cfg.m}
class Block(nn.Module):
    def __init__(s):
        super().__init__(); s.ln1 = nn.LayerNorm(D); s.qkv = nn.Linear(D, 3 * D); s.proj = nn.Linear(D, D)
        s.ln2 = nn.LayerNorm(D); s.fc = nn.Linear(D, 4 * D); s.out = nn.Linear(4 * D, D)
    def forward(s, x):
        b, t, c = x.shape
        q, k, v = s.qkv(s.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, H, c // H).transpose(1, 2) for z in (q, k, v))
        if SDPA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(c // H)
            att = att.masked_fill(torch.ones(t, t, device=x.device, dtype=torch.bool).triu(1), float('-inf'))
            y = F.softmax(att, dim=-1) @ v
        y = y.transpose(1, 2).reshape(b, t, c)
        x = x + s.proj(y)
        return x + s.out(F.gelu(s.fc(s.ln2(x)), approximate='tanh'))
class GPT(nn.Module):
    def __init__(s):
        super().__init__(); s.wte = nn.Embedding(V, D); s.wpe = nn.Embedding(T, D)
        s.h = nn.ModuleList([Block() for _ in range(L)]); s.ln = nn.LayerNorm(D); s.head = nn.Linear(D, V, bias=False)
    def forward(s, idx, y):
        x = s.wte(idx) + s.wpe(torch.arange(T, device=idx.device))
        for b in s.h: x = b(x)
        return F.cross_entropy(s.head(s.ln(x)).view(-1, V), y.view(-1))
SDPA = True
def bench(compiled, label):
    torch.manual_seed(0)
    model = GPT().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    fwd = torch.compile(model) if compiled else model
    idx = torch.randint(0, V, (B, T), device='cuda'); y = torch.randint(0, V, (B, T), device='cuda')
    def step():
        opt.zero_grad(set_to_none=True)
        for _ in range(M):
            with torch.autocast('cuda', dtype=torch.bfloat16):
                loss = fwd(idx, y) / M
            loss.backward()
        opt.step()
    for _ in range(2): step()
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); t = time.perf_counter(); n = 3
    for _ in range(n): step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / n * 1e3
    print(f"{label}|{ms:.1f}|{torch.cuda.max_memory_allocated() / 2**30:.1f}")
    del model, opt
    torch.cuda.empty_cache()
bench(False, 'eager, SDPA flash attention')
if ${withCompile ? 'True' : 'False'}: bench(True, 'torch.compile, SDPA')
SDPA = False
bench(False, 'eager, attention written out')
`;
log('PyTorch (bf16 autocast, fused AdamW): eager with SDPA, torch.compile, eager with attention written out');
const r = withTorch ? spawnSync('python3', ['-c', py], { encoding: 'utf8', timeout: 400_000 }) : { stdout: '', stderr: '', status: 0 };
for (const line of (r.stdout ?? '').trim().split('\n').filter(Boolean)) {
  const [kind, msS, mem] = line.split('|');
  const pms = Number(msS);
  rows.push([`PyTorch ${kind}`, pms.toFixed(1), (tokens / pms * 1000).toFixed(0), (flops / pms / 1e9).toFixed(1), mem!, '—']);
}
if (r.status !== 0) rows.push(['PyTorch', `not run: ${(r.stderr || '').trim().split('\n').at(-1)}`, '', '', '', '']);
const { nativeCuda } = await import('../runtime/backends/cuda/native.js');
const info = nativeCuda()!.info()!;
console.log(`GPT ${cfg.layers} layers, d ${cfg.dim}, ${cfg.heads} heads, seq ${cfg.seq}, vocab ${cfg.vocab}: ${(params / 1e9).toFixed(2)} B parameters; step = ${cfg.m} microbatches × ${cfg.micro} = ${tokens} tokens`);
console.log(`card: ${info.name}, ${(info.memoryBytes / 2 ** 30).toFixed(0)} GiB\n`);
console.log(table(['runtime', 'step ms', 'tokens/s', 'TFLOP/s', 'peak GiB', 'loss'], rows));
if (breakdown) console.log(breakdown);
writeFileSync(join(dir, 'done'), '');
