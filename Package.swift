// swift-tools-version:6.0
// SwiftMoE: a distributed Mixture-of-Experts runtime on OpenMPI and OpenBLAS.
// Layers and what each may import: docs/ARCHITECTURE.md.
import PackageDescription

let package = Package(
    name: "SwiftMoE",
    products: [
        .executable(name: "moe", targets: ["moe"]),
        .executable(name: "moe-bench", targets: ["moe-bench"]),
        .library(name: "MessagePassing", targets: ["MessagePassing"]),
        .library(name: "ClusterTopology", targets: ["ClusterTopology"]),
        .library(name: "Exchange", targets: ["Exchange"]),
    ],
    targets: [
        // C system libraries: a module map and a shim header each, found through pkg-config.
        .systemLibrary(
            name: "CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),

        // Hand-written CPU kernels (bf16, int8) with per-function target attributes, chosen at run
        // time, and oneDNN's matmul behind plain C calls (libdnnl-dev: no pkg-config file, so it is
        // linked by name); imported by one file of MoE (Experts/CPUKernels.swift).
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O2"])],
                linkerSettings: [.linkedLibrary("dnnl")]),

        // Pure parsers for the files users hand us (JSON today; .npy and safetensors later).
        .target(name: "FileFormats"),
        // The command-line option parser shared by moe and moe-bench.
        .target(name: "ArgumentParsing"),
        // Deterministic random streams (SplitMix64) for weights, inputs and traffic.
        .target(name: "RandomStreams"),
        // The only Swift code that calls MPI.
        .target(name: "MessagePassing", dependencies: ["CMPI"]),
        // Nodes, link classes and the all-to-all cost model. Pure: no MPI.
        .target(name: "ClusterTopology", dependencies: ["FileFormats"]),
        // Hand-written SVG line charts (benchmarks, stats).
        .target(name: "Plotting"),
        // All-to-all algorithms over a Communicator.
        .target(name: "Exchange", dependencies: ["MessagePassing", "ClusterTopology", "RandomStreams"]),
        // Pure MoE compute: router, experts (the one file that imports COpenBLAS), weights. No MPI.
        .target(name: "MoE", dependencies: ["COpenBLAS", "CKernels", "FileFormats", "RandomStreams"]),
        // The distributed layer: dispatcher, MoE layer, model over a Communicator.
        .target(name: "ExpertParallel", dependencies: ["MoE", "Exchange", "MessagePassing", "ClusterTopology"]),
        // The single-process oracle the tests compare the distributed model with.
        .target(name: "MoEReference", dependencies: ["MoE"]),
        // Hugging Face checkpoints to SwiftMoE's model format.
        .target(name: "CheckpointImport", dependencies: ["MoE", "FileFormats"]),
        // The coordinator: routing statistics, the stats log, capacity plans between steps.
        .target(name: "Coordination", dependencies: ["MoE", "ExpertParallel", "MessagePassing", "FileFormats"]),
        // Job control shared by moe and moe-bench: agree-before-failing, the job failure type,
        // topology resolution and link-simulation start, BLAS threads, shared option groups,
        // and the executables' common main.
        .target(name: "JobControl",
                dependencies: ["ArgumentParsing", "MessagePassing", "ClusterTopology", "Exchange", "FileFormats", "MoE"]),
        // The library session: one run loop (`InferenceSession`, `StepLoop`) built from a
        // `RunConfiguration`, with step observers; `moe run`, `moe-bench layer` and a decoder share it.
        .target(name: "Session",
                dependencies: ["JobControl", "MessagePassing", "ClusterTopology", "Exchange", "FileFormats", "MoE", "ExpertParallel", "Coordination"]),
        // The checkpoint's tokenizer.json: byte-level BPE and SentencePiece-style BPE. Pure.
        .target(name: "Tokenizer", dependencies: ["FileFormats"]),
        // Token generation: embeddings, attention per architecture, rotary tables, the KV cache,
        // sampling and the generation loop over the library session (data-parallel attention,
        // expert-parallel MoE layers).
        .target(name: "Decoder",
                dependencies: ["MoE", "ExpertParallel", "MessagePassing", "Session", "FileFormats", "RandomStreams"]),
        // The command-line tool.
        .executableTarget(
            name: "moe",
            dependencies: ["JobControl", "ArgumentParsing", "MessagePassing", "ClusterTopology", "Exchange", "FileFormats", "MoE", "ExpertParallel", "MoEReference",
                           "Coordination", "Plotting", "CheckpointImport", "Session", "Decoder", "Tokenizer"]),
        // The benchmarks (sources under Benchmarks/, results in Benchmarks/README.md).
        .executableTarget(
            name: "moe-bench",
            dependencies: ["JobControl", "ArgumentParsing", "MessagePassing", "ClusterTopology", "Exchange", "FileFormats", "MoE", "ExpertParallel", "RandomStreams", "Plotting", "Coordination", "Session"],
            path: "Benchmarks/Sources/moe-bench"),

        .testTarget(name: "FileFormatsTests", dependencies: ["FileFormats"]),
        .testTarget(name: "ClusterTopologyTests", dependencies: ["ClusterTopology"]),
        .testTarget(name: "ExchangeTests", dependencies: ["Exchange"]),
        .testTarget(name: "MoETests", dependencies: ["MoE"]),
        // Encode/decode against Hugging Face tokenizers' own output (Tests/Fixtures/tokenizers).
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer"]),
        // The dispatcher's pure kernels, header codec and plan-cache strategy, in process (no mpirun).
        .testTarget(name: "ExpertParallelTests", dependencies: ["ExpertParallel", "MoE", "Exchange", "RandomStreams"]),
        .testTarget(name: "CoordinationTests", dependencies: ["Coordination", "MoE"]),
        // Reads every module's imports and checks them against docs/ARCHITECTURE.md (no module deps).
        .testTarget(name: "ArchitectureTests"),
        .testTarget(name: "CheckpointImportTests", dependencies: ["CheckpointImport"]),
        .testTarget(name: "ArgumentParsingTests", dependencies: ["ArgumentParsing"]),
        // Launches `mpirun -np N moe ...` as child processes; never calls MPI itself.
        .testTarget(name: "MultiRankTests", dependencies: ["moe", "moe-bench", "FileFormats", "Exchange"]),
    ]
)
