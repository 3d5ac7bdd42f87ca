import ClusterTopology

// libFuzzer entry: any bytes as a topology file. Errors are expected; crashes, hangs and
// sanitizer reports are bugs.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTopology(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let topology = try? Topology.parse(bytes, path: "fuzz.json") {
        _ = topology.nodes.count + topology.worldSize
    }
    return 0
}
