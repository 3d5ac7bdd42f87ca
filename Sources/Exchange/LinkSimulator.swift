import ClusterTopology
import Glibc
import MessagePassing
import Synchronization

/// Why the link simulation could not start.
public struct LinkSimulationError: Error, CustomStringConvertible {
    public let description: String
}

/// Simulated inter-node links for a job on one machine: every message between ranks of
/// different topology nodes counts as arrived only at its modelled delivery time, so a
/// single-machine run shows what a cluster with those links would.
///
/// The model is the cost model's (`CostModel`, `docs/COST_MODEL.md`): each node has one uplink
/// and one downlink shared by its ranks; a transfer of b bytes from node A to node B starts when
/// it is posted and both A's uplink and B's downlink are free, occupies both for α_n + b/B_n, and
/// is delivered when it ends. Intra-node messages are not touched. Data is never touched either:
/// the simulation only delays when the receiver may use a message, so no byte delivered can
/// change. The delay is non-blocking: a receiver that tests its exchange before the delivery time
/// is told "not yet" and goes on computing; only a wait sleeps (`ExchangeTransport`).
///
/// Mechanism: the ranks share one small memory-mapped file (created by world rank 0, unlinked as
/// soon as every rank has mapped it, so nothing is left behind). It holds each node's link clocks
/// and, per ordered pair of world ranks, a ring of `ringSize` entries (state, delivery time, tag).
/// The sender reserves the links under a spin lock (an atomic word in the region; waiters yield
/// the core), writes the delivery time and the message's tag into a free entry and publishes it
/// (release) before posting the MPI send; the receiver, once MPI has delivered the message, takes
/// the oldest published entry with that tag (acquire, no lock) and frees it. Tags keep several
/// exchanges in flight at once apart (a pipelined layer completes them in any order); within one
/// tag MPI's non-overtaking rule makes the oldest entry the message's. Times are
/// `CLOCK_MONOTONIC`, which all processes of one host share — so the simulation needs every rank
/// on one host, which is its purpose.
@MainActor
public final class SimulatedLinks {
    public let topology: Topology
    /// Seconds a transfer holds both node links, per byte and fixed.
    private let latency: Double
    private let secondsPerByte: Double
    private let worldRank: Int
    private let worldSize: Int
    private let descriptor: Int32
    private let region: UnsafeMutableRawPointer
    private let regionBytes: Int
    /// Messages this rank has sent to each world rank (the ring position of the next).
    private var sent: [UInt64]
    /// Time spent waiting for simulated deliveries on this rank, seconds (for reports).
    public private(set) var heldSeconds = 0.0
    /// Inter-node messages this rank has sent under simulation.
    public private(set) var simulatedMessages = 0

    /// Undelivered messages one rank may have towards another: a pipelined layer of degree N has
    /// at most 2N + 2 per pair in flight (its chunks' dispatches and combines), so this bounds
    /// the overlap degree (`maxInFlightPerPair`).
    nonisolated static let ringSize = 128
    /// Exchanges of one pair that may be in flight at once under simulation.
    public nonisolated static let maxInFlightPerPair = ringSize / 2
    static let magic: UInt64 = 0x5357_4D4F_454C_4E4B  // "SWMOELNK"

    // Region layout (8-byte words): [magic][lock][up clocks: nodes][down clocks: nodes]
    // then per pair (s, d): [state: ringSize][delivery: ringSize][tag: ringSize].
    // State and lock words are accessed only atomically (state 0: free, else sequence + 1);
    // clocks only under the lock; an entry's delivery and tag are written before its state is
    // released and read after it is acquired.
    private static let headerWords = 2
    private static let pairWords = 3 * ringSize
    private var nodeCount: Int { topology.nodes.count }
    /// A node link's clock: seconds at which it is next free (raw Double, accessed under the lock).
    private func clock(uplink: Bool, node: Int) -> UnsafeMutableRawPointer {
        region + 8 * (Self.headerWords + (uplink ? 0 : nodeCount) + node)
    }
    private func pairBase(_ source: Int, _ destination: Int) -> UnsafeMutableRawPointer {
        region + 8 * (Self.headerWords + 2 * nodeCount + (source * worldSize + destination) * Self.pairWords)
    }
    private func atomicWord(_ address: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> {
        address.assumingMemoryBound(to: Atomic<UInt64>.self)
    }
    private var lockWord: UnsafeMutablePointer<Atomic<UInt64>> { atomicWord(region + 8) }

    private func lock() {
        while !lockWord.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { sched_yield() }
    }
    private func unlock() { lockWord.pointee.store(0, ordering: .releasing) }

    /// Creates the shared region (collective over `world`; every rank must call it).
    public init(world: Communicator, topology: Topology) throws {
        self.topology = topology
        latency = topology.interNode.latencyMicroseconds * 1e-6
        secondsPerByte = 1 / (topology.interNode.bandwidthGigabytesPerSecond * 1e9)
        worldRank = world.rank
        worldSize = world.size
        sent = [UInt64](repeating: 0, count: world.size)
        regionBytes = 8 * (Self.headerWords + 2 * topology.nodes.count + world.size * world.size * Self.pairWords)

        // Rank 0 creates the file; everyone learns its name or rank 0's failure.
        var path = ""
        var failure = ""
        if world.rank == 0 {
            let directory = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
            var template = Array("\(directory)/swiftmoe-links-XXXXXX".utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            if fd < 0 {
                failure = "cannot create the link-simulation file in \(directory): \(String(cString: strerror(errno)))"
            } else {
                path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
                if ftruncate(fd, off_t(regionBytes)) != 0 { failure = "cannot size \(path): \(String(cString: strerror(errno)))" }
                close(fd)
            }
        }
        switch try world.broadcastOutcome(failure.isEmpty ? .success(path) : .failure(RootFailure(message: failure)), root: 0) {
        case let .success(shared): path = shared
        case let .failure(failure): throw LinkSimulationError(description: failure.message)
        }
        let fd = open(path, O_RDWR)
        var mapped: UnsafeMutableRawPointer?
        if fd >= 0 {
            let address = mmap(nil, regionBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if address != MAP_FAILED { mapped = address }
        }
        let failedRank = try world.lowestFailingRank(failed: mapped == nil)
        try world.barrier()
        if world.rank == 0 { unlink(path) }
        if let failedRank {
            if let mapped { munmap(mapped, regionBytes) }
            if fd >= 0 { close(fd) }
            throw LinkSimulationError(description: "rank \(failedRank) cannot map the link-simulation file \(path)")
        }
        descriptor = fd
        region = mapped!
        // The file starts zeroed (ftruncate): unlocked, clocks at 0, no message published.
        // Bind the atomic words (magic, lock, and each pair's state words); clocks, delivery
        // times and tags stay raw memory.
        region.bindMemory(to: Atomic<UInt64>.self, capacity: Self.headerWords)
        for pair in 0..<(world.size * world.size) {
            let base = region + 8 * (Self.headerWords + 2 * topology.nodes.count + pair * Self.pairWords)
            base.bindMemory(to: Atomic<UInt64>.self, capacity: Self.ringSize)
        }
        if world.rank == 0 { atomicWord(region).pointee.store(Self.magic, ordering: .relaxed) }
        try world.barrier()
    }

    isolated deinit {
        munmap(region, regionBytes)
        close(descriptor)
    }

    /// Seconds on the host's monotonic clock.
    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Reserves the links for a message of `bytes` with `tag` from this rank to world rank
    /// `destination` and publishes its delivery time; call just before posting the send.
    func willSend(toWorldRank destination: Int, bytes: Int, tag: Int) {
        let from = topology.nodeOfRank[worldRank], to = topology.nodeOfRank[destination]
        guard from != to else { return }
        let sequence = sent[destination]
        sent[destination] += 1
        simulatedMessages += 1
        let base = pairBase(worldRank, destination)
        let slot = Int(sequence % UInt64(Self.ringSize))
        let state = atomicWord(base + 8 * slot)
        // An entry is free once its message was received; a sender a whole ring ahead waits.
        while state.pointee.load(ordering: .acquiring) != 0 { sched_yield() }
        lock()
        let up = clock(uplink: true, node: from), down = clock(uplink: false, node: to)
        let start = max(Self.now(), up.load(as: Double.self), down.load(as: Double.self))
        let end = start + latency + Double(bytes) * secondsPerByte
        up.storeBytes(of: end, as: Double.self)
        down.storeBytes(of: end, as: Double.self)
        unlock()
        (base + 8 * (Self.ringSize + slot)).storeBytes(of: end, as: Double.self)
        (base + 8 * (2 * Self.ringSize + slot)).storeBytes(of: Int64(tag), as: Int64.self)
        state.pointee.store(sequence + 1, ordering: .releasing)
    }

    /// The delivery time (`now()` seconds) of the oldest message with `tag` from world rank
    /// `source` that MPI has delivered to this rank, consuming its entry; nil for an intra-node
    /// message (delivered when MPI delivers it).
    func deliveryTime(fromWorldRank source: Int, tag: Int) -> Double? {
        guard topology.nodeOfRank[source] != topology.nodeOfRank[worldRank] else { return nil }
        let base = pairBase(source, worldRank)
        // MPI delivered the message, which was posted after its entry was published; the loop
        // only guards against a reordered view and normally runs once.
        while true {
            var oldest: (slot: Int, state: UInt64)?
            for slot in 0..<Self.ringSize {
                let state = atomicWord(base + 8 * slot).pointee.load(ordering: .acquiring)
                guard state != 0, (base + 8 * (2 * Self.ringSize + slot)).load(as: Int64.self) == Int64(tag) else { continue }
                if oldest.map({ state < $0.state }) ?? true { oldest = (slot, state) }
            }
            if let oldest {
                let delivery = (base + 8 * (Self.ringSize + oldest.slot)).load(as: Double.self)
                atomicWord(base + 8 * oldest.slot).pointee.store(0, ordering: .releasing)
                return delivery
            }
            sched_yield()
        }
    }

    /// Sleeps until `deadline` (`now()` seconds), counting the time as held.
    func hold(until deadline: Double) {
        let arrived = Self.now()
        guard deadline > arrived else { return }
        heldSeconds += deadline - arrived
        while true {
            let remaining = deadline - Self.now()
            if remaining <= 0 { break }
            // Sleep in slices of at most 0.5 s: a hold of hours (a topology with a tiny bandwidth) must
            // not overflow usleep's 32-bit microseconds.
            if remaining > 200e-6 { usleep(useconds_t(min(remaining - 100e-6, 0.5) * 1e6)) } else { sched_yield() }
        }
    }

    /// The simulated links of a job, or nil when simulation is off: `requested` (a command's
    /// `--simulate-links`), else the topology's `links.simulate`. Collective over `world`; every
    /// rank throws the same error when the ranks span several hosts (the simulation's clocks and
    /// shared region exist per host) or the shared region cannot be made.
    public static func start(world: Communicator, topology: Topology, requested: Bool?) throws -> SimulatedLinks? {
        guard requested ?? topology.simulateLinks else { return nil }
        guard try world.splitBySharedMemory().size == world.size else {
            throw LinkSimulationError(description: "--simulate-links: the ranks span several hosts; link simulation is for simulated nodes on one machine")
        }
        return try SimulatedLinks(world: world, topology: topology)
    }

    /// The view of these links from one communicator (its ranks mapped to world ranks).
    public func view(for nodes: ExchangeNodes) -> LinkSimulator { LinkSimulator(links: self, nodes: nodes) }
}

/// Simulated links as one communicator's exchange sees them: ranks are communicator ranks.
@MainActor
public final class LinkSimulator {
    let links: SimulatedLinks
    let nodes: ExchangeNodes

    init(links: SimulatedLinks, nodes: ExchangeNodes) {
        self.links = links
        self.nodes = nodes
    }

    /// Before posting a send of `bytes` with `tag` from communicator rank `from` (this rank) to `to`.
    func willSend(from: Int, to: Int, bytes: Int, tag: Int) {
        guard bytes > 0 else { return }
        links.willSend(toWorldRank: nodes.worldRanks[to], bytes: bytes, tag: tag)
    }

    /// After MPI delivered the message with `tag` from communicator rank `source` to this rank:
    /// its simulated delivery time (nil: intra-node, delivered already).
    func deliveryTime(from source: Int, tag: Int) -> Double? {
        links.deliveryTime(fromWorldRank: nodes.worldRanks[source], tag: tag)
    }

    func hold(until deadline: Double) { links.hold(until: deadline) }
    static func now() -> Double { SimulatedLinks.now() }
}
