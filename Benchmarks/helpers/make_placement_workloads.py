#!/usr/bin/env python3
"""Workloads for the placement benchmark (Benchmarks/README.md, "Placement").

Writes into OUT_DIR (default /tmp/placement-bench):
  placement-e{16,32}-{dropless,c125}.json   model files: 2 MoE layers, top-2, d_model 256, d_ff 1024
  zipf-e{16,32}.npy                         int32 [steps, 2, tokens, 2]: every token's 2 experts drawn
                                            without replacement from a Zipf(1.2) popularity over a
                                            seeded permutation of the experts (the same every step)
  qwen2moe-e16.npy                          int32 [steps, 2, tokens, 2]: the router choices of a
                                            transformers Qwen2-MoE (random weights, 2 layers, 16
                                            experts, top-2) on random token ids, recorded with
                                            forward hooks as in docs/MODEL.md

numpy for the Zipf traces; torch + transformers for the recorded one (skipped with a note when
they are missing). Nothing here is needed by the tests.
"""
import json, os, sys
import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/placement-bench"
steps = int(os.environ.get("STEPS", "20"))
tokens = int(os.environ.get("TOKENS", "8192"))  # global tokens per step (8 ranks × 1024 = 4 × 2048)
os.makedirs(out, exist_ok=True)

for experts in (16, 32):
    for name, factor in (("dropless", 0), ("c125", 1.25)):
        layer = {"experts": experts, "top_k": 2, "capacity_factor": factor}  # capacity factor 0: dropless
        model = {"name": f"placement-e{experts}-{name}", "d_model": 256, "d_ff": 1024, "activation": "gelu",
                 "layers": [dict(layer), dict(layer)]}
        with open(f"{out}/placement-e{experts}-{name}.json", "w") as f:
            json.dump(model, f, indent=1)

    rng = np.random.default_rng(1200 + experts)
    popularity = 1.0 / np.arange(1, experts + 1) ** 1.2
    popularity /= popularity.sum()
    trace = np.empty((steps, 2, tokens, 2), dtype=np.int32)
    for layer in range(2):
        order = rng.permutation(experts)  # which expert is the most popular, per layer
        p = np.empty(experts)
        p[order] = popularity
        # Two distinct experts per token: Gumbel top-2 over log p is sampling without replacement.
        for step in range(steps):
            keys = np.log(p)[None, :] + rng.gumbel(size=(tokens, experts))
            trace[step, layer] = np.argsort(-keys, axis=1)[:, :2]
    np.save(f"{out}/zipf-e{experts}.npy", trace)
    share = np.bincount(trace[:, 0].ravel(), minlength=experts) / trace[:, 0].size
    print(f"zipf-e{experts}.npy: layer 0 route shares, hottest first: {np.round(np.sort(share)[::-1][:6], 3)} ...")

try:
    import torch
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM
except ImportError as error:
    print(f"skipping the recorded trace: {error}")
    sys.exit(0)

torch.manual_seed(16)
config = Qwen2MoeConfig(vocab_size=4096, hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
                        shared_expert_intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, num_experts=16, num_experts_per_tok=2, max_position_embeddings=1024,
                        norm_topk_prob=False)
model = Qwen2MoeForCausalLM(config).eval()
layers, k = model.model.layers, config.num_experts_per_tok
recorded = []


def record(choices, index):
    def hook(module, inputs, output):
        _, _, indices = output
        choices[index].append(indices.reshape(-1, k).to(torch.int32))
    return hook


sequence = 512
for step in range(steps):
    choices = {i: [] for i in range(len(layers))}
    handles = [layer.mlp.gate.register_forward_hook(record(choices, i)) for i, layer in enumerate(layers)]
    ids = torch.randint(0, config.vocab_size, (tokens // sequence, sequence), generator=torch.Generator().manual_seed(step))
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    recorded.append([torch.cat(choices[i]).numpy() for i in range(len(layers))])
trace = np.array(recorded, dtype=np.int32)
np.save(f"{out}/qwen2moe-e16.npy", trace)
share = np.bincount(trace[:, 0].ravel(), minlength=16) / trace[:, 0].size
print(f"qwen2moe-e16.npy {trace.shape}: layer 0 route shares, hottest first: {np.round(np.sort(share)[::-1][:6], 3)} ...")
