import FileFormats
import Foundation

// libFuzzer entry: any bytes as a safetensors file (written to a RAM-backed temporary file,
// since the reader works on files); every tensor that validates is then read as float32.
let fuzzPath = (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()) + "/swiftmoe-fuzz-\(getpid()).safetensors"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = FileManager.default.createFile(atPath: fuzzPath, contents: Data(bytes: data, count: size))
    if let reader = try? SafetensorsReader(path: fuzzPath) {
        for (name, entry) in reader.entries where entry.dtype == "F32" {
            _ = try? reader.readFloat32(name, shape: entry.shape)
        }
    }
    return 0
}
