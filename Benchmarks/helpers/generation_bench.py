"""Token generation, SwiftMoE against transformers, interleaved (Benchmarks/README.md, "Token generation").

    python3 Benchmarks/helpers/generation_bench.py --checkpoint /tmp/mixtral-bench --imported /tmp/mixtral-swift \
        --cases 1x128,8x128,32x128,1x1024 --new 64 --rounds 2 [--no-peer] [--ranks 2] [--topology Topologies/2x2.json] [-- extra moe generate options]

For each round and case (batch x prompt length): writes seeded random prompts, runs `moe generate`
(1 OpenBLAS thread per rank; `--bounds` on one rank, so the bytes and GEMM bounds are measured in
the same run), then `generate_transformers.py time` on the same prompts (1 torch thread), then at
batch 1 llama.cpp on each --llama-gguf (`generate_llamacpp.py time`, 1 thread).
Prints one JSON line per run and a markdown table of the medians. The CPU's features and a plain
read's bandwidth are printed first (`moe generate --bounds` measures its own).
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOE = os.path.join(ROOT, ".build", "release", "moe")
PEER = os.path.join(ROOT, "Benchmarks", "peers", "generate_transformers.py")
LLAMA = os.path.join(ROOT, "Benchmarks", "peers", "generate_llamacpp.py")


def cpu_flags():
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("flags"):
                flags = set(line.split(":")[1].split())
                return " ".join(f for f in ["avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"] if f in flags)
            if line.startswith("model name"):
                name = line.split(":")[1].strip()
    return "?"


def write_prompts(path, batch, length, vocabulary, seed):
    generator = random.Random(seed)
    with open(path, "w") as file:
        for _ in range(batch):
            file.write(" ".join(str(generator.randrange(vocabulary)) for _ in range(length)) + "\n")


def swiftmoe(args, prompts, batch, extra):
    output = tempfile.mktemp(suffix=".json")
    command = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(args.ranks), MOE, "generate", "--model", f"{args.imported}/model.json",
               "--weights", f"{args.imported}/weights.safetensors", "--prompt-ids", prompts, "--max-new-tokens", str(args.new), "--blas-threads", "1",
               "--quiet", "--output", output] + (["--bounds"] if args.ranks == 1 else []) + (["--topology", args.topology, "--simulate-links", "on"] if args.topology else []) + extra
    run = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"moe generate failed: {run.stderr[-2000:]}")
    with open(output) as file:
        report = json.load(file)
    os.unlink(output)
    steps = [s for s in report["steps"] if s["prefill_tokens"] == 0]
    decode_seconds = sum(s["seconds"] for s in steps)
    exchange = sum(s["phase_seconds"]["dispatch"] + s["phase_seconds"]["combine"] for s in steps)
    result = {"impl": "swiftmoe", "ranks": args.ranks, "batch": batch,
              "prefill_tokens_per_s": sum(s["prefill_tokens"] for s in report["steps"]) / sum(s["seconds"] for s in report["steps"] if s["prefill_tokens"] > 0),
              "decode_ms_per_step": 1000 * statistics.median(s["seconds"] for s in steps),
              "exchange_share_of_decode": exchange / decode_seconds, "ttft_ms_p50": 1000 * report["time_to_first_token_p50_s"],
              "token_latency_ms_p50": 1000 * report["token_latency_p50_s"], "token_latency_ms_p99": 1000 * report["token_latency_p99_s"],
              "bounds": report.get("bounds")}
    return result


def transformers(args, prompts, batch, length):
    run = subprocess.run([sys.executable, PEER, "time", "--checkpoint", args.checkpoint, "--prompts-file", prompts, "--prompt", str(length), "--new",
                          str(args.new), "--batch", str(batch), "--threads", "1", "--repeats", "1"], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"transformers failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def llamacpp(args, gguf, prompts, length):
    run = subprocess.run([sys.executable, LLAMA, "time", "--gguf", gguf, "--prompts-file", prompts, "--prompt", str(length), "--new", str(args.new),
                          "--threads", "1", "--repeats", "1"], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"llama.cpp failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--imported", required=True)
    parser.add_argument("--cases", default="1x128,8x128")
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--topology")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--llama-gguf", default="", help="GGUF files (comma-separated) timed by llama.cpp at batch 1 (generate_llamacpp.py)")
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    with open(os.path.join(args.checkpoint, "config.json")) as file:
        vocabulary = json.load(file)["vocab_size"]
    print(f"# cpu flags: {cpu_flags()}; extra: {' '.join(extra) or '-'}", flush=True)
    cases = [tuple(int(x) for x in case.split("x")) for case in args.cases.split(",")]
    results = {case: {"swiftmoe": [], "transformers": []} for case in cases}
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(args.rounds):
            for batch, length in cases:
                prompts = os.path.join(scratch, f"p-{batch}x{length}.txt")
                write_prompts(prompts, batch, length, vocabulary, seed=1000 * batch + length)
                ours = swiftmoe(args, prompts, batch, extra)
                print(json.dumps({"round": round_number, "prompt": length, **ours}), flush=True)
                results[(batch, length)]["swiftmoe"].append(ours)
                if not args.no_peer:
                    theirs = transformers(args, prompts, batch, length)
                    print(json.dumps({"round": round_number, **theirs}), flush=True)
                    results[(batch, length)]["transformers"].append(theirs)
                for gguf in [g for g in args.llama_gguf.split(",") if g] if batch == 1 else []:
                    print(json.dumps({"round": round_number, **llamacpp(args, gguf, prompts, length)}), flush=True)
    print("\n| batch × prompt | SwiftMoE prefill tok/s | transformers prefill tok/s | ratio | SwiftMoE decode ms/step | transformers decode ms/step | ratio | exchanges % of decode |")
    print("|---|---|---|---|---|---|---|---|")
    for (batch, length), runs in results.items():
        ours, theirs = runs["swiftmoe"], runs["transformers"]
        def values(items, key):
            return ", ".join(f"{r[key]:.1f}" if key == "decode_ms_per_step" else f"{r[key]:.0f}" for r in items) or "-"
        ratio_prefill = ratio_decode = "-"
        if theirs:
            ratio_prefill = f"{statistics.median(o['prefill_tokens_per_s'] / t['prefill_tokens_per_s'] for o, t in zip(ours, theirs)):.2f}"
            ratio_decode = f"{statistics.median(t['decode_ms_per_step'] / o['decode_ms_per_step'] for o, t in zip(ours, theirs)):.2f}"
        share = statistics.median(o["exchange_share_of_decode"] for o in ours) * 100
        print(f"| {batch} × {length} | {values(ours, 'prefill_tokens_per_s')} | {values(theirs, 'prefill_tokens_per_s')} | {ratio_prefill} | "
              f"{values(ours, 'decode_ms_per_step')} | {values(theirs, 'decode_ms_per_step')} | {ratio_decode} | {share:.0f} |")


if __name__ == "__main__":
    main()
