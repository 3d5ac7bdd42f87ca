import ClusterTopology
import Exchange
import ExpertParallel
import JobControl
import MessagePassing
import MoE

/// Something that watches a run: the console reporter, the JSON report, the routing-trace
/// recorder, the watchdog, testing aids. Every hook runs on every rank, in rank order of no
/// importance; a hook that communicates must do so on every rank alike. Defaults do nothing.
@MainActor
package protocol StepObserver: AnyObject {
    /// A session for `session.algorithm` is built and about to run its steps.
    func sessionDidStart(_ session: InferenceSession) throws
    /// Before step `step`'s input is read (kill and hang aids, the watchdog's phase).
    func stepWillStart(_ step: Int, session: InferenceSession) throws
    /// After the barrier, right before the forward pass.
    func stepWillForward(_ step: Int, session: InferenceSession) throws
    /// Step `outcome.step` finished on every rank (`batch`: this rank's outputs).
    func stepDidFinish(_ outcome: StepOutcome, batch: TokenBatch, session: InferenceSession) throws
    /// Every step of the session ran (or a signal stopped it after `completedSteps`).
    func sessionDidFinish(_ session: InferenceSession, completedSteps: Int) throws
}

extension StepObserver {
    package func sessionDidStart(_ session: InferenceSession) throws {}
    package func stepWillStart(_ step: Int, session: InferenceSession) throws {}
    package func stepWillForward(_ step: Int, session: InferenceSession) throws {}
    package func stepDidFinish(_ outcome: StepOutcome, batch: TokenBatch, session: InferenceSession) throws {}
    package func sessionDidFinish(_ session: InferenceSession, completedSteps: Int) throws {}
}

/// What a finished run left: the last step's outputs and plans, and whether a signal stopped it.
package struct RunResult {
    package var lastBatch: TokenBatch
    package var lastPlans: [RoutingPlan]
    /// The signal and the steps done when SIGTERM (or another) stopped the run.
    package var stopped: (signal: Int32, afterStep: Int)?
}

/// The step loop of `moe run`: for each exchange algorithm a fresh `InferenceSession` runs the
/// same steps on the same inputs; observers see every step; a termination signal ends the run
/// after the step in flight (every rank agrees at the step's end); and the outputs of every
/// algorithm must be bitwise those of the first (the algorithm never changes the numbers).
@MainActor
package struct StepLoop {
    package let configuration: RunConfiguration
    package let model: ModelConfiguration
    /// This rank's weights, FFNs prepared once for every algorithm's session (`InferenceSession.prepare`).
    package let weights: [PreparedLayerWeights]
    package let trace: RoutingTrace?
    package let world: Communicator
    package let topology: Topology
    package let links: SimulatedLinks?
    /// Rank-local input of step `step` (the same for every algorithm).
    package let input: (_ step: Int) throws -> TokenBatch

    package init(configuration: RunConfiguration, model: ModelConfiguration, weights: [PreparedLayerWeights], trace: RoutingTrace?,
                 world: Communicator, topology: Topology, links: SimulatedLinks?, input: @escaping (_ step: Int) throws -> TokenBatch) {
        self.configuration = configuration
        self.model = model
        self.weights = weights
        self.trace = trace
        self.world = world
        self.topology = topology
        self.links = links
        self.input = input
    }

    /// Runs every algorithm's steps, telling `observers`. Collective over `world`.
    package func run(observers: [any StepObserver], beacon: ProgressBeacon? = nil) throws -> RunResult {
        TerminationSignal.install()
        var firstOutput: [Float]?
        var last: RunResult?
        // The first algorithm's auto degrees hold for the others: a degree that splits experts'
        // rows changes the GEMMs' row counts, and the outputs must stay bitwise comparable.
        var chosenModes: [DispatchMode]?
        for algorithm in configuration.algorithms {
            let session = try InferenceSession(configuration: configuration, model: model, weights: weights, trace: trace, algorithm: algorithm,
                                               world: world, topology: topology, links: links,
                                               logStatistics: algorithm == configuration.algorithms[0], dispatchModes: chosenModes)
            if configuration.overlap == .auto { chosenModes = session.distributed.layers.map(\.dispatchMode) }
            if let beacon { session.distributed.attach(beacon) }
            for observer in observers { try observer.sessionDidStart(session) }
            let result = try runSteps(session, observers: observers, beacon: beacon)
            if result.stopped == nil, let firstOutput {
                let same = result.lastBatch.hidden.withUnsafeBytes { a in firstOutput.withUnsafeBytes { b in a.elementsEqual(b) } }
                if let differing = try world.lowestFailingRank(failed: !same) {
                    throw JobFailure(message: "exchange \(algorithm.rawValue) produced other outputs than \(configuration.algorithms[0].rawValue) on rank \(differing)", reportingRank: 0)
                }
            } else {
                firstOutput = result.lastBatch.hidden
            }
            last = result
            if result.stopped != nil { break }
        }
        return last!
    }

    private func runSteps(_ session: InferenceSession, observers: [any StepObserver], beacon: ProgressBeacon?) throws -> RunResult {
        let steps = configuration.steps
        var result: RunResult?
        for step in 0..<steps {
            for observer in observers { try observer.stepWillStart(step, session: session) }
            var batch = try input(step)
            beacon?.enter(phase: "barrier before the step")
            try world.barrier()
            for observer in observers { try observer.stepWillForward(step, session: session) }
            let outcome = try session.forward(&batch, step: step, lastStep: step == steps - 1, beacon: beacon)
            for observer in observers { try observer.stepDidFinish(outcome, batch: batch, session: session) }
            let signal = try world.allReduce(TerminationSignal.pending, .maximum)
            if step == steps - 1 || signal != 0 {
                result = RunResult(lastBatch: batch, lastPlans: outcome.result.plans, stopped: signal != 0 ? (signal, step + 1) : nil)
            }
            if signal != 0 { break }
        }
        let completed = result?.stopped?.afterStep ?? steps
        try session.finish()
        for observer in observers { try observer.sessionDidFinish(session, completedSteps: completed) }
        return result!
    }
}
