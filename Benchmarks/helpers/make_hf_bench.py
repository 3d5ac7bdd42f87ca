"""Writes two random-initialised Hugging Face MoE checkpoints at a realistic width for
`moe-bench layer --model` (Benchmarks/README.md, "Imported architectures"):

    python3 Benchmarks/helpers/make_hf_bench.py /tmp/hf-bench      # needs torch + transformers

- qwen2_moe: hidden 1024, 2 layers (the second dense, d_ff 2816), 16 experts of d_ff 512, top-4,
  a sigmoid-gated shared expert of d_ff 2048 (Qwen1.5-MoE's shape, scaled down in depth);
- deepseek_v3: hidden 1024, 2 layers (the first dense, d_ff 2048), 32 experts of d_ff 256, top-4,
  sigmoid scores, 4 groups with the best 2 kept, one shared expert, routed_scaling_factor 2.5.

The checkpoints are not committed (about 100 MB each in BF16); only this script is.
"""
import os
import sys

import torch
import transformers as T

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/hf-bench"
common = dict(vocab_size=64, hidden_size=1024, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=8)
models = {
    "qwen2_moe": T.Qwen2MoeConfig(**common, intermediate_size=2816, moe_intermediate_size=512, shared_expert_intermediate_size=2048,
                                  num_experts=16, num_experts_per_tok=4, mlp_only_layers=[1], norm_topk_prob=False),
    "deepseek_v3": T.DeepseekV3Config(**common, intermediate_size=2048, moe_intermediate_size=256, n_routed_experts=32,
                                      num_experts_per_tok=4, n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2,
                                      routed_scaling_factor=2.5, norm_topk_prob=True, kv_lora_rank=64, q_lora_rank=128,
                                      qk_rope_head_dim=32, v_head_dim=64, qk_nope_head_dim=64),
}
for name, config in models.items():
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(os.path.join(out, name))
    print(name, sum(p.numel() for p in model.parameters()), "parameters")
