"""Makes the decoder fixtures under Tests/Fixtures/decoder/ (run from the repository root):

    pip install 'torch==2.13.0+cpu' transformers safetensors numpy
    python3 Tests/Fixtures/make_decoders.py

Each fixture is a tiny random-initialised causal LM of one architecture whose attention SwiftMoE
runs (Mixtral: GQA + RoPE; Qwen2-MoE: q/k/v biases and a gated shared expert; Qwen3-MoE: per-head
q/k RMSNorm; OLMoE: q/k RMSNorm over the whole projection), saved as transformers saves it, with
`prompts.json`: the prompts (token ids), each prompt's prefill logits (`logits.npy`, every
position of every prompt in order, float32 [positions, vocab]) and the 16 tokens
`model.generate` picks greedily after each prompt (batch 1, no EOS). Prompts whose top-2 logits
come within GAP of each other at any generated step are replaced, so float32 rounding in two
correct implementations cannot change a greedy choice. The Swift tests read these files; they
never run Python.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers as T

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "decoder")
NEW_TOKENS = 16
PROMPTS = 6
GAP = 1e-3
COMMON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False, eos_token_id=None, bos_token_id=None,
              pad_token_id=None)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizers  # noqa: E402  (the tokenizer fixtures' own generator)

# Two fixtures carry a tokenizer (their vocabulary is the tokenizer's), so text prompts can be
# checked end to end: Mixtral with SentencePiece-style BPE, Qwen2-MoE with byte-level BPE.
TOKENIZERS = {"mixtral": make_tokenizers.sentencepiece, "qwen2_moe": make_tokenizers.byte_level}
TEXTS = ["The quick brown fox", "Mixture-of-experts layers route", "It's 3.14159 and 2718", "Привет, как дела?",
         "emoji: 🙂🚀 and ∑", "def forward(x): return x", "tabs\tand  spaces", "東京は日本の首都です。", "MPI_Alltoallv(sendbuf"]


def configs():
    sizes = {name: make().get_vocab_size() for name, make in TOKENIZERS.items()}
    return [
        ("mixtral", T.MixtralConfig(**{**COMMON, "vocab_size": sizes["mixtral"]}, intermediate_size=24, num_local_experts=8, num_experts_per_tok=2, rope_theta=10000.0)),
        ("qwen2_moe", T.Qwen2MoeConfig(**{**COMMON, "vocab_size": sizes["qwen2_moe"]}, intermediate_size=40, moe_intermediate_size=16, shared_expert_intermediate_size=24,
                                       num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, rope_theta=10000.0)),
        ("qwen3_moe", T.Qwen3MoeConfig(**COMMON, intermediate_size=40, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                                       head_dim=8, norm_topk_prob=True, rope_theta=1000000.0)),
        ("olmoe", T.OlmoeConfig(**COMMON, intermediate_size=16, num_experts=8, num_experts_per_tok=2, rope_theta=10000.0)),
        # GPT-OSS: biases on all four projections, attention sinks, sliding-window and full layers
        # alternating (a window of 4 so the prompts outrun it), YaRN-scaled rotary embedding.
        ("gpt_oss", T.GptOssConfig(**COMMON, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2, head_dim=8,
                                   swiglu_limit=1.5, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                   rope_parameters=dict(rope_type="yarn", rope_theta=150000.0, factor=8.0, beta_fast=32.0, beta_slow=1.0,
                                                        original_max_position_embeddings=16, truncate=False))),
        # DeepSeek-V2: multi-head latent attention with the query projected directly (V2-Lite),
        # the complex (interleaved-pair) rotary embedding, one dense layer first.
        ("deepseek_v2", T.DeepseekV2Config(**{**COMMON, "num_key_value_heads": 4}, intermediate_size=40, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2,
                                           n_shared_experts=1, first_k_dense_replace=1, topk_method="greedy", routed_scaling_factor=1.0,
                                           kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4, v_head_dim=8, qk_nope_head_dim=8,
                                           rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
        # DeepSeek-V3: a low-rank query, interleaved rotary pairs, YaRN with mscale (the softmax
        # scale × mscale²), sigmoid group-limited routing.
        ("deepseek_v3", T.DeepseekV3Config(**{**COMMON, "num_key_value_heads": 4}, intermediate_size=40, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2,
                                           n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1, routed_scaling_factor=2.5,
                                           norm_topk_prob=True, kv_lora_rank=16, q_lora_rank=12, qk_rope_head_dim=4, v_head_dim=8,
                                           qk_nope_head_dim=8, rope_interleave=True,
                                           rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, mscale=1.0, mscale_all_dim=1.0,
                                                                beta_fast=32.0, beta_slow=1.0, original_max_position_embeddings=32))),
    ]


def reinitialise(model, seed):
    """Weights with variance ~1/fan-in (transformers' 0.02 makes every logit a near tie), norm
    scales 1 ± 0.2, biases ± 0.1, routers three times stronger."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = parameter.shape
            if name.endswith("norm.weight"):
                value = 1 + 0.4 * (torch.rand(shape, generator=generator) - 0.5)
            elif parameter.dim() == 1 or name.endswith(".bias"):
                value = 0.1 * torch.randn(shape, generator=generator)
            else:
                value = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
                if name.endswith("gate.weight"):
                    value = value * 3
            parameter.copy_(value)


def greedy(model, prompt):
    """model.generate's greedy tokens after `prompt`, and the smallest top-2 logit gap on the way."""
    ids = torch.tensor([prompt])
    # An explicit all-ones mask: without it generate masks out prompt tokens equal to pad_token_id.
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
    gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    return out.sequences[0, len(prompt):].tolist(), min(gaps)


def make(index, name, config):
    torch.manual_seed(index)
    model = T.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    reinitialise(model, seed=300 + index)
    folder = os.path.join(ROOT, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    generator = torch.Generator().manual_seed(400 + index)
    tokenizer = TOKENIZERS[name]() if name in TOKENIZERS else None
    if tokenizer:
        tokenizer.save(os.path.join(folder, "tokenizer.json"))
    prompts, generated, logits, texts = [], [], [], []
    with torch.no_grad():
        candidates = iter(TEXTS)
        while len(prompts) < PROMPTS:
            if tokenizer:
                text = next(candidates)
                prompt = tokenizer.encode(text, add_special_tokens=False).ids
            else:
                length = 3 + len(prompts) * 3 + int(torch.randint(0, 3, (1,), generator=generator))
                prompt = torch.randint(0, config.vocab_size, (length,), generator=generator).tolist()
            tokens, gap = greedy(model, prompt)
            if gap < GAP:
                continue
            prompts.append(prompt)
            generated.append(tokens)
            if tokenizer:
                texts.append({"prompt": text, "generated": tokenizer.decode(tokens, skip_special_tokens=False)})
            logits.append(model(torch.tensor([prompt])).logits[0].float().numpy())
    np.save(os.path.join(folder, "logits.npy"), np.concatenate(logits).astype(np.float32))
    with open(os.path.join(folder, "prompts.json"), "w", encoding="utf-8") as file:
        json.dump({"prompts": prompts, "greedy": generated, "texts": texts, "new_tokens": NEW_TOKENS, "transformers": T.__version__},
                  file, indent=1, ensure_ascii=False)
    print(name, [len(p) for p in prompts])


def main():
    only = sys.argv[1:]
    for index, (name, config) in enumerate(configs()):
        if not only or name in only:
            make(index, name, config)


if __name__ == "__main__":
    main()
