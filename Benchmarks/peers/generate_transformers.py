"""Generation side by side: makes a random Mixtral-shaped (or Qwen2-MoE-shaped) checkpoint and times
transformers' own `generate` on it (torch CPU, the given threads), for `moe generate` on the same
checkpoint after `moe import-hf` (Benchmarks/README.md, "Token generation").

    python3 Benchmarks/peers/generate_transformers.py make --family mixtral --output /tmp/mixtral-bench
    python3 Benchmarks/peers/generate_transformers.py time --checkpoint /tmp/mixtral-bench --prompt 128 --new 32 --batch 1 --threads 1

`make` writes the checkpoint and prompts.txt (token ids, 32 prompts of --prompt tokens, seeded);
`time` prints one JSON line: prefill tokens/s (all prompt tokens of the batch in one forward),
decode ms per step (one new token for every sequence of the batch, KV cache on), the medians of
--repeats runs.
"""
import argparse
import json
import os
import statistics
import time

import torch
import transformers as T


def make(args):
    common = dict(vocab_size=32000, hidden_size=1024, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                  max_position_embeddings=4096, tie_word_embeddings=False, eos_token_id=None, bos_token_id=None, pad_token_id=None)
    if args.family == "mixtral":
        config = T.MixtralConfig(**common, intermediate_size=2816, num_local_experts=8, num_experts_per_tok=2)
    else:
        config = T.Qwen2MoeConfig(**common, intermediate_size=2816, moe_intermediate_size=1408, shared_expert_intermediate_size=2816,
                                  num_experts=16, num_experts_per_tok=4)
    torch.manual_seed(1)
    model = T.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(args.output, safe_serialization=True)
    generator = torch.Generator().manual_seed(2)
    with open(os.path.join(args.output, "prompts.txt"), "w") as file:
        for _ in range(32):
            file.write(" ".join(str(t) for t in torch.randint(0, config.vocab_size, (args.prompt,), generator=generator).tolist()) + "\n")
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "output": args.output}))


def timed(args):
    torch.set_num_threads(args.threads)
    model = T.AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32).eval()
    with open(args.prompts_file or os.path.join(args.checkpoint, "prompts.txt")) as file:
        prompts = [[int(t) for t in line.split()][:args.prompt] for line in file if line.strip()][:args.batch]
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)
    prefill, decode = [], []
    with torch.no_grad():
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = model(ids, attention_mask=mask, use_cache=True)
            prefill.append(time.perf_counter() - start)
            past = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
            full = torch.cat([mask, torch.ones_like(token)], dim=1)
            steps = []
            for _ in range(args.new):
                start = time.perf_counter()
                out = model(token, attention_mask=full, past_key_values=past, use_cache=True)
                steps.append(time.perf_counter() - start)
                past = out.past_key_values
                token = out.logits[:, -1:].argmax(-1)
                full = torch.cat([full, torch.ones_like(token)], dim=1)
            decode.append(statistics.median(steps))
    p, d = statistics.median(prefill), statistics.median(decode)
    print(json.dumps({"impl": "transformers", "torch": torch.__version__, "threads": args.threads, "batch": args.batch, "prompt": args.prompt,
                      "new": args.new, "prefill_tokens_per_s": args.batch * args.prompt / p, "decode_ms_per_step": d * 1000,
                      "decode_tokens_per_s": args.batch / d}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--family", choices=["mixtral", "qwen2_moe"], default="mixtral")
    m.add_argument("--output", required=True)
    m.add_argument("--prompt", type=int, default=128)
    t = sub.add_parser("time")
    t.add_argument("--checkpoint", required=True)
    t.add_argument("--prompt", type=int, default=128)
    t.add_argument("--new", type=int, default=32)
    t.add_argument("--batch", type=int, default=1)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--prompts-file", help="token ids, one prompt per line (default: the checkpoint's prompts.txt)")
    args = parser.parse_args()
    make(args) if args.command == "make" else timed(args)
