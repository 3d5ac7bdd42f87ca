#!/usr/bin/env python3
"""The overlap benchmark (Benchmarks/README.md, "Overlap"): `moe run` of one MoE layer at
overlap degrees 1, 2, 4, 8 and auto, interleaved in rounds, on a communication-heavy and a
compute-heavy layer. Prints one markdown table per setting and writes an SVG of layer time
against the degree.

usage: overlap_bench.py MOE WORKDIR SETTING [--rounds N] [--steps S]
SETTING: sim-2x4   8 ranks on 2 simulated nodes (Topologies/2x4.json: 50 us, 1 GB/s links)
         sim-2x1   2 ranks (one per core) on 2 simulated nodes with the same links
         host      2 ranks on one host, no simulation (target: no slower than degree 1)
         netns     2 ranks on 2 namespace nodes (Launch/sim-cluster up 2 --rate R --ranks-per-node 1
                   must be up; MOE is then the word 'moe', run through Launch/sim-cluster run)
Environment: RUN_EXTRA (extra `moe run` arguments, e.g. "--overlap-progress chunks"), SUFFIX
(appended to the plot's name).
Per run it reads the --report JSON and takes medians over the steps after the first two:
layer time = step time - gate time (the norm and router, which nothing overlaps);
at degree 1 also exchange alone = pack + dispatch + combine and experts alone = experts, of the
same steps. The ratios are against max(exchange alone, experts alone) of the same round.
"""
import json, os, statistics, subprocess, sys

moe, work, setting = sys.argv[1], sys.argv[2], sys.argv[3]
rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 8
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
os.makedirs(work, exist_ok=True)

# Layers: d_model 1024, E 8, top-2, dropless, ReLU with biases; only d_ff and tokens differ.
layers = {"comm": 256, "compute": 4096}
for name, dff in layers.items():
    json.dump({"name": f"overlap-{name}", "d_model": 1024, "d_ff": dff, "activation": "relu",
               "layer_defaults": {"experts": 8, "top_k": 2, "capacity_factor": 0, "min_capacity": 1},
               "layers": [{}]}, open(f"{work}/overlap-{name}.json", "w"))
topology_2x1 = json.load(open(f"{root}/Topologies/2x4.json"))
topology_2x1.update(name="2x1", description="2 simulated nodes x 1 rank; links as 2x4.json",
                    nodes=[{"name": "node0", "ranks": [0]}, {"name": "node1", "ranks": [1]}])
json.dump(topology_2x1, open(f"{work}/2x1.json", "w"), indent=2)

ranks = 8 if setting == "sim-2x4" else 2
tokens = {"comm": 512 if ranks == 8 else 2048, "compute": 128 if ranks == 8 else 512}
degrees = ["1", "2", "4", "8", "auto"]


def run(layer, degree, index):
    report = f"{work}/run-{index}.json"
    if os.path.exists(report):
        os.remove(report)
    job = [moe, "run", "--model", f"{work}/overlap-{layer}.json", "--tokens-per-rank", str(tokens[layer]), "--steps", str(steps),
           "--quiet", "--report", report, "--overlap-degree", degree] + os.environ.get("RUN_EXTRA", "").split()
    if setting == "sim-2x4":
        job += ["--topology", f"{root}/Topologies/2x4.json", "--simulate-links", "on"]
    elif setting == "sim-2x1":
        job += ["--topology", f"{work}/2x1.json", "--simulate-links", "on"]
    if setting == "netns" and os.path.exists("/run/swiftmoe-sim-cluster/topology.json"):
        job += ["--topology", "/run/swiftmoe-sim-cluster/topology.json"]
    if setting == "netns":
        arguments = ["bash", f"{root}/Launch/sim-cluster", "run", "-np", str(ranks), "--"] + job
    else:
        arguments = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + job
    done = subprocess.run(arguments, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(arguments)}\n{done.stdout}\n{done.stderr}")
    chosen = [line for line in done.stdout.splitlines() if "(auto)" in line]
    measured = json.load(open(report))["runs"][0]["steps"][2:]
    phase = lambda step, *names: sum(step["phase_seconds_slowest_rank"][name] for name in names)
    return dict(layer=statistics.median(step["seconds"] - phase(step, "gate") for step in measured),
                exchange=statistics.median(phase(step, "pack", "dispatch", "combine") for step in measured),
                experts=statistics.median(phase(step, "experts") for step in measured),
                chosen=chosen[0].split("overlap degree ")[1].split(" ")[0] if chosen else None,
                reason=chosen[0] if chosen else None)


results = {(layer, degree): [] for layer in layers for degree in degrees}
index = 0
for round_ in range(rounds):
    for layer in layers:
        for degree in degrees:
            results[(layer, degree)].append(run(layer, degree, index))
            index += 1

print(f"### {setting}{' ' + os.environ['RUN_EXTRA'] if os.environ.get('RUN_EXTRA') else ''}: {ranks} ranks, {rounds} rounds interleaved, {steps} steps each (medians of steps 3..{steps}, then of rounds)\n")
print("| layer | tokens/rank | exchange alone (ms) | experts alone (ms) | degree | layer (ms) | ÷ max(exchange, experts) | ÷ degree 1 |")
print("|---|---|---|---|---|---|---|---|")
svg_series = {}
for layer in layers:
    alone_exchange = statistics.median(r["exchange"] for r in results[(layer, "1")])
    alone_experts = statistics.median(r["experts"] for r in results[(layer, "1")])
    bound = max(alone_exchange, alone_experts)
    sequential = statistics.median(r["layer"] for r in results[(layer, "1")])
    svg_series[layer] = []
    for degree in degrees:
        time = statistics.median(r["layer"] for r in results[(layer, degree)])
        label = degree
        if degree == "auto":
            picks = sorted({r["chosen"] for r in results[(layer, degree)]})
            label = f"auto (chose {','.join(picks)})"
        else:
            svg_series[layer].append((int(degree), time))
        print(f"| {layer} (d_ff {layers[layer]}) | {tokens[layer]} | {alone_exchange * 1e3:.1f} | {alone_experts * 1e3:.1f} | {label} | "
              f"{time * 1e3:.1f} | {time / bound:.2f} | {time / sequential:.2f} |")
    best = min(statistics.median(r["layer"] for r in results[(layer, d)]) for d in degrees if d != "auto")
    auto = statistics.median(r["layer"] for r in results[(layer, "auto")])
    print(f"| | | | | best fixed degree vs auto | auto ÷ best = {auto / best:.2f} | | |")
reasons = {r["reason"] for layer in layers for r in results[(layer, "auto")] if r["reason"]}
print("\nauto's reasons (first round of each layer):\n")
for layer in layers:
    print(f"- {results[(layer, 'auto')][0]['reason']}")

# SVG: layer time against degree, one line per layer, normalised to degree 1.
width, height, left, bottom = 420, 260, 50, 40
xs = [1, 2, 4, 8]
def x(degree): return left + (xs.index(degree)) * (width - left - 20) / (len(xs) - 1)
ymax = 1.5
def y(ratio): return height - bottom - min(ratio, ymax) / ymax * (height - bottom - 20)
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
         f'<text x="{left}" y="14">{setting}: layer time ÷ degree 1, against overlap degree</text>',
         f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="black"/>',
         f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="black"/>']
for degree in xs:
    parts.append(f'<text x="{x(degree) - 3}" y="{height - bottom + 14}">{degree}</text>')
for ratio in (0.5, 1.0, 1.5):
    parts.append(f'<text x="8" y="{y(ratio) + 4}">{ratio:.1f}</text><line x1="{left}" y1="{y(ratio)}" x2="{width - 20}" y2="{y(ratio)}" stroke="#ddd"/>')
for (layer, series), colour in zip(svg_series.items(), ("#c0392b", "#2471a3")):
    base = series[0][1]
    points = " ".join(f"{x(d):.1f},{y(t / base):.1f}" for d, t in series)
    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
    parts.append(f'<text x="{width - 120}" y="{y(series[-1][1] / base) - 6:.1f}" fill="{colour}">{layer}</text>')
parts.append("</svg>")
name = f"overlap-{setting}{os.environ.get('SUFFIX', '')}.svg"
open(f"{work}/{name}", "w").write("\n".join(parts))
print(f"\nplot: {name}")
