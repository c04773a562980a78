#!/usr/bin/env python3
"""PyTorch twin of Sources/Model (same architecture, same tensor names).

Modes:
  fixture  write Tests/ModelTests/Fixtures/fixture_{untied,tied}.json: weights, a batch, logits,
           per-sequence weighted log-prob sums, every gradient and a few AdamW steps, computed in
           float64 so the Swift (float32) test measures only its own rounding.
  logits   load weights written by the Swift side (weights.json table + weights.bin raw
           little-endian float32) and print the logits of a token sequence as JSON.
  bench    PyTorch eager CPU's side of `suder bench model`: builds the bench workloads, prints
           "ready", then for each workload name read on stdin (train, score, preference, sample,
           sample_shared_rng) runs it once and prints its seconds; `info` prints one JSON object
           (framework, capability, peak RSS). The caller alternates these runs with its own.

Weights format (also what Transformer.writeWeights produces):
  <base>.json = {"config": {...ModelConfig fields...}, "tensors": [{"name", "offset", "shape"}]}
  <base>.bin  = all parameters as float32, in table order.
"""
import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(max_seq, head_size, theta, dtype):
    """cos, sin of shape (max_seq, head_size/2): angle(t, i) = t * theta^(-2i/HS) (float64 first)."""
    half = head_size // 2
    inv = torch.tensor([theta ** (-2.0 * i / head_size) for i in range(half)], dtype=torch.float64)
    angles = torch.arange(max_seq, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def apply_rope(x, cos, sin):
    """x (B, NH, T, HS), pairs (i, i + HS/2) rotated by the position's angle ("rotate half")."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wq = nn.Linear(c.dModel, c.dModel, bias=False)
        self.wk = nn.Linear(c.dModel, c.dModel, bias=False)
        self.wv = nn.Linear(c.dModel, c.dModel, bias=False)
        self.wo = nn.Linear(c.dModel, c.dModel, bias=False)
        self.nh = c.nHeads

    def heads(self, x):
        B, T, C = x.shape
        return x.view(B, T, self.nh, C // self.nh).transpose(1, 2)

    def forward(self, x, cos, sin, cache=None, pos=0):
        B, T, C = x.shape
        q = apply_rope(self.heads(self.wq(x)), cos[pos:pos + T], sin[pos:pos + T])
        k = apply_rope(self.heads(self.wk(x)), cos[pos:pos + T], sin[pos:pos + T])
        v = self.heads(self.wv(x))
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values = cache
            keys[:, :, pos:pos + T] = k
            values[:, :, pos:pos + T] = v
            k, v = keys[:, :, :pos + T], values[:, :, :pos + T]
            # Prefill (T > 1, pos 0) is causal; a single decode token sees the whole cache.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=(T > 1))
        return self.wo(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w1 = nn.Linear(c.dModel, c.ffnHidden, bias=False)
        self.w2 = nn.Linear(c.ffnHidden, c.dModel, bias=False)
        self.w3 = nn.Linear(c.dModel, c.ffnHidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention_norm = RMSNorm(c.dModel, c.normEps)
        self.attention = Attention(c)
        self.ffn_norm = RMSNorm(c.dModel, c.normEps)
        self.feed_forward = FeedForward(c)

    def forward(self, x, cos, sin, cache=None, pos=0):
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, pos)
        return x + self.feed_forward(self.ffn_norm(x))


class Config:
    FIELDS = dict(vocabSize=1100, dModel=192, nLayers=6, nHeads=6, ffnHidden=512, maxSeq=128,
                  tiedHead=False, ropeTheta=10000.0, normEps=1e-5, initStd=0.02)

    def __init__(self, **kw):
        for k, v in {**self.FIELDS, **kw}.items():
            setattr(self, k, v)

    def as_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}


class Transformer(nn.Module):
    def __init__(self, c, dtype=torch.float32):
        super().__init__()
        self.c = c
        self.tok_embeddings = nn.Embedding(c.vocabSize, c.dModel)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.nLayers)])
        self.norm = RMSNorm(c.dModel, c.normEps)
        if not c.tiedHead:
            self.output = nn.Linear(c.dModel, c.vocabSize, bias=False)
        cos, sin = rope_tables(c.maxSeq, c.dModel // c.nHeads, c.ropeTheta, dtype)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.to(dtype)

    def head_weight(self):
        return self.tok_embeddings.weight if self.c.tiedHead else self.output.weight

    def forward(self, tokens, caches=None, pos=0, first=0, end=None):
        """Logits of positions first..<end (the head runs on those rows only)."""
        x = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, self.cos, self.sin, None if caches is None else caches[i], pos)
        return F.linear(self.norm(x[:, first:end]), self.head_weight())

    def table(self):
        """(name, shape) in the order of the Swift flat buffer."""
        return [(n, tuple(p.shape)) for n, p in self.named_parameters()]


def weighted_logprob_sums(logits, tokens, weights):
    """S_b = sum_t weights[b, t] * log p(tokens[b, t] | tokens[b, < t]) (t = 0 has no prediction)."""
    logp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return (logp * weights[:, 1:]).sum(dim=1)


def span_logprob_sums(model, tokens, start):
    """S_b = sum over t >= start of log p(tokens[b, t] | tokens[b, < t]), the head run only on
    the rows that predict those tokens, as the Swift model does for rows with a weight."""
    logits = model(tokens, first=start - 1, end=-1)
    return F.log_softmax(logits, dim=-1).gather(-1, tokens[:, start:, None])[..., 0].sum(dim=1)


# ---------------------------------------------------------------------------- weights I/O

def load_weights(base):
    with open(base + ".json") as f:
        meta = json.load(f)
    flat = np.fromfile(base + ".bin", dtype="<f4")
    model = Transformer(Config(**meta["config"]))
    params = dict(model.named_parameters())
    for t in meta["tensors"]:
        n = int(np.prod(t["shape"]))
        params[t["name"]].data.copy_(torch.from_numpy(flat[t["offset"]:t["offset"] + n].reshape(t["shape"]).copy()))
    return model


def read_safetensors(path):
    """Tensors and metadata of a safetensors file, parsed with numpy alone (F32 only)."""
    with open(path, "rb") as f:
        data = f.read()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_length])
    metadata = header.pop("__metadata__", {})
    body = data[8 + header_length:]
    tensors = {}
    for name, entry in header.items():
        assert entry["dtype"] == "F32", f"{name}: dtype {entry['dtype']}"
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype="<f4").reshape(entry["shape"])
    return tensors, metadata


def load_safetensors(path):
    """A model from `suder export`: sizes from the tensor shapes, heads, rotary base and length
    from the run's config (the `suder.config` metadata entry, YAML)."""
    tensors, metadata = read_safetensors(path)
    model_keys = {}
    section = None
    for line in metadata.get("suder.config", "").splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
        elif section == "model" and ":" in line:
            key, value = line.strip().split(":", 1)
            model_keys[key] = value.strip().strip('"')
    vocab, d_model = tensors["tok_embeddings.weight"].shape
    layers = len({name.split(".")[1] for name in tensors if name.startswith("layers.")})
    c = Config(vocabSize=vocab, dModel=d_model, nLayers=layers, nHeads=int(model_keys["n_heads"]),
               ffnHidden=tensors["layers.0.feed_forward.w1.weight"].shape[0], maxSeq=int(model_keys["max_seq"]),
               tiedHead="output.weight" not in tensors, ropeTheta=float(model_keys["rope_theta"]))
    model = Transformer(c)
    params = dict(model.named_parameters())
    assert set(params) == set(tensors), f"tensor names differ: {sorted(set(params) ^ set(tensors))}"
    for name, value in tensors.items():
        params[name].data.copy_(torch.from_numpy(value.copy()))
    return model


# ---------------------------------------------------------------------------- fixture

def adamw_groups(model, weight_decay):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def write_fixture(path, tied):
    c = Config(vocabSize=37, dModel=16, nLayers=2, nHeads=2, ffnHidden=24, maxSeq=16, tiedHead=tied)
    torch.manual_seed(1234 + tied)
    model = Transformer(c, dtype=torch.float64)
    rng = np.random.default_rng(99 + tied)
    # Large-ish weights (std 0.3) so every path carries signal; values rounded to float32 so both
    # sides start from the same numbers.
    for _, p in model.named_parameters():
        init = np.ones(p.shape) if p.dim() == 1 else rng.normal(0, 0.3, p.shape)
        if p.dim() == 1:
            init = init + rng.normal(0, 0.1, p.shape)
        p.data.copy_(torch.from_numpy(init.astype(np.float32).astype(np.float64)))
    B, T = 3, 10
    lengths = [10, 7, 9]
    tokens = torch.zeros(B, T, dtype=torch.long)
    weights = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        tokens[b, :lengths[b]] = torch.from_numpy(rng.integers(0, c.vocabSize, lengths[b]))
        weights[b, 1 + b:lengths[b]] = 1.0
    weights[0, 5] = 0.5
    coefficients = torch.tensor([-1.0, 0.75, -2.0], dtype=torch.float64)
    initial = {n: p.detach().reshape(-1).tolist() for n, p in model.named_parameters()}

    logits = model(tokens)
    sums = weighted_logprob_sums(logits, tokens, weights)
    (sums * coefficients).sum().backward()
    gradients = {n: p.grad.reshape(-1).tolist() for n, p in model.named_parameters()}

    # A few AdamW steps on the same objective (clip, then step), as the Swift trainer does.
    lrs, max_norm, hyper = [1e-2, 2e-2, 1.5e-2], 1.0, dict(beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    opt = torch.optim.AdamW(adamw_groups(model, hyper["weight_decay"]), lr=lrs[0],
                            betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"])
    norms, objectives = [], []
    for lr in lrs:
        opt.zero_grad()
        objective = (weighted_logprob_sums(model(tokens), tokens, weights) * coefficients).sum()
        objective.backward()
        objectives.append(objective.item())
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item())
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
    after = {n: p.detach().reshape(-1).tolist() for n, p in model.named_parameters()}

    fixture = dict(
        config=c.as_dict(), table=[dict(name=n, shape=list(s)) for n, s in model.table()],
        batch=B, seqLen=T, lengths=lengths, tokens=tokens.reshape(-1).tolist(),
        weights=weights.reshape(-1).tolist(), coefficients=coefficients.tolist(),
        parameters=initial, logits=logits.detach().reshape(-1).tolist(), sums=sums.tolist(),
        gradients=gradients,
        adamw=dict(learningRates=lrs, maxNorm=max_norm, **hyper, objectives=objectives,
                   gradientNorms=norms, parametersAfter=after),
    )
    with open(path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    print(f"wrote {path}")


# ---------------------------------------------------------------------------- bench

@torch.no_grad()
def sample_with_cache(model, prompts, new_tokens, temperature, generators, allowed=None):
    """Batched KV-cache sampling with equal prompt lengths. `generators` is either one shared
    torch.Generator (one multinomial call per step) or one per sequence, which is what the Swift
    sampler guarantees (a sequence's tokens depend only on its own seed): then each row draws
    from its own generator. `allowed` = (lo, hi) restricts logits to a token-id range."""
    c = model.c
    B, P = prompts.shape
    hs = c.dModel // c.nHeads
    caches = [(torch.zeros(B, c.nHeads, c.maxSeq, hs), torch.zeros(B, c.nHeads, c.maxSeq, hs)) for _ in range(c.nLayers)]
    logits = model(prompts, caches, 0, first=P - 1)[:, -1]
    lo, hi = allowed if allowed is not None else (0, c.vocabSize)
    out = []
    for step in range(new_tokens):
        probs = torch.softmax(logits[:, lo:hi] / temperature, dim=-1)
        if isinstance(generators, list):
            token = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])[:, None] + lo
        else:
            token = torch.multinomial(probs, 1, generator=generators) + lo
        out.append(token)
        if step + 1 < new_tokens:
            logits = model(token, caches, P + step)[:, -1]
    return torch.cat(out, dim=1)


def bench(args):
    torch.set_num_threads(args.threads)
    c = Config(vocabSize=args.vocab, dModel=args.d_model, nLayers=args.layers, nHeads=args.heads,
               ffnHidden=args.ffn, maxSeq=max(args.seq, args.prompt + args.new_tokens))
    torch.manual_seed(0)
    model = Transformer(c)
    for n, p in model.named_parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, 0, 0.02)
    B, T = args.batch, args.seq
    tokens = torch.randint(0, c.vocabSize, (B, T))
    opt = torch.optim.AdamW(adamw_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95))

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = -span_logprob_sums(model, tokens, 1).sum() / (B * (T - 1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def score():
        with torch.no_grad():
            span_logprob_sums(model, tokens, T // 2)

    length = T - T // 3

    def preference_step():
        opt.zero_grad(set_to_none=True)
        logps = span_logprob_sums(model, tokens, T // 3)
        chosen, rejected = logps[0::2], logps[1::2]
        z = 2.0 * chosen / length - 2.0 * rejected / length - 0.5
        loss = -F.logsigmoid(z).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    prompts = torch.randint(0, c.vocabSize, (args.sample_batch, args.prompt))
    generators = [torch.Generator().manual_seed(i) for i in range(args.sample_batch)]
    shared = torch.Generator().manual_seed(0)

    def sample():
        sample_with_cache(model, prompts, args.new_tokens, 1.0, generators, (0, c.vocabSize))

    def sample_shared_rng():
        sample_with_cache(model, prompts, args.new_tokens, 1.0, shared)

    workloads = dict(train=train_step, score=score, preference=preference_step, sample=sample,
                     sample_shared_rng=sample_shared_rng)
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name == "info":
            print(json.dumps(dict(
                framework=f"torch {torch.__version__}",
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                cpu_capability=torch.backends.cpu.get_cpu_capability())), flush=True)
        elif name in workloads:
            start = time.perf_counter()
            workloads[name]()
            print(f"{time.perf_counter() - start:.9f}", flush=True)
        else:
            sys.exit(f"bench: unknown request {name!r}; expected info or one of {', '.join(workloads)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    fx = sub.add_parser("fixture")
    fx.add_argument("--out", default="Tests/ModelTests/Fixtures")
    lg = sub.add_parser("logits")
    lg.add_argument("weights", help="base path: <base>.json and <base>.bin, or a .safetensors file from `suder export`")
    lg.add_argument("tokens", help="comma-separated token ids")
    bn = sub.add_parser("bench")
    bn.add_argument("--threads", type=int, default=1)
    bn.add_argument("--vocab", type=int, default=1100)
    bn.add_argument("--d-model", type=int, default=192)
    bn.add_argument("--layers", type=int, default=6)
    bn.add_argument("--heads", type=int, default=6)
    bn.add_argument("--ffn", type=int, default=512)
    bn.add_argument("--seq", type=int, default=96)
    bn.add_argument("--batch", type=int, default=32)
    bn.add_argument("--sample-batch", type=int, default=16)
    bn.add_argument("--prompt", type=int, default=16)
    bn.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.mode == "fixture":
        write_fixture(f"{args.out}/fixture_untied.json", tied=False)
        write_fixture(f"{args.out}/fixture_tied.json", tied=True)
    elif args.mode == "logits":
        model = load_safetensors(args.weights) if args.weights.endswith(".safetensors") else load_weights(args.weights)
        tokens = torch.tensor([[int(t) for t in args.tokens.split(",")]])
        with torch.no_grad():
            print(json.dumps(model(tokens)[0].tolist()))
    else:
        bench(args)


if __name__ == "__main__":
    main()
