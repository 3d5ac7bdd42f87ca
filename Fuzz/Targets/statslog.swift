import FileFormats

// libFuzzer entry: any bytes as a stats log (`moe stats FILE`); a log that parses is summed
// over, as `moe stats` does (counts come from the file, so nothing may trap or overflow).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStatsLog(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let log = try? StatsLog.parse(bytes, path: "fuzz.jsonl") {
        _ = log.steps.reduce(0) { total, step in step.dropped.reduce(total) { $0 &+ $1 } }
    }
    return 0
}
