"""GPU check of the model, mining and encoding paths (``benchmarks/gpu/check.sh`` runs it).

1. ``train``: a few training steps of an architecture (default ``conan-1.4b``, bf16 autocast,
   AdamW fused) — the weak-stage objective (InfoNCE, soft mask alpha 0.5 through the chosen
   attention backend) and the causal-LM objective (chunked LM-head CE) — reporting tokens/s and
   MFU = 6 · N · tokens/s / peak (N without the embedding table, the usual convention);
2. ``faiss``: faiss-gpu flat inner-product top-100 vs torch bf16 matmul+topk on a 100k × 768 corpus
   with 10k queries (time ratio and overlap@100 against exact float32);
3. ``encode``: ``Embedder.encode`` throughput (tokens/s) of a random-weight model in bf16, padded
   and packed (``packing=True``);
4. ``packed``: a supervised-shaped step (B queries of 8-64 tokens, their positives and 7 negatives
   each of 64-``seq_len`` tokens, soft mask alpha 0.5, InfoNCE) padded, packed
   (:mod:`conan_core.model.packing`, FlexAttention block mask across sequences) and packed with
   compiled blocks: useful (non-padding) tokens/s, MFU on useful tokens, the packed/padded loss
   agreement at the same weights, and the graph breaks counted by ``torch._dynamo``.

Prints one table. ``--smoke`` runs every section at toy sizes on CPU (what the test suite does), so
the script is known to work before a GPU lease spends minutes on it. Exit 1 when a check fails,
2 when CUDA is missing and ``--smoke`` is not given.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

ROWS: list[tuple[str, str, str]] = []  # (check, status, numbers)
FAILED: list[str] = []
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 FLOP/s (datasheet)


def record(check: str, ok: bool, numbers: str) -> None:
    ROWS.append((check, "ok" if ok else "FAIL", numbers))
    if not ok:
        FAILED.append(check)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def build_model(arch: str, device: torch.device, attention: str):
    from conan_core.model.sizes import resolve_architecture
    from conan_core.registries import REGISTRIES

    fields = resolve_architecture(arch)
    vocab = fields.pop("vocab_size")
    spec = {"type": "conan", **{k: v for k, v in fields.items() if k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size", "max_position_embeddings", "rope_theta", "rms_norm_eps", "tie_word_embeddings")},
        "attention": {"type": attention}, "gradient_checkpointing": True}
    model = REGISTRIES["backbones"].build(spec).build(vocab).to(device)
    return model, vocab


def check_train(args, device: torch.device) -> None:
    from conan_core.registries import REGISTRIES

    model, vocab = build_model(args.arch, device, args.attention)
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    soft = REGISTRIES["masks"].build({"type": "soft"})
    info_nce = REGISTRIES["contrastive_losses"].build({"type": "info_nce"})
    lm_loss = REGISTRIES["lm_losses"].build({"type": "causal_lm"})
    pooler = REGISTRIES["poolers"].build({"type": "mean"}, hidden_size=model.config.hidden_size)
    gen = torch.Generator(device="cpu").manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def embed_step():
        ids = torch.randint(3, vocab, (2 * args.batch, args.seq_len), generator=gen).to(device)
        lengths = torch.randint(args.seq_len // 2, args.seq_len + 1, (2 * args.batch,), generator=gen)
        att = (torch.arange(args.seq_len)[None, :] < lengths[:, None]).long().to(device)
        with autocast:
            hidden = model.encode(ids, att, mask=soft, alpha=0.5)
            emb = pooler(hidden, att)
            out = info_nce(emb[: args.batch], emb[args.batch:])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(att.sum())

    def lm_step():
        ids = torch.randint(3, vocab, (args.batch, args.seq_len), generator=gen).to(device)
        att = torch.ones_like(ids)
        with autocast:
            hidden = model.encode(ids, att)
            out = lm_loss(hidden, model.get_output_embeddings().weight, ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return ids.numel()

    peak = peak_flops(device)
    for name, step in (("train: weak (soft mask, InfoNCE)", embed_step), ("train: causal LM", lm_step)):
        try:
            for _ in range(args.warmup):
                step()
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0, tokens = time.perf_counter(), 0
            for _ in range(args.steps):
                tokens += step()
            sync(device)
            rate = tokens / (time.perf_counter() - t0)
            mfu = "" if peak is None else f", MFU {100 * 6 * n_params * rate / peak:.1f}%"
            mem = (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                   if device.type == "cuda" else "")
            record(name, True, f"{rate:,.0f} tok/s{mfu}{mem} ({args.arch}, B={args.batch}, L={args.seq_len})")
        except Exception as exc:  # a failing section must not hide the others
            traceback.print_exc()
            record(name, False, f"{type(exc).__name__}: {exc}"[:120])


def check_faiss(args, device: torch.device) -> None:
    from conan_core.miners.index import build_index, search, torch_topk

    gen = torch.Generator(device="cpu").manual_seed(1)
    corpus = torch.nn.functional.normalize(torch.randn(args.corpus, args.dim, generator=gen), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=gen), dim=-1)
    try:
        exact = torch_topk(corpus, queries, args.top_k, dtype=torch.float32)[1]
        t0 = time.perf_counter()
        index = build_index(corpus.numpy(), kind="flat", use_gpu=device.type == "cuda")
        _, ids = search(index, queries.numpy(), args.top_k)
        faiss_s = time.perf_counter() - t0
        sync(device)
        t0 = time.perf_counter()
        _, tids = torch_topk(corpus, queries, args.top_k, dtype=torch.bfloat16, device=device)
        sync(device)
        torch_s = time.perf_counter() - t0
        overlap = lambda got: sum(len(set(a.tolist()) & set(b.tolist()))  # noqa: E731
                                  for a, b in zip(torch.as_tensor(got), exact)) / exact.numel()
        on_gpu = type(index).__name__.startswith("Gpu")
        record("faiss flat vs torch bf16 top-k", True,
               f"faiss{'-gpu' if on_gpu else ' (cpu)'} {faiss_s:.3f}s, torch bf16 {torch_s:.3f}s "
               f"(ratio {torch_s / faiss_s:.2f}); overlap@{args.top_k} faiss {overlap(ids):.3f}, "
               f"torch {overlap(tids.cpu()):.3f} ({args.corpus}x{args.dim}, {args.queries} queries)")
    except Exception as exc:
        traceback.print_exc()
        record("faiss flat vs torch bf16 top-k", False, f"{type(exc).__name__}: {exc}"[:120])


def supervised_batch(args, vocab: int, device: torch.device) -> dict:
    """Right-padded query / positive / negative columns of mixed real lengths (supervised shape)."""
    gen = torch.Generator(device="cpu").manual_seed(2)

    def column(n: int, lo: int, hi: int) -> dict:
        lengths = torch.randint(lo, hi + 1, (n,), generator=gen)
        width = int(lengths.max())
        att = (torch.arange(width)[None, :] < lengths[:, None]).long()
        ids = torch.randint(3, vocab, (n, width), generator=gen) * att
        return {"input_ids": ids.to(device), "attention_mask": att.to(device), "pool_mask": att.to(device)}

    b, n = args.batch, args.negatives
    short = max(2, min(64, args.seq_len // 4))
    return {"query": column(b, min(8, short), short), "positive": column(b, short, args.seq_len),
            "negative": column(b * n, short, args.seq_len), "query_ids": torch.arange(b, device=device),
            "positive_ids": torch.arange(b, device=device),
            "negative_ids": torch.arange(b * n, device=device).view(b, n) + b,
            "example_ids": [str(i) for i in range(b)]}


def check_packed(args, device: torch.device) -> None:
    from conan_core.model.compile import compile_blocks
    from conan_core.registries import REGISTRIES
    from conan_core.train.objectives import EmbeddingObjective

    names = ("train: supervised padded", "train: supervised packed", "train: supervised packed + compiled blocks")
    try:
        model, vocab = build_model(args.arch, device, args.attention)
    except Exception as exc:
        traceback.print_exc()
        for name in names:
            record(name, False, f"{type(exc).__name__}: {exc}"[:120])
        return
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    batch = supervised_batch(args, vocab, device)
    useful = sum(int(batch[k]["attention_mask"].sum()) for k in ("query", "positive", "negative"))
    padded_tokens = sum(batch[k]["input_ids"].numel() for k in ("query", "positive", "negative"))
    soft = REGISTRIES["masks"].build({"type": "soft"})
    pooler = REGISTRIES["poolers"].build({"type": "mean"}, hidden_size=model.config.hidden_size).to(device)
    objectives = {name: EmbeddingObjective(model, pooler, soft, REGISTRIES["contrastive_losses"].build("info_nce"),
                                           packing=packed, pack_tokens=args.pack_tokens)
                  for name, packed in (("padded", False), ("packed", True))}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(objective) -> None:
        with autocast:
            loss = objective(batch, step=0, alpha=0.5)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    agreement = ""
    try:
        with torch.no_grad(), autocast:
            a = float(objectives["padded"](batch, step=0, alpha=0.5)["loss"])
            b = float(objectives["packed"](batch, step=0, alpha=0.5)["loss"])
        agreement = f", loss padded {a:.4f} packed {b:.4f}"
        agree = abs(a - b) <= (3e-2 if device.type == "cuda" else 1e-4) * max(1.0, abs(a))
    except Exception as exc:
        traceback.print_exc()
        record(names[1], False, f"loss check: {type(exc).__name__}: {exc}"[:120])
        return
    peak = peak_flops(device)
    rates = {}
    for name, key in zip(names, ("padded", "packed", "compiled")):
        try:
            objective = objectives["padded" if key == "padded" else "packed"]
            if key == "compiled":
                from torch._dynamo.utils import counters

                counters.clear()
                compile_blocks(model, backend=args.compile_backend)
            for _ in range(args.warmup + (1 if key == "compiled" else 0)):
                step(objective)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(objective)
            sync(device)
            rates[key] = rate = useful * args.steps / (time.perf_counter() - t0)
            mfu = "" if peak is None else f", MFU {100 * 6 * n_params * rate / peak:.1f}% (useful tokens)"
            extra = f", {useful} useful of {padded_tokens} padded tokens" if key == "padded" else ""
            if key == "packed":
                extra = f", x{rate / rates['padded']:.2f} padded{agreement}"
            if key == "compiled":
                breaks = sum(counters["graph_break"].values())
                extra = f", x{rate / rates['padded']:.2f} padded, {breaks} graph breaks ({args.compile_backend})"
            ok = key != "packed" or agree
            record(name, ok, f"{rate:,.0f} useful tok/s{mfu}{extra} ({args.arch}, B={args.batch}+"
                             f"{args.batch * args.negatives} negatives, L<={args.seq_len})")
        except Exception as exc:
            traceback.print_exc()
            record(name, False, f"{type(exc).__name__}: {exc}"[:120])


def check_encode(args, device: torch.device, tmp: str) -> None:
    from pathlib import Path

    from conan_core import Embedder

    try:
        model, vocab = build_model(args.encode_arch, torch.device("cpu"), "sdpa")
        out = Path(tmp) / "final"
        model.save_pretrained(out)
        _write_tokenizer(out, vocab)
        emb = Embedder.load(out, device=str(device))
        texts = [" ".join(["token"] * (8 + (i * 37) % 500)) for i in range(args.texts)]
        tokens = sum(len(t.split()) for t in texts)
        results = {}
        for packing in (False, True):
            emb.encode(texts[:64], batch_size=args.encode_batch, packing=packing)
            sync(device)
            t0 = time.perf_counter()
            results[packing] = emb.encode(texts, batch_size=args.encode_batch, packing=packing)
            sync(device)
            secs = time.perf_counter() - t0
            ok = bool(torch.isfinite(torch.from_numpy(results[packing])).all())
            extra = ""
            if packing:
                diff = float(abs(results[True] - results[False]).max())
                ok = ok and diff < (2e-2 if device.type == "cuda" else 1e-5)
                extra = f", max |packed - padded| {diff:.1e}"
            record("encode throughput" + (" packed" if packing else ""), ok,
                   f"{tokens / secs:,.0f} words/s, {len(texts) / secs:,.0f} texts/s{extra} "
                   f"({args.encode_arch}, dtype {emb.dtype if hasattr(emb, 'dtype') else '-'})")
    except Exception as exc:
        traceback.print_exc()
        record("encode throughput", False, f"{type(exc).__name__}: {exc}"[:120])


def _write_tokenizer(out, vocab: int) -> None:
    """A real tokenizer (sentencepiece trained on the builtins' docstrings) and embedder.json."""
    import builtins
    import inspect
    import json

    from conan_core.tokenizer import train_tokenizer

    texts = [inspect.getdoc(getattr(builtins, name)) or name for name in dir(builtins)]
    corpus = out.parent / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
    train_tokenizer([corpus], min(vocab, 600), out, progress=False)
    (out / "embedder.json").write_text(json.dumps({
        "pooler": {"type": "mean"}, "mask": {"type": "bidirectional"}, "max_length": 512,
        "query_instruction": "", "normalize": True, "mrl_dims": [], "stage": "supervised"}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on CPU (no GPU needed)")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: train,packed,faiss,encode")
    parser.add_argument("--arch", default="conan-1.4b")
    parser.add_argument("--attention", default="flex", help="attention backend for the training steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--corpus", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--encode-arch", default="small")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--encode-batch", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=7, help="hard negatives per query (packed section)")
    parser.add_argument("--pack-tokens", type=int, default=None, help="packed row budget (default: longest)")
    parser.add_argument("--compile-backend", default="inductor")
    args = parser.parse_args(argv)
    if args.smoke:
        args.arch, args.attention, args.batch, args.seq_len, args.steps, args.warmup = "tiny", "sdpa", 2, 32, 1, 1
        args.negatives, args.compile_backend = 2, "aot_eager"
        args.corpus, args.queries, args.dim, args.top_k = 2000, 50, 32, 10
        args.encode_arch, args.texts, args.encode_batch = "tiny", 40, 8
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("check_gpu: CUDA is not available (use --smoke for the CPU run)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    skip = set(filter(None, args.skip.split(",")))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if "train" not in skip:
            check_train(args, device)
        if "packed" not in skip:
            check_packed(args, device)
        if "faiss" not in skip:
            check_faiss(args, device)
        if "encode" not in skip:
            check_encode(args, device, tmp)
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)"
    print(f"\nconan_core GPU check on {dev}, torch {torch.__version__}")
    width = max(len(r[0]) for r in ROWS) if ROWS else 10
    for check, status, numbers in ROWS:
        print(f"{check:<{width}}  {status:<4}  {numbers}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
