#!/usr/bin/env python3
"""The placement benchmark (Benchmarks/README.md, "Placement"): `moe run` with the static
placement against `--placement balanced` with R = 1 and 2, on the workloads
`make_placement_workloads.py` writes, interleaved in rounds. Prints one markdown table.

usage: placement_bench.py MOE WORKDIR [--rounds N] [--quick] [--two-ranks] [--only WORKLOAD]
Environment: MPIRUN_EXTRA (extra mpirun arguments), STEPS (default 20), K (rebalance every, 5),
DRIFT_PERIOD (the drifting workload's period in steps, 16).
Per run it reads the stats log and the --report JSON and reports, over the steps after the
first rebalance (steps K+1..): max/mean expert rows per rank (mean over steps and layers), the
slowest rank's expert seconds per step, the step time and tokens/s (medians), the drop rate, and
the migrations (count, MiB and ms per migration).
"""
import json, os, statistics, subprocess, sys

moe, work = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 2
steps = int(os.environ.get("STEPS", "20"))
k = int(os.environ.get("K", "5"))
extra = os.environ.get("MPIRUN_EXTRA", "").split()
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

placements = {
    "static": [],
    "static R=1": ["--redundant-experts", "1"],
    "balanced R=1": ["--placement", "balanced", "--redundant-experts", "1", "--rebalance-every", str(k)],
    "balanced R=2": ["--placement", "balanced", "--redundant-experts", "2", "--rebalance-every", str(k)],
}

# (ranks, experts, capacity, workload, topology)
cases = []
for capacity in ("dropless", "c125"):
    for workload in ("zipf", "drift", "qwen2moe"):
        cases.append((8, 16, capacity, workload, None))
cases += [(8, 32, "dropless", "zipf", None), (8, 32, "c125", "zipf", None),
          (4, 16, "dropless", "zipf", None), (4, 16, "c125", "zipf", None),
          (8, 16, "dropless", "zipf", "Topologies/2x4.json")]
if "--two-ranks" in sys.argv:  # one core per rank on this 2-core machine: imbalance costs wall time directly
    cases = [(2, 16, "dropless", "zipf", None), (2, 16, "c125", "zipf", None), (2, 16, "dropless", "drift", None)]
if "--only" in sys.argv:  # --only WORKLOAD: the 8-rank E = 16 cases of one workload
    only = sys.argv[sys.argv.index("--only") + 1]
    cases = [case for case in cases if case[3] == only and case[0] == 8 and case[1] == 16 and case[4] is None]
if "--quick" in sys.argv:
    cases = cases[:1]


def run(case, placement, index):
    ranks, experts, capacity, workload, topology = case
    stats, report = f"{work}/run-{index}.jsonl", f"{work}/run-{index}.json"
    for path in (stats, report):
        if os.path.exists(path):
            os.remove(path)
    arguments = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + extra + [
        moe, "run", "--model", f"{work}/placement-e{experts}-{capacity}.json", "--tokens-per-rank", str(8192 // ranks),
        "--steps", str(steps), "--quiet", "--stats", stats, "--report", report] + placements[placement]
    if workload == "drift":
        arguments += ["--drift", "3", "--drift-period", os.environ.get("DRIFT_PERIOD", "16")]
    else:
        arguments += ["--routing-trace", f"{work}/{workload}-e{experts}.npy"]
    if topology:
        arguments += ["--topology", topology, "--simulate-links", "on"]
    done = subprocess.run(arguments, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(arguments)}\n{done.stdout}\n{done.stderr}")
    lines = [json.loads(line) for line in open(stats)]
    runs = json.load(open(report))["runs"][0]["steps"]
    measured = range(k, steps)  # 0-based steps after the first rebalance
    balance = [max(layer["rows_by_rank"]) / (sum(layer["rows_by_rank"]) / ranks)
               for step in measured for layer in lines[step]["layers"] if sum(layer["rows_by_rank"]) > 0]
    expert = [max(lines[step]["expert_seconds_by_rank"]) for step in measured]
    seconds = [runs[step]["seconds"] for step in measured]
    tokens = runs[0]["tokens"]
    routed = sum(sum(layer["routed"]) for step in measured for layer in lines[step]["layers"])
    dropped = sum(sum(layer["dropped"]) for step in measured for layer in lines[step]["layers"])
    migrations = [step["migration"] for step in runs if step.get("migration")]
    return dict(balance=statistics.mean(balance), expert=statistics.median(expert), step=statistics.median(seconds),
                rate=tokens / statistics.median(seconds), drop=dropped / max(1, routed), migrations=migrations)


results = {}
index = 0
for _ in range(rounds):
    for case in cases:
        for placement in placements:  # interleaved: every placement of a case back to back, every round
            index += 1
            print(f"[{index}] {case} {placement}", file=sys.stderr, flush=True)
            results.setdefault((case, placement), []).append(run(case, placement, index))

print("| ranks | E | capacity | workload | links | placement | rows max/mean | slowest expert ms | step ms | tokens/s | × static | drop | migrations (MiB, ms each) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for case in cases:
    base = statistics.median(r["rate"] for r in results[(case, "static")])
    for placement in placements:
        samples = results[(case, placement)]
        def med(key):
            return statistics.median(r[key] for r in samples)
        migrations = samples[-1]["migrations"]
        moved = (f"{len(migrations)} ({statistics.mean(m['bytes'] for m in migrations) / 2**20:.2f}, "
                 f"{statistics.mean(m['seconds'] for m in migrations) * 1000:.1f})") if migrations else "0"
        ranks, experts, capacity, workload, topology = case
        print(f"| {ranks} | {experts} | {'dropless' if capacity == 'dropless' else 'C 1.25'} | {workload} | "
              f"{'2x4 simulated' if topology else 'one host'} | {placement} | {med('balance'):.2f} | {med('expert') * 1000:.1f} | "
              f"{med('step') * 1000:.1f} | {med('rate'):.0f} | {med('rate') / base:.2f} | {med('drop') * 100:.2f}% | {moved} |")
