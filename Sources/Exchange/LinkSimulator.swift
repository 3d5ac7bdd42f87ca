import ClusterTopology
import Glibc
import MessagePassing
import Synchronization

/// Why the link simulation could not start.
public struct LinkSimulationError: Error, CustomStringConvertible {
    public let description: String
}

/// Simulated inter-node links for a job on one machine: every message between ranks of
/// different topology nodes is held back until its modelled delivery time, so a single-machine
/// run shows what a cluster with those links would.
///
/// The model is the cost model's (`CostModel`, `docs/COST_MODEL.md`): each node has one uplink
/// and one downlink shared by its ranks; a transfer of b bytes from node A to node B starts when
/// it is posted and both A's uplink and B's downlink are free, occupies both for α_n + b/B_n, and
/// is delivered when it ends. Intra-node messages are not touched. Data is never touched either:
/// the simulation only delays the receiver's completion, so no byte delivered can change.
///
/// Mechanism: the ranks share one small memory-mapped file (created by world rank 0, unlinked as
/// soon as every rank has mapped it, so nothing is left behind). It holds each node's link clocks
/// and, per ordered pair of world ranks, a ring of delivery times. The sender reserves the links
/// under a spin lock (an atomic word in the region; waiters yield the core) and publishes the
/// delivery time (release) before posting the MPI send; the receiver, once MPI has delivered the
/// message, reads that time (acquire, no lock) and waits until it (sleeping, then yielding the
/// core). Times are `CLOCK_MONOTONIC`, which all processes of one host share — so the simulation
/// needs every rank on one host, which is its purpose.
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
    /// Messages this rank has sent to / received from each world rank (ring positions).
    private var sent: [UInt64]
    private var received: [UInt64]
    /// Time spent waiting for simulated deliveries on this rank, seconds (for reports).
    public private(set) var heldSeconds = 0.0
    /// Inter-node messages this rank has sent under simulation.
    public private(set) var simulatedMessages = 0

    static let ringSize = 16
    static let magic: UInt64 = 0x5357_4D4F_454C_4E4B  // "SWMOELNK"

    // Region layout (8-byte words): [magic][lock][up clocks: nodes][down clocks: nodes]
    // then per pair (s, d): [sequence: ringSize][delivery: ringSize][consumed].
    // Sequence, consumed and lock words are accessed only atomically; clocks only under the lock;
    // a delivery slot is written before its sequence word is released and read after it is acquired.
    private static let headerWords = 2
    private var nodeCount: Int { topology.nodes.count }
    private var pairWords: Int { 2 * Self.ringSize + 1 }
    /// A node link's clock: seconds at which it is next free (raw Double, accessed under the lock).
    private func clock(uplink: Bool, node: Int) -> UnsafeMutableRawPointer {
        region + 8 * (Self.headerWords + (uplink ? 0 : nodeCount) + node)
    }
    private func pairBase(_ source: Int, _ destination: Int) -> UnsafeMutableRawPointer {
        region + 8 * (Self.headerWords + 2 * nodeCount + (source * worldSize + destination) * pairWords)
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
        received = sent
        regionBytes = 8 * (Self.headerWords + 2 * topology.nodes.count + world.size * world.size * (2 * Self.ringSize + 1))

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
        let message = String(decoding: try world.broadcastBytes(Array((failure.isEmpty ? "ok:" + path : "error:" + failure).utf8), root: 0), as: UTF8.self)
        guard message.hasPrefix("ok:") else { throw LinkSimulationError(description: String(message.dropFirst(6))) }
        path = String(message.dropFirst(3))
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
        // Bind the atomic words (magic, lock, and each pair's sequence and consumed words);
        // clocks and delivery times stay raw memory read and written as Double.
        region.bindMemory(to: Atomic<UInt64>.self, capacity: Self.headerWords)
        for pair in 0..<(world.size * world.size) {
            let base = region + 8 * (Self.headerWords + 2 * topology.nodes.count + pair * (2 * Self.ringSize + 1))
            base.bindMemory(to: Atomic<UInt64>.self, capacity: Self.ringSize)
            (base + 8 * 2 * Self.ringSize).bindMemory(to: Atomic<UInt64>.self, capacity: 1)
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

    /// Reserves the links for a message of `bytes` from this rank to world rank `destination`
    /// and records its delivery time; call just before posting the send.
    func willSend(toWorldRank destination: Int, bytes: Int) {
        let from = topology.nodeOfRank[worldRank], to = topology.nodeOfRank[destination]
        guard from != to else { return }
        let sequence = sent[destination]
        sent[destination] += 1
        simulatedMessages += 1
        let base = pairBase(worldRank, destination)
        let slot = Int(sequence % UInt64(Self.ringSize))
        let consumed = atomicWord(base + 8 * 2 * Self.ringSize)
        // The ring holds ringSize undelivered messages per pair; a sender that far ahead waits.
        while sequence >= consumed.pointee.load(ordering: .acquiring) + UInt64(Self.ringSize) { sched_yield() }
        lock()
        let up = clock(uplink: true, node: from), down = clock(uplink: false, node: to)
        let start = max(Self.now(), up.load(as: Double.self), down.load(as: Double.self))
        let end = start + latency + Double(bytes) * secondsPerByte
        up.storeBytes(of: end, as: Double.self)
        down.storeBytes(of: end, as: Double.self)
        unlock()
        (base + 8 * (Self.ringSize + slot)).storeBytes(of: end, as: Double.self)
        atomicWord(base + 8 * slot).pointee.store(sequence + 1, ordering: .releasing)
    }

    /// Waits until the next message from world rank `source` (already received by MPI) is
    /// delivered by the simulated links.
    func awaitDelivery(fromWorldRank source: Int) {
        guard topology.nodeOfRank[source] != topology.nodeOfRank[worldRank] else { return }
        let sequence = received[source]
        received[source] += 1
        let base = pairBase(source, worldRank)
        let slot = Int(sequence % UInt64(Self.ringSize))
        // MPI delivered the message, which was posted after its delivery time was published;
        // the loop only guards against a reordered view and normally runs once.
        while atomicWord(base + 8 * slot).pointee.load(ordering: .acquiring) != sequence + 1 { sched_yield() }
        let delivery = (base + 8 * (Self.ringSize + slot)).load(as: Double.self)
        atomicWord(base + 8 * 2 * Self.ringSize).pointee.store(sequence + 1, ordering: .releasing)
        let arrived = Self.now()
        guard delivery > arrived else { return }
        heldSeconds += delivery - arrived
        while true {
            let remaining = delivery - Self.now()
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

    /// Before posting a send of `bytes` from communicator rank `from` (this rank) to `to`.
    func willSend(from: Int, to: Int, bytes: Int) {
        guard bytes > 0 else { return }
        links.willSend(toWorldRank: nodes.worldRanks[to], bytes: bytes)
    }

    /// After MPI delivered the message from communicator rank `from` to this rank `to`.
    func awaitDelivery(from: Int, to: Int) {
        links.awaitDelivery(fromWorldRank: nodes.worldRanks[from])
    }

}
