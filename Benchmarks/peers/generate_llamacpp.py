"""Generation side by side with llama.cpp (llama-cpp-python, built from PyPI's sdist on this
machine): converts the benchmark checkpoint to GGUF and times prefill and greedy decode at batch 1
(Benchmarks/README.md, "Token generation").

    python3 Benchmarks/peers/generate_llamacpp.py convert --checkpoint /tmp/mixtral-bench --llama-cpp DIR --outtype f32 --output /tmp/mixtral-f32.gguf
    python3 Benchmarks/peers/generate_llamacpp.py time --gguf /tmp/mixtral-f32.gguf --prompts-file prompts.txt --prompt 128 --new 64 --threads 1

DIR is llama.cpp's source as the llama-cpp-python sdist vendors it (vendor/llama.cpp: its
convert_hf_to_gguf.py and gguf-py). The benchmark checkpoint has no tokenizer; the converter is
given a placeholder vocabulary of the model's size (control tokens 0-2, the 256 byte tokens, then
unused pieces), which is enough because prompts go in as token ids. `time` prints one JSON line:
prefill tokens/s (the prompt in one llama_decode) and decode ms per step (one token), medians of
--repeats.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def convert(args):
    source = Path(args.llama_cpp)
    sys.path.insert(0, str(source))
    sys.path.insert(1, str(source / "gguf-py"))
    import gguf  # noqa: E402
    import conversion.llama  # noqa: E402
    import conversion.qwen  # noqa: E402

    def placeholder_vocabulary(self):
        size = self.hparams["vocab_size"]
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
        tokens += [f"[PAD{i}]" for i in range(len(tokens), size)]
        types += [gguf.TokenType.UNUSED] * (size - len(types))
        self.gguf_writer.add_tokenizer_model("llama")
        self.gguf_writer.add_tokenizer_pre("default")
        self.gguf_writer.add_token_list(tokens)
        self.gguf_writer.add_token_scores([0.0] * size)
        self.gguf_writer.add_token_types(types)
        self.gguf_writer.add_bos_token_id(1)
        self.gguf_writer.add_eos_token_id(2)

    conversion.llama.LlamaModel.set_vocab = placeholder_vocabulary
    for name in dir(conversion.qwen):
        kind = getattr(conversion.qwen, name)
        if isinstance(kind, type) and hasattr(kind, "set_vocab"):
            kind.set_vocab = placeholder_vocabulary
    sys.argv = ["convert_hf_to_gguf.py", args.checkpoint, "--outtype", args.outtype, "--outfile", args.output]
    sys.path.insert(0, str(source))
    import convert_hf_to_gguf  # noqa: E402
    convert_hf_to_gguf.main()


def timed(args):
    import numpy as np
    from llama_cpp import Llama
    with open(args.prompts_file) as file:
        prompt = [int(t) for t in file.readline().split()][:args.prompt]
    llm = Llama(model_path=args.gguf, n_ctx=args.prompt + args.new + 8, n_batch=args.prompt, n_ubatch=args.prompt, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)
    prefill, decode = [], []
    for _ in range(args.repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill.append(time.perf_counter() - start)
        steps = []
        for _ in range(args.new):
            # The last token's logits (llama.cpp keeps only those without logits_all).
            token = int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).argmax())
            start = time.perf_counter()
            llm.eval([token])
            steps.append(time.perf_counter() - start)
        decode.append(statistics.median(steps))
    p, d = statistics.median(prefill), statistics.median(decode)
    print(json.dumps({"impl": "llama.cpp", "gguf": args.gguf, "threads": args.threads, "batch": 1, "prompt": len(prompt), "new": args.new,
                      "prefill_tokens_per_s": len(prompt) / p, "decode_ms_per_step": d * 1000}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--llama-cpp", required=True)
    c.add_argument("--outtype", choices=["f32", "q8_0"], default="f32")
    c.add_argument("--output", required=True)
    t = sub.add_parser("time")
    t.add_argument("--gguf", required=True)
    t.add_argument("--prompts-file", required=True)
    t.add_argument("--prompt", type=int, default=128)
    t.add_argument("--new", type=int, default=64)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    convert(args) if args.command == "convert" else timed(args)
