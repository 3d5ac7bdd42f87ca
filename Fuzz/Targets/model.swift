import MoE

// libFuzzer entry: any bytes as a model file; a model that parses also has its tensor list
// computed (sizes come from the file, so this must never allocate wildly or trap).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModel(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let model = try? ModelConfiguration.parse(bytes, path: "fuzz.json") {
        _ = ModelWeights.tensorShapes(model).count
    }
    return 0
}
