import Foundation
import Testing

/// True when this process may make network namespaces (root, iproute2 present, and the kernel
/// allows it): probed once by making and deleting one.
let networkNamespacesAvailable: Bool = {
    guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") else {
        return false
    }
    let name = "smoe-probe-\(getpid())"
    let add = Process()
    add.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    add.arguments = ["ip", "netns", "add", name]
    add.standardError = FileHandle.nullDevice
    guard (try? add.run()) != nil else { return false }
    add.waitUntilExit()
    guard add.terminationStatus == 0 else { return false }
    let delete = Process()
    delete.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    delete.arguments = ["ip", "netns", "delete", name]
    try? delete.run()
    delete.waitUntilExit()
    return true
}()

/// True when the packet delayer can be built and installed in a node (iptables, gcc and the
/// libnetfilter-queue headers present; `Launch/test` installs them as root) — or netem exists.
let packetDelayAvailable: Bool = {
    let fm = FileManager.default
    let iptables = ["/usr/sbin/iptables", "/sbin/iptables"].contains { fm.isExecutableFile(atPath: $0) }
    return iptables && fm.isExecutableFile(atPath: "/usr/bin/gcc") && fm.fileExists(atPath: "/usr/include/libnetfilter_queue/libnetfilter_queue.h")
}()

/// Runs `Launch/sim-cluster ARGS`; returns status and its output (stdout then stderr).
func simCluster(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let result = try runProcess("/usr/bin/env", ["bash", "Launch/sim-cluster"] + arguments)
    return (result.status, result.stdout + result.stderr)
}

/// Bytes sent by node `node`'s link so far (its veth's transmit counter).
func nodeLinkTransmitBytes(_ node: Int) -> Int {
    let process = Process()
    let pipe = Pipe()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["ip", "-n", "smoe-node\(node)", "-s", "-j", "link", "show", "eth0"]
    process.standardOutput = pipe
    guard (try? process.run()) != nil else { return -1 }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard let links = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]],
          let stats = links.first?["stats64"] as? [String: Any], let tx = stats["tx"] as? [String: Any] else { return -1 }
    return tx["bytes"] as? Int ?? -1
}

extension MultiRankTests {
@Suite("A cluster of network namespaces", .serialized, .enabled(if: networkNamespacesAvailable, "needs root and network namespaces"))
struct SimClusterTests {
    @Test("2 nodes × 2 and × 4 ranks: exchanges equal MPI_Alltoallv across real TCP links, nodes agree with MPI's split, down leaves nothing", arguments: [
        (2, "", 4), (4, "5gbit", 8),
    ] as [(Int, String, Int)])
    func exchangesAcrossNamespaces(ranksPerNode: Int, rate: String, ranks: Int) throws {
        _ = try simCluster(["down"])
        defer {
            _ = try? simCluster(["down"])
            let left = (try? simCluster(["status"]))?.output ?? ""
            #expect(left.contains("nothing is up"), "after down: \(left)")
        }
        let up = try simCluster(["up", "2", "--ranks-per-node", "\(ranksPerNode)"] + (rate.isEmpty ? [] : ["--rate", rate]))
        try #require(up.status == 0, "\(up.output)")
        #expect(up.output.contains("measured one-way latency"), "\(up.output)")
        let scratch = try ScratchDirectory()
        let before = nodeLinkTransmitBytes(0)
        let check = try simCluster(["run", "-np", "\(ranks)", "--", moeExecutable, "exchange-check", "--trials", "24", "--max-rows", "32",
                                    "--json", scratch.file("check.json")])
        try #require(check.status == 0, "\(check.output)")
        let after = nodeLinkTransmitBytes(0)
        let report = try readJSONObject(scratch.file("check.json"))
        #expect(report["passed"] as? Bool == true && report["nodes"] as? Int == 2, "\(check.output)")
        // Ranks on different nodes really talked over node 0's veth (TCP); several MB crossed.
        #expect(before >= 0 && after - before > 1_000_000, "node 0 sent \(after - before) bytes on its link")
        // The nodes MPI finds (shared-memory split, host names) are the generated topology's.
        let fromMPI = try simCluster(["run", "-np", "\(ranks)", "--", moeExecutable, "topology"])
        let fromFile = try simCluster(["run", "-np", "\(ranks)", "--", moeExecutable, "topology", "--topology", "/run/swiftmoe-sim-cluster/topology.json"])
        let first = (0..<ranksPerNode).map(String.init).joined(separator: ", ")
        let second = (ranksPerNode..<ranks).map(String.init).joined(separator: ", ")
        for output in [fromMPI.output, fromFile.output] {
            #expect(output.contains("smoe-node0: ranks \(first)") && output.contains("smoe-node1: ranks \(second)"), "\(output)")
        }
        // The model itself across the namespaces (the "run -np 8 -- moe run").
        let model = try simCluster(["run", "-np", "\(ranks)", "--", moeExecutable, "run", "--tokens-per-rank", "32", "--steps", "1", "--exchange", "all", "--quiet"])
        #expect(model.status == 0 && model.output.contains("outputs identical across exchanges"), "\(model.output)")
    }

    @Test("--delay-us adds latency on the node links (netem, or the NFQUEUE delayer) and the measured figure is reported; data stays exact",
          .enabled(if: packetDelayAvailable, "needs iptables, gcc and libnetfilter-queue-dev (Launch/test installs them as root)"))
    func delayedLinks() throws {
        _ = try simCluster(["down"])
        defer { _ = try? simCluster(["down"]) }
        let up = try simCluster(["up", "2", "--ranks-per-node", "2", "--delay-us", "300"])
        try #require(up.status == 0, "\(up.output)")
        // Ping's one-way time includes the requested 300 µs (plus the delayer's own cost).
        let measured = up.output.firstMatch(of: /measured one-way latency (\d+) µs/).flatMap { Int($0.1) } ?? 0
        #expect(measured >= 300 && measured < 5000, "\(up.output)")
        let check = try simCluster(["run", "-np", "4", "--", moeExecutable, "exchange-check", "--trials", "12"])
        #expect(check.status == 0 && check.output.contains("exchange check passed"), "\(check.output)")
    }

    @Test("up refuses what it cannot do with one clear line; up twice is harmless")
    func refusals() throws {
        _ = try simCluster(["down"])
        defer { _ = try? simCluster(["down"]) }
        let badCount = try simCluster(["up", "0"])
        #expect(badCount.status != 0 && badCount.output.contains("node count must be 1...64"), "\(badCount.output)")
        let badRate = try simCluster(["up", "2", "--rate", "fast"])
        #expect(badRate.status != 0 && badRate.output.contains("--rate must look like 500mbit or 5gbit"), "\(badRate.output)")
        try #require(try simCluster(["up", "2"]).status == 0)
        let again = try simCluster(["up", "2"])
        #expect(again.status == 0 && again.output.contains("already up"), "\(again.output)")
        let other = try simCluster(["up", "3"])
        #expect(other.status != 0 && other.output.contains("a different sim-cluster is up"), "\(other.output)")
    }
}
}
