"""Makes the Hugging Face MoE fixtures under Tests/Fixtures/hf/ (run from the repository root):

    pip install 'torch==2.13.0+cpu' transformers safetensors numpy
    python3 Tests/Fixtures/make_hf.py

Each fixture is a tiny random-initialised model of one architecture, saved as transformers saves
it (config.json + safetensors; one sharded, one in BF16, one in transformers 5's fused expert
layout; DeepSeek-V3 in block-scaled FP8 and GPT-OSS in MXFP4, quantised here and dequantised for
the expected outputs by transformers' own functions; Switch Transformers with its per-sequence
capacity and dropped tokens), with `input.npy` (hidden states [tokens, hidden], float32), `expected.npy` (what
stacking each decoder layer's post_attention_layernorm and MLP gives: h <- h + mlp(norm(h)),
computed by transformers' own modules in float32) and `routing.json` (each MoE layer's top-k
expert choices per token, from the layer's own router module).

Routing is kept off knife edges: candidate tokens whose selection keys (the router's top-k
boundary, and the group boundary for group-limited routers) are closer than GAP in any layer are
discarded, so float32 rounding differences between two correct implementations cannot flip a
choice. The Swift test suite reads these files; it never runs Python.
"""
import json
import os
import shutil
import tempfile

import numpy as np
import torch
import transformers as T
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.integrations.finegrained_fp8 import _dequantize_fp8_weight
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf")
TOKENS = 48          # divisible by 1, 2, 4 and 8 ranks
CANDIDATES = 1024    # tokens drawn before the knife-edge filter
GAP = 2e-3           # smallest selection-key gap kept (float32 error is ~1e-6 here)
COMMON = dict(vocab_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1)


def configs():
    """(fixture name, config, how to save) for every architecture."""
    return [
        ("mixtral", T.MixtralConfig(**COMMON, intermediate_size=24, num_local_experts=8, num_experts_per_tok=2), "per-expert"),
        ("qwen2_moe", T.Qwen2MoeConfig(**COMMON, intermediate_size=40, moe_intermediate_size=16, shared_expert_intermediate_size=24,
                                       num_experts=8, num_experts_per_tok=2, mlp_only_layers=[1], norm_topk_prob=False), "sharded"),
        ("qwen3_moe", T.Qwen3MoeConfig(**COMMON, intermediate_size=40, moe_intermediate_size=16, num_experts=16, num_experts_per_tok=4,
                                       head_dim=16, norm_topk_prob=True), "fused"),
        ("olmoe", T.OlmoeConfig(**COMMON, intermediate_size=16, num_experts=8, num_experts_per_tok=2), "bf16"),
        ("deepseek_v2", T.DeepseekV2Config(**COMMON, intermediate_size=40, moe_intermediate_size=16, n_routed_experts=8,
                                           num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1, n_group=4, topk_group=2,
                                           topk_method="group_limited_greedy", routed_scaling_factor=1.5, kv_lora_rank=8,
                                           q_lora_rank=None, qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=8), "per-expert"),
        ("deepseek_v3", T.DeepseekV3Config(**COMMON, intermediate_size=40, moe_intermediate_size=16, n_routed_experts=16,
                                           num_experts_per_tok=3, n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2,
                                           routed_scaling_factor=2.5, norm_topk_prob=True, kv_lora_rank=8, q_lora_rank=8,
                                           qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=8), "per-expert"),
        ("gpt_oss", T.GptOssConfig(**COMMON, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2, head_dim=16,
                                   swiglu_limit=1.5), "per-expert"),
        ("deepseek_v3_fp8", T.DeepseekV3Config(**COMMON, intermediate_size=40, moe_intermediate_size=16, n_routed_experts=16,
                                               num_experts_per_tok=3, n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2,
                                               routed_scaling_factor=2.5, norm_topk_prob=True, kv_lora_rank=8, q_lora_rank=8,
                                               qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=8), "fp8"),
        ("gpt_oss_mxfp4", T.GptOssConfig(**COMMON, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2, head_dim=16,
                                         swiglu_limit=1.5), "mxfp4"),
    ]


FP8_BLOCK = [16, 16]  # DeepSeek-V3 uses 128×128; smaller here so a matrix spans several blocks


def quantise_fp8(weight):
    """Block-scaled FP8 E4M3 as DeepSeek-V3 stores it: scale_inv = amax / 448 per block."""
    rows, columns = weight.shape
    scale_rows, scale_columns = -(-rows // FP8_BLOCK[0]), -(-columns // FP8_BLOCK[1])
    scale_inv = torch.zeros(scale_rows, scale_columns)
    quantised = torch.zeros_like(weight)
    for i in range(scale_rows):
        for j in range(scale_columns):
            block = weight[i * FP8_BLOCK[0]:(i + 1) * FP8_BLOCK[0], j * FP8_BLOCK[1]:(j + 1) * FP8_BLOCK[1]]
            scale = float(block.abs().max()) / 448 or 1.0
            scale_inv[i, j] = scale
            quantised[i * FP8_BLOCK[0]:(i + 1) * FP8_BLOCK[0], j * FP8_BLOCK[1]:(j + 1) * FP8_BLOCK[1]] = block / scale
    return quantised.to(torch.float8_e4m3fn), scale_inv


def quantise_mxfp4(weight):
    """MXFP4 as GPT-OSS stores its experts: `weight` [E, in, out] is stored transposed,
    [E, out, in/32, 16] bytes (two E2M1 codes each, low nibble first) and [E, out, in/32] E8M0
    scales (2^(s−127)), the scale the smallest power of two that brings the block within ±6."""
    transposed = weight.transpose(1, 2).contiguous()  # [E, rows, columns]
    experts, rows, columns = transposed.shape
    grouped = transposed.reshape(experts, rows, columns // 32, 32)
    amax = grouped.abs().amax(dim=-1).clamp(min=1e-30)
    exponent = torch.ceil(torch.log2(amax / 6)).clamp(-127, 127)
    scaled = grouped / torch.pow(2.0, exponent).unsqueeze(-1)
    values = torch.tensor(FP4_VALUES[:8])
    magnitude = (scaled.abs().unsqueeze(-1) - values).abs().argmin(dim=-1)
    codes = (magnitude + torch.where(scaled < 0, 8, 0)).to(torch.uint8)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()
    scales = (exponent + 127).to(torch.uint8)
    return blocks, scales


def quantised_checkpoint(storage, source, target):
    """Rewrites the float checkpoint in `source` as an fp8 or mxfp4 one in `target`; returns the
    dequantised tensors (by checkpoint name), computed with transformers' own dequantisers."""
    os.makedirs(target)
    for name in os.listdir(source):
        if not name.endswith(".safetensors"):
            shutil.copy(os.path.join(source, name), target)
    tensors, dequantised = {}, {}
    with safe_open(os.path.join(source, "model.safetensors"), "pt") as file:
        for name in file.keys():
            tensor = file.get_tensor(name)
            if storage == "fp8" and name.endswith("proj.weight") and ".mlp." in name:
                weight, scale_inv = quantise_fp8(tensor)
                tensors[name], tensors[name + "_scale_inv"] = weight, scale_inv
                dequantised[name] = _dequantize_fp8_weight(weight, scale_inv, FP8_BLOCK, torch.float32)
            elif storage == "mxfp4" and (name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj")):
                blocks, scales = quantise_mxfp4(tensor)
                tensors[name + "_blocks"], tensors[name + "_scales"] = blocks, scales
                dequantised[name] = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
            else:
                tensors[name] = tensor
    save_file(tensors, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(target, "config.json")) as file:
        config = json.load(file)
    config["quantization_config"] = ({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": FP8_BLOCK}
                                     if storage == "fp8" else {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]})
    with open(os.path.join(target, "config.json"), "w") as file:
        json.dump(config, file, indent=2)
    return dequantised


def dequantised_model(config, source, dequantised):
    """The model whose weights are the checkpoint in `source` with `dequantised` substituted."""
    with tempfile.TemporaryDirectory() as folder:
        for name in os.listdir(source):
            if not name.endswith(".safetensors"):
                shutil.copy(os.path.join(source, name), folder)
        with safe_open(os.path.join(source, "model.safetensors"), "pt") as file:
            tensors = {name: dequantised.get(name, file.get_tensor(name)) for name in file.keys()}
        save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


SWITCH_SEQUENCE = 12  # tokens per sequence of the Switch fixture (its capacity is per sequence)


def switch_config():
    return T.SwitchTransformersConfig(vocab_size=16, d_model=32, d_ff=24, d_kv=8, num_heads=2, num_layers=4, num_decoder_layers=1,
                                      num_sparse_encoder_layers=2, num_sparse_decoder_layers=1, num_experts=8, expert_capacity=3,
                                      encoder_sparse_step=2, decoder_sparse_step=1)


def switch_forward(model, hidden):
    """The encoder's feed-forward sublayers on [sequences, SWITCH_SEQUENCE, d]: outputs, per
    sparse layer the kept expert per token (-1 when dropped), and the router's top-1 margin."""
    x = hidden.view(-1, SWITCH_SEQUENCE, hidden.shape[-1])
    choices, gaps = [], []
    for block in model.encoder.block:
        feed_forward = block.layer[-1]
        if block.is_sparse:
            router = feed_forward.mlp.router
            normed = feed_forward.layer_norm(x)
            expert_index, _, logits = router(normed)
            kept = torch.where(expert_index.sum(-1) > 0, expert_index.argmax(-1), torch.full_like(expert_index.argmax(-1), -1))
            choices.append(kept.reshape(-1, 1))
            ordered = logits.reshape(-1, logits.shape[-1]).sort(dim=-1, descending=True).values
            gaps.append(ordered[:, 0] - ordered[:, 1])
        else:
            choices.append(None)
        x = feed_forward(x)
    return x.reshape(-1, hidden.shape[-1]), choices, gaps


def make_switch(index):
    """Switch Transformers: capacity per sequence, with drops; tokens are replaced until every
    router margin in the real (dropping) forward clears GAP."""
    name = "switch_transformers"
    config = switch_config()
    torch.manual_seed(index)
    model = T.SwitchTransformersForConditionalGeneration(config).eval()
    reinitialise(model, seed=100 + index)
    generator = torch.Generator().manual_seed(200 + index)
    pool = torch.randn(CANDIDATES, config.d_model, generator=generator)
    with torch.no_grad():
        chosen = list(range(TOKENS))
        following = TOKENS
        while True:
            expected, choices, gaps = switch_forward(model, pool[chosen])
            failing = torch.nonzero(torch.stack(gaps).min(dim=0).values < GAP).squeeze(-1).tolist()
            if not failing:
                break
            for position in failing:
                chosen[position] = following
                following += 1
        hidden = pool[chosen].contiguous()
        dropped = sum(int((c < 0).sum()) for c in choices if c is not None)
        assert dropped > 0, "the Switch fixture must drop some tokens"
    directory = os.path.join(ROOT, name)
    model.save_pretrained(directory)
    np.save(os.path.join(directory, "input.npy"), hidden.numpy().astype(np.float32))
    np.save(os.path.join(directory, "expected.npy"), expected.numpy().astype(np.float32))
    smallest = min(float(g.min()) for g in gaps)
    with open(os.path.join(directory, "routing.json"), "w") as file:
        json.dump({"top_k": 1, "sequence_length": SWITCH_SEQUENCE, "smallest_selection_gap": smallest,
                   "layers": [None if c is None else c.tolist() for c in choices]}, file)
    print(f"{name}: per-expert, {TOKENS} tokens in sequences of {SWITCH_SEQUENCE}, {dropped} routes dropped, "
          f"smallest selection gap {smallest:.4f}, max |expected| {float(expected.abs().max()):.3f}")


def reinitialise(model, seed):
    """Weights with variance ~1/fan-in (transformers' 0.02 makes routing near-uniform and
    outputs tiny), norm scales 1 ± 0.2, biases ± 0.1; routers three times stronger so that
    routing is decisive."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = parameter.shape
            if name.endswith("layernorm.weight") or name.endswith("norm.weight") or name.endswith("layer_norm.weight"):
                value = 1 + 0.4 * (torch.rand(shape, generator=generator) - 0.5)
            elif parameter.dim() == 1 or name.endswith("_bias") or name.endswith(".bias"):
                value = 0.1 * torch.randn(shape, generator=generator)
            else:
                # GPT-OSS stores its experts [E, in, out]; everything else [.., out, in].
                gpt_oss_expert = "gptoss" in type(model).__name__.lower() and ".experts." in name
                fan_in = shape[-2] if gpt_oss_expert else shape[-1]
                value = torch.randn(shape, generator=generator) / fan_in ** 0.5
                if name.endswith("gate.weight") or name.endswith("router.weight") or name.endswith("classifier.weight"):
                    value = value * 3
            parameter.copy_(value)
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(0.05 * torch.randn(buffer.shape, generator=generator))


def router_of(mlp):
    return getattr(mlp, "router", None) or getattr(mlp, "gate", None)


def selection_gaps(kind, config, router, normed):
    """Per token, the smallest gap at a routing boundary (top-k, and groups where used)."""
    logits = torch.nn.functional.linear(normed, router.weight, getattr(router, "bias", None) if kind == "gpt_oss" else None)
    k = config.num_experts_per_tok
    experts = logits.shape[-1]
    if kind == "deepseek_v3":
        keys = logits.sigmoid() + router.e_score_correction_bias
    elif kind == "deepseek_v2":
        keys = logits.softmax(dim=-1)
    else:
        keys = logits
    gaps = []
    if kind in ("deepseek_v2", "deepseek_v3") and config.n_group > 1:
        grouped = keys.view(-1, config.n_group, experts // config.n_group)
        group_scores = grouped.max(dim=-1).values if kind == "deepseek_v2" else grouped.topk(2, dim=-1)[0].sum(dim=-1)
        ordered = group_scores.sort(dim=-1, descending=True).values
        gaps.append(ordered[:, config.topk_group - 1] - ordered[:, config.topk_group])
        top_groups = group_scores.topk(config.topk_group, dim=-1).indices
        mask = torch.zeros_like(group_scores).scatter_(1, top_groups, 1).bool()
        mask = mask.unsqueeze(-1).expand(-1, config.n_group, experts // config.n_group).reshape(-1, experts)
        keys = keys.masked_fill(~mask, float("-inf"))
    ordered = keys.sort(dim=-1, descending=True).values
    gaps.append(ordered[:, k - 1] - ordered[:, k])
    return torch.stack(gaps).min(dim=0).values


def run_layers(kind, model, hidden):
    """Stacks each decoder layer's FFN half; returns the output, each layer's choices and gaps."""
    config = model.config
    x = hidden.clone()
    choices, gaps = [], []
    for layer in model.model.layers:
        normed = layer.post_attention_layernorm(x)
        router = router_of(layer.mlp)
        if router is not None and hasattr(layer.mlp, "experts"):
            _, _, indices = router(normed)
            choices.append(indices.sort(dim=-1).values)
            gaps.append(selection_gaps(kind, config, router, normed))
        else:
            choices.append(None)
        out = layer.mlp(normed.unsqueeze(0))
        if isinstance(out, tuple):
            out = out[0]
        x = x + out.squeeze(0)
    return x, choices, gaps


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    for index, (name, config, storage) in enumerate(configs()):
        torch.manual_seed(index)
        model = T.AutoModelForCausalLM.from_config(config).eval()
        reinitialise(model, seed=100 + index)
        if storage == "bf16":
            model = model.to(torch.bfloat16).float()   # the values a BF16 checkpoint holds, computed in float32
        directory = os.path.join(ROOT, name)
        if storage in ("fp8", "mxfp4"):
            # Quantise the saved checkpoint; the expected outputs use transformers' dequantisation of it.
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                dequantised = quantised_checkpoint(storage, folder, directory)
                model = dequantised_model(config, folder, dequantised)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(200 + index)
            candidates = torch.randn(CANDIDATES, config.hidden_size, generator=generator)
            _, _, gaps = run_layers(name, model, candidates)
            keep = torch.stack(gaps).min(dim=0).values >= GAP
            chosen = torch.nonzero(keep).squeeze(-1)[:TOKENS]
            assert chosen.numel() == TOKENS, f"{name}: only {chosen.numel()} tokens clear the gap"
            hidden = candidates[chosen].contiguous()
            expected, choices, gaps = run_layers(name, model, hidden)
            smallest = min(float(g.min()) for g in gaps)
        if storage in ("fp8", "mxfp4"):
            pass  # written above
        elif storage == "bf16":
            model.to(torch.bfloat16).save_pretrained(directory)
        elif storage == "sharded":
            model.save_pretrained(directory, max_shard_size="60KB")
        elif storage == "fused":
            # transformers 5's in-memory layout: experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I].
            os.makedirs(directory)
            config.save_pretrained(directory)
            save_file({key: value.contiguous() for key, value in model.state_dict().items()
                       if not key.startswith("lm_head")}, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        else:
            model.save_pretrained(directory)
        np.save(os.path.join(directory, "input.npy"), hidden.numpy().astype(np.float32))
        np.save(os.path.join(directory, "expected.npy"), expected.numpy().astype(np.float32))
        routing = {"top_k": config.num_experts_per_tok, "smallest_selection_gap": smallest,
                   "layers": [None if c is None else c.tolist() for c in choices]}
        with open(os.path.join(directory, "routing.json"), "w") as file:
            json.dump(routing, file)
        print(f"{name}: {storage}, {TOKENS} tokens, smallest selection gap {smallest:.4f}, "
              f"max |expected| {float(expected.abs().max()):.3f}, layers {['dense' if c is None else 'moe' for c in choices]}")
    make_switch(len(configs()))


if __name__ == "__main__":
    main()
