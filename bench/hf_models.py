"""The PyTorch side of bench/hf_models.ts, on the GPU host (torch 2.x, transformers 5).

    python3 bench/hf_models.py export MODEL DIR [--layers N]   # DIR/model.onnx (+ external data)
    python3 bench/hf_models.py train MODEL [--layers N] [--no-compile]

MODEL is gpt2 (24 layers, d 2048, 16 heads, seq 1024, vocab 50304) or llama (TinyLlama-1.1B's shape:
22 layers, d 2048, 32 heads, 4 KV heads, ffn 5632, vocab 32000), random weights from one seed, so the
exported file and the trained model are the same model. `export` writes it with
torch.onnx.export(dynamo=True) and external data. `train` trains it as its users do: SDPA attention,
bf16 autocast, fused AdamW, 8 microbatches of 4 × 1024 tokens per step, eager and torch.compile,
and prints one line per runtime: label|step ms|peak GiB.
"""
import argparse
import os
import sys
import time

import torch
import transformers as T

SEQ, MICRO, M = 1024, 4, 8


def make(name, layers):
    torch.manual_seed(0)
    if name == "gpt2":
        cfg = T.GPT2Config(vocab_size=50304, n_positions=SEQ, n_embd=2048, n_layer=layers or 24, n_head=16,
                           attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0, activation_function="gelu_new")
        model = T.GPT2LMHeadModel(cfg)
    elif name == "llama":
        cfg = T.LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers or 22,
                            num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=SEQ)
        model = T.LlamaForCausalLM(cfg)
    else:
        sys.exit(f"hf_models.py: unknown model {name} (gpt2 or llama)")
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():  # equal initial values (norm weights of ones) would be merged by the exporter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids=input_ids, use_cache=False, return_dict=True).logits


def export(name, out, layers):
    os.makedirs(out, exist_ok=True)
    model = Logits(make(name, layers)).eval()
    ids = torch.randint(0, model.m.config.vocab_size, (MICRO, SEQ))
    torch.onnx.export(model, (ids,), os.path.join(out, "model.onnx"), input_names=["input_ids"], output_names=["logits"],
                      dynamo=True, external_data=True, opset_version=18)
    print("exported", os.path.join(out, "model.onnx"), flush=True)


def train(name, layers, compiled):
    model = make(name, layers).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    fwd = torch.compile(model) if compiled else model
    V = model.config.vocab_size
    ids = torch.randint(0, V, (MICRO, SEQ), device="cuda")
    labels = torch.randint(0, V, (MICRO, SEQ), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        for _ in range(M):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = fwd(input_ids=ids, use_cache=False).logits
                loss = torch.nn.functional.cross_entropy(logits.float().view(-1, V), labels.view(-1)) / M
            loss.backward()
        opt.step()

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t, n = time.perf_counter(), 3
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / n * 1e3
    label = "torch.compile, SDPA" if compiled else "eager, SDPA"
    print(f"{label}|{ms:.1f}|{torch.cuda.max_memory_allocated() / 2**30:.1f}", flush=True)


ap = argparse.ArgumentParser()
ap.add_argument("what", choices=["export", "train"])
ap.add_argument("model")
ap.add_argument("dir", nargs="?")
ap.add_argument("--layers", type=int, default=0)
ap.add_argument("--no-compile", action="store_true")
a = ap.parse_args()
if a.what == "export":
    export(a.model, a.dir, a.layers)
else:
    train(a.model, a.layers, False)
    torch.cuda.empty_cache()
    if not a.no_compile:
        train(a.model, a.layers, True)
