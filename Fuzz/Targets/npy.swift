import FileFormats

// libFuzzer entry: any bytes as a .npy file; a file that parses is converted to values.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNpy(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let array = try? NpyArray.parse(bytes, path: "fuzz.npy") {
        _ = array.float32Values?.count
        _ = array.integerValues?.count
    }
    return 0
}
