"""PyTorch's own pipeline parallelism on the benchmark GPT, as the peer of cleave's pipelined step.

The model is the one bench/gpt_single.ts trains on one GPU (learned position embedding, pre-LN
blocks with causal SDPA attention and a GELU-tanh MLP of 4d, final LayerNorm, untied LM head,
bf16 autocast over float32 weights, fused AdamW), cut by hand into stages and run with
torch.distributed.pipelining: ScheduleGPipe, Schedule1F1B (one stage per rank),
ScheduleInterleaved1F1B (two stages per rank, round-robin) or ScheduleZBVZeroBubble (two stages per
rank in a V). Needs PyTorch 2.6 or later for ZBV (2.4 for the others), CUDA and NCCL; one process
per GPU:

    torchrun --nproc-per-node 4 bench/torch_pipeline.py --schedule zbv
    torchrun --nproc-per-node 4 bench/torch_pipeline.py --schedule 1f1b --split 7,13,19
    torchrun --nproc-per-node 4 bench/torch_pipeline.py --schedule 1f1b --dp 2
    torchrun --nproc-per-node 8 bench/torch_pipeline.py --schedule interleaved-1f1b --dp 4

--dp D adds data parallelism around the pipeline: the world of W ranks holds D replicas of a
pipeline of W / D ranks, laid out as cleave's `cluster` layout does, a pipeline's ranks adjacent
(global rank = replica * pp + pipeline rank). Each replica trains on its own batch of
micro x microbatches sequences, and after each step's schedule the gradients are averaged over the
D replicas of every stage (bucketed all-reduce) before the optimizer step.

Rank 0 prints one line of JSON on stdout (step time, tokens/s over all replicas, peak memory of
every rank, loss, the card, dp and pp); everything else goes to stderr. On failure rank 0 prints
{"system", "schedule", "error"} and every rank exits non-zero.
"""

import argparse
import inspect
import json
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

SYSTEM = "torch.distributed.pipelining"
SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zbv")

# Library code may print; the harness takes the first stdout line that starts with '{' as the
# result, so everything but that line goes to stderr.
_RESULT_OUT = sys.stdout
sys.stdout = sys.stderr


def log(msg):
    print(f"[torch_pipeline] {msg}", file=sys.stderr, flush=True)


def emit(obj):
    _RESULT_OUT.write(json.dumps(obj) + "\n")
    _RESULT_OUT.flush()


# ---------------------------------------------------------------------------------------------
# Arguments


class _Parser(argparse.ArgumentParser):
    # argparse would exit with usage text only; raising lets main() report it as the JSON error.
    def error(self, message):
        raise ValueError(f"bad arguments: {message}")


def parse_args(argv=None):
    p = _Parser(description=__doc__.split("\n")[0])
    p.add_argument("--schedule", choices=SCHEDULES, default="1f1b")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--micro", type=int, default=4, help="sequences per microbatch")
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--split", type=str, default=None,
                   help="comma-separated layer indices where stages 1..S-1 begin (default: even)")
    p.add_argument("--dp", type=int, default=1,
                   help="data-parallel replicas of the pipeline (the world must be a multiple)")
    return p.parse_args(argv)


def _schedule_from_argv():
    # For the error line when argument parsing itself failed.
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--schedule" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--schedule="):
            return a.split("=", 1)[1]
    return "1f1b"


# ---------------------------------------------------------------------------------------------
# Rank and stage layout
#
# Plain arithmetic, no torch.distributed calls, so it can be checked without GPUs. `pp` below is
# the number of ranks of one pipeline (world // dp), and the `rank` of the stage helpers is the
# rank within that pipeline, not the world rank.


def mesh_coords(rank, world, dp):
    """(replica, pipeline rank, pp) of world rank `rank` with `dp` replicas of the pipeline.

    cleave's `cluster` layout: a pipeline's ranks are adjacent, so world rank = replica * pp +
    pipeline rank (what init_device_mesh's row-major (dp, pp) mesh gives too).
    """
    if dp < 1:
        raise ValueError(f"--dp must be at least 1, got {dp}")
    if world % dp:
        raise ValueError(f"world size {world} is not a multiple of --dp {dp}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    pp = world // dp
    return rank // pp, rank % pp, pp


def world_rank(replica, stage_rank, pp):
    """Inverse of mesh_coords: the world rank of pipeline rank `stage_rank` in `replica`."""
    return replica * pp + stage_rank


def num_stages(schedule, pp):
    return 2 * pp if schedule in ("interleaved-1f1b", "zbv") else pp


def local_stage_indices(schedule, rank, pp):
    """The stages pipeline rank `rank` holds, in increasing order."""
    if schedule == "interleaved-1f1b":
        # Round-robin (the library's 'loop' placement): stage s on rank s % pp.
        return [rank, rank + pp]
    if schedule == "zbv":
        # The V: rank r runs stage r on the way down and stage 2p-1-r on the way back, so rank 0
        # holds both the first and the last stage.
        return [rank, 2 * pp - 1 - rank]
    return [rank]


def rank_of_stage(schedule, stage, pp):
    """The pipeline rank that holds `stage`."""
    if schedule == "zbv":
        return stage if stage < pp else 2 * pp - 1 - stage
    return stage % pp


def grad_buckets(sizes, bucket_bytes):
    """Split tensors of the given byte sizes, in order, into runs of about `bucket_bytes` each.

    Returns lists of indices; a run closes once it reaches the limit, so a tensor bigger than the
    limit gets a bucket of its own and none is empty.
    """
    buckets, cur, cur_bytes = [], [], 0
    for i, size in enumerate(sizes):
        cur.append(i)
        cur_bytes += size
        if cur_bytes >= bucket_bytes:
            buckets.append(cur)
            cur, cur_bytes = [], 0
    if cur:
        buckets.append(cur)
    return buckets


def stage_boundaries(split, layers, stages):
    """Layer index where each stage begins, plus `layers` at the end: stage s runs [b[s], b[s+1])."""
    if split:
        starts = [int(x) for x in split.split(",") if x.strip()]
        if len(starts) != stages - 1:
            raise ValueError(f"--split needs {stages - 1} indices for {stages} stages, got {len(starts)}")
    else:
        starts = [s * layers // stages for s in range(1, stages)]
    bounds = [0] + starts + [layers]
    if any(b < 0 or b > layers for b in starts):
        raise ValueError(f"--split indices must lie in [0, {layers}]: {starts}")
    if any(bounds[i] > bounds[i + 1] for i in range(stages)):
        raise ValueError(f"--split indices must increase: {starts}")
    # A middle stage without blocks would hand its received activation straight back as its
    # output, which the stage's backward cannot treat as a fresh graph output.
    for s in range(1, stages - 1):
        if bounds[s] == bounds[s + 1]:
            raise ValueError(f"stage {s} would hold no layers (split {starts}, {layers} layers)")
    return bounds


# ---------------------------------------------------------------------------------------------
# Model


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class StageModule(nn.Module):
    """One pipeline stage: embeddings if first, blocks, final norm and head if last."""

    def __init__(self, cfg, n_blocks, first, last):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.dim) if first else None
        self.wpe = nn.Embedding(cfg.seq, cfg.dim) if first else None
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads) for _ in range(n_blocks))
        self.ln_f = nn.LayerNorm(cfg.dim) if last else None
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False) if last else None

    def forward(self, x):
        # Autocast lives inside the stage because the schedule, not this script, calls forward;
        # the residual stream stays float32 (fp32 embeddings + bf16 branch outputs promote), so
        # hidden states cross stages in float32 and only the logits come out in bf16.
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if self.wte is not None:
                pos = torch.arange(x.shape[1], device=x.device)
                x = self.wte(x) + self.wpe(pos)
            for block in self.blocks:
                x = block(x)
            if self.head is not None:
                x = self.head(self.ln_f(x))
        return x


def make_loss_fn(vocab):
    def loss_fn(logits, target):
        # Outside autocast here, so upcast as autocast would for log_softmax in the baseline.
        return F.cross_entropy(logits.float().reshape(-1, vocab), target.reshape(-1))

    return loss_fn


def stage_io_meta(cfg, first, last):
    """Example input and output of one microbatch, on the meta device, so no shape inference runs.

    Float ones require grad: newer PipelineStage versions derive the gradient buffers they
    exchange from these flags and would otherwise expect no gradient for the hidden state.
    """
    shape = (cfg.micro, cfg.seq)
    if first:
        inp = torch.empty(shape, dtype=torch.int64, device="meta")
    else:
        inp = torch.empty(shape + (cfg.dim,), dtype=torch.float32, device="meta", requires_grad=True)
    if last:
        out = torch.empty(shape + (cfg.vocab,), dtype=torch.bfloat16, device="meta", requires_grad=True)
    else:
        out = torch.empty(shape + (cfg.dim,), dtype=torch.float32, device="meta", requires_grad=True)
    return inp, out


# ---------------------------------------------------------------------------------------------
# Distributed set-up


def init_distributed():
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    kwargs = {}
    # device_id binds the communicator to this GPU up front (2.3+); older versions lack it.
    if "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = device
    dist.init_process_group("nccl", **kwargs)
    return device, local_rank


def build_groups(dp, pp):
    """(dp group, pp group) of this rank, or (None, None) without data parallelism.

    The (dp, pp) mesh is row-major, so its pp groups are runs of adjacent ranks (one replica's
    pipeline) and its dp groups are the ranks pp apart that hold the same stages. Every rank
    creates every group, in the same order, inside init_device_mesh. With dp == 1 the pipeline is
    the world and no group is made: the stages use the default group as before.
    """
    if dp == 1:
        return None, None
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cuda", (dp, pp), mesh_dim_names=("dp", "pp"))
    return mesh.get_group(mesh_dim="dp"), mesh.get_group(mesh_dim="pp")


def build_stages(cfg, schedule, stage_rank, pp, pp_group, device):
    from torch.distributed.pipelining import PipelineStage

    n = num_stages(schedule, pp)
    bounds = stage_boundaries(cfg.split, cfg.layers, n)
    modules, stages = [], []
    for s in local_stage_indices(schedule, stage_rank, pp):
        first, last = s == 0, s == n - 1
        # Seeded by stage, so a stage's weights do not depend on which rank builds it, and every
        # replica starts from the same weights without a broadcast.
        torch.manual_seed(1 + s)
        with torch.device(device):
            module = StageModule(cfg, bounds[s + 1] - bounds[s], first, last)
        inp, out = stage_io_meta(cfg, first, last)
        # Stage index and count are the pipeline's; with a group, PipelineStage places stages on
        # ranks of that group and maps them to world ranks for its sends and receives.
        stage = PipelineStage(module, s, n, device, input_args=inp, output_args=out, group=pp_group)
        modules.append(module)
        stages.append(stage)
    return modules, stages, bounds, n


def build_schedule(name, stages, microbatches, loss_fn):
    from torch.distributed import pipelining as pp

    if name == "gpipe":
        return pp.ScheduleGPipe(stages[0], n_microbatches=microbatches, loss_fn=loss_fn)
    if name == "1f1b":
        return pp.Schedule1F1B(stages[0], n_microbatches=microbatches, loss_fn=loss_fn)
    if name == "interleaved-1f1b":
        return pp.ScheduleInterleaved1F1B(stages, n_microbatches=microbatches, loss_fn=loss_fn)
    return pp.ScheduleZBVZeroBubble(stages, n_microbatches=microbatches, loss_fn=loss_fn)


# Data-parallel gradient averaging. Chosen over wrapping the stage modules in DDP: PipelineStage
# drives DDP through its internals (no_sync, then reducer.prepare_for_backward before the last
# microbatch's backward), and ZBV's split backward computes weight gradients with
# torch.autograd.grad and writes .grad by hand (stage_backward_weight), so DDP's gradient hooks
# never see them and the reduction would be skipped or left pending. One all-reduce of flattened
# ~25 MiB buckets after schedule.step() works the same for every schedule, and is what cleave does
# (no overlap of the reduction with the last backward, on either side).
DP_BUCKET_BYTES = 25 * 2**20


def make_grad_averager(params, dp_group):
    """A function that averages the .grad of `params` over `dp_group`, or None without one."""
    if dp_group is None:
        return None
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    def average():
        # Every replica of a stage holds the same parameters in the same order and every one of
        # them gets a gradient, so all replicas build the same buckets and issue the same
        # all-reduces in the same order. Buckets keep to one dtype (all float32 here).
        by_dtype = {}
        for p in params:
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for dtype in sorted(by_dtype, key=str):
            grads = by_dtype[dtype]
            sizes = [g.numel() * g.element_size() for g in grads]
            for bucket in grad_buckets(sizes, DP_BUCKET_BYTES):
                tensors = [grads[i] for i in bucket]
                flat = _flatten_dense_tensors(tensors)
                dist.all_reduce(flat, op=dist.ReduceOp.AVG, group=dp_group)
                for g, synced in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
                    g.copy_(synced)

    return average


def sync_all(local_rank):
    # Local GPU work done, then every rank there, then the barrier's own kernel done too.
    torch.cuda.synchronize()
    dist.barrier(device_ids=[local_rank])
    torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# Benchmark


def run(cfg):
    if cfg.dim % cfg.heads:
        raise ValueError(f"--dim {cfg.dim} is not a multiple of --heads {cfg.heads}")
    if cfg.steps < 1 or cfg.warmup < 0:
        raise ValueError("--steps must be at least 1 and --warmup at least 0")

    device, local_rank = init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    # Every rank sees the same world and --dp, so a bad pair fails on all of them alike.
    replica, stage_rank, pp = mesh_coords(rank, world, cfg.dp)
    dp_group, pp_group = build_groups(cfg.dp, pp)

    modules, stages, bounds, n = build_stages(cfg, cfg.schedule, stage_rank, pp, pp_group, device)
    schedule = build_schedule(cfg.schedule, stages, cfg.microbatches, make_loss_fn(cfg.vocab))
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=True)
    average_grads = make_grad_averager(params, dp_group)

    holds_first = any(st.is_first for st in stages)
    holds_last = any(st.is_last for st in stages)
    # The reported loss is replica 0's: the world rank holding its last stage.
    last_rank = world_rank(0, rank_of_stage(cfg.schedule, n - 1, pp), pp)

    step_kwargs = {}
    # The last stage keeps every microbatch's logits (8 x 4 x 1024 x 50304 bf16 = 3.3 GB at the
    # defaults) to return them, unless the step() of newer versions is told not to; only the loss
    # is needed here, so spare that memory where the option exists.
    if "return_outputs" in inspect.signature(schedule.step).parameters:
        step_kwargs["return_outputs"] = False

    batch = cfg.micro * cfg.microbatches  # per replica
    gen = torch.Generator(device=device)
    # Seeded by replica: each replica trains on its own data (replica 0, the only one without
    # --dp, keeps the seed 0 of before).
    gen.manual_seed(replica)
    tokens = torch.randint(0, cfg.vocab, (batch, cfg.seq), device=device, generator=gen)
    labels = torch.randint(0, cfg.vocab, (batch, cfg.seq), device=device, generator=gen)

    if rank == 0:
        log(f"{type(schedule).__name__}: {n} stages on {pp} ranks x {cfg.dp} replicas "
            f"({world} ranks), layer bounds {bounds}, "
            f"{batch} x {cfg.seq} tokens a step per replica in {cfg.microbatches} microbatches, "
            f"last stage keeps its logits: {'return_outputs' not in step_kwargs}")
    log(f"rank {rank} (replica {replica}, pipeline rank {stage_rank}): "
        f"stages {[st.stage_index for st in stages]}, "
        f"{sum(p.numel() for p in params) / 1e6:.1f} M parameters")

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        losses = [] if holds_last else None
        args = (tokens,) if holds_first else ()
        kwargs = dict(step_kwargs)
        if holds_last:
            kwargs.update(target=labels, losses=losses)
        schedule.step(*args, **kwargs)
        if average_grads is not None:
            average_grads()
        optimizer.step()
        return losses

    for i in range(cfg.warmup):
        train_step()
        if rank == 0:
            log(f"warm-up step {i + 1}/{cfg.warmup} done")

    sync_all(local_rank)
    torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    losses = None
    for _ in range(cfg.steps):
        losses = train_step()
    sync_all(local_rank)
    step_s = (time.perf_counter() - t0) / cfg.steps

    peak = torch.tensor([float(torch.cuda.max_memory_allocated(device))], device=device)
    peaks = [torch.zeros_like(peak) for _ in range(world)]
    dist.all_gather(peaks, peak)

    loss = torch.zeros(1, dtype=torch.float32, device=device)
    if holds_last:
        loss.fill_(torch.stack([l.detach().float() for l in losses]).mean().item())
    dist.broadcast(loss, src=last_rank)

    result = {
        "system": SYSTEM,
        "schedule": cfg.schedule,
        "stages": n,
        "step_ms": round(step_s * 1e3, 2),
        "tokens_per_s": round(batch * cfg.seq * cfg.dp / step_s, 1),
        "peak_gib": [round(p.item() / 2**30, 3) for p in peaks],
        "loss": round(loss.item(), 4),
        "card": torch.cuda.get_device_name(device),
        "world": world,
        "dp": cfg.dp,
        "pp": pp,
        "split": bounds[1:-1],
    }
    if rank == 0:
        log(f"{cfg.steps} timed steps: {result['step_ms']} ms a step")
    dist.destroy_process_group()
    return rank, result


def main():
    rank = int(os.environ.get("RANK", "0"))
    schedule = _schedule_from_argv()
    try:
        cfg = parse_args()
        schedule = cfg.schedule
        rank, result = run(cfg)
    except Exception as exc:  # noqa: BLE001 - any failure becomes the JSON error line
        traceback.print_exc(file=sys.stderr)
        if rank == 0:
            emit({"system": SYSTEM, "schedule": schedule, "error": f"{type(exc).__name__}: {exc}"})
        # No destroy_process_group here: peers may be stuck in a collective and it could hang;
        # torchrun tears the group down once this rank exits non-zero.
        sys.exit(1)
    if rank == 0:
        emit(result)


if __name__ == "__main__":
    main()
