import FileFormats

/// Why a checkpoint could not be imported: one line naming the file, tensor or config field.
package struct ImportError: Error, Equatable, CustomStringConvertible {
    package let description: String

    package init(_ description: String) { self.description = description }
}

/// A Hugging Face checkpoint directory: `config.json`, and either `model.safetensors` or
/// `model.safetensors.index.json` with the shards its `weight_map` names.
///
/// Opening validates everything that can be checked without reading tensor data: the config is
/// a JSON object; the index names only plain file names in the directory, every one of which
/// exists and has a valid safetensors header (a truncated shard fails here, because its header
/// claims more data than the file holds); every tensor the index maps is in its shard. Tensors
/// are then read one at a time, F32, BF16 or F16, widened to float32.
package final class HuggingFaceCheckpoint {
    package let directory: String
    /// The parsed `config.json`.
    package let config: JSONObjectReader
    /// Every tensor name in the checkpoint, sorted.
    package let tensorNames: [String]
    private let shardOf: [String: SafetensorsReader]
    /// The dtypes of the tensors read so far.
    package private(set) var dtypesRead: Set<String> = []
    /// How the checkpoint's weights are quantised (`quantization_config`).
    package let quantisation: Quantisation

    /// The quantised formats the importer dequantises (`Dequantization`).
    package enum Quantisation: Equatable, Sendable {
        case none
        /// `quant_method: fp8`, `fmt: e4m3`, block-scaled by `weight_scale_inv` (DeepSeek-V3).
        case fp8(blockRows: Int, blockColumns: Int)
        /// `quant_method: mxfp4` (GPT-OSS's experts).
        case mxfp4

        var name: String {
            switch self {
            case .none: return "none"
            case let .fp8(rows, columns): return "FP8 E4M3, \(rows)×\(columns) blocks"
            case .mxfp4: return "MXFP4"
            }
        }
    }

    /// Largest config.json / index file accepted.
    static let jsonLimit = 16 << 20

    package init(directory: String) throws(ImportError) {
        self.directory = directory
        guard FileKind.of(directory) == .directory else {
            throw ImportError("\(directory): is not a directory (expected a Hugging Face checkpoint directory with config.json)")
        }
        let configPath = "\(directory)/config.json"
        config = try Self.readJSONObject(configPath)
        let indexPath = "\(directory)/model.safetensors.index.json"
        let singlePath = "\(directory)/model.safetensors"
        var shardOf: [String: SafetensorsReader] = [:]
        if FileKind.of(indexPath) != .missing {
            let index = try Self.readJSONObject(indexPath)
            let weightMap: JSONObjectReader
            do {
                guard let map = try index.optionalObject("weight_map") else { throw ImportError("\(indexPath): missing field 'weight_map'") }
                weightMap = map
            } catch let error as ImportError { throw error } catch { throw ImportError("\(indexPath): \(error)") }
            var shards: [String: SafetensorsReader] = [:]
            for name in weightMap.keys {
                let file: String
                do { file = try weightMap.string(name) } catch { throw ImportError("\(indexPath): \(error)") }
                guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
                    throw ImportError("\(indexPath): weight_map.\(name) names '\(file)'; shards must be plain file names in \(directory)")
                }
                if shards[file] == nil {
                    let shardPath = "\(directory)/\(file)"
                    guard FileKind.of(shardPath) != .missing else {
                        throw ImportError("\(indexPath): names shard '\(file)' (for tensor '\(name)'), which is missing from \(directory)")
                    }
                    do { shards[file] = try SafetensorsReader(path: shardPath) } catch { throw ImportError("\(error)") }
                }
                let shard = shards[file]!
                guard shard.entries[name] != nil else {
                    throw ImportError("\(indexPath): maps tensor '\(name)' to \(file), which does not hold it")
                }
                shardOf[name] = shard
            }
        } else if FileKind.of(singlePath) != .missing {
            let reader: SafetensorsReader
            do { reader = try SafetensorsReader(path: singlePath) } catch { throw ImportError("\(error)") }
            for name in reader.entries.keys { shardOf[name] = reader }
        } else {
            throw ImportError("\(directory): holds neither model.safetensors nor model.safetensors.index.json")
        }
        self.shardOf = shardOf
        tensorNames = shardOf.keys.sorted()
        quantisation = try Self.quantisation(config, path: configPath)
    }

    /// Reads `quantization_config`: absent → none; fp8 (e4m3, `weight_block_size` [r, c], default
    /// 128×128) or mxfp4; anything else is refused naming the method.
    private static func quantisation(_ config: JSONObjectReader, path: String) throws(ImportError) -> Quantisation {
        guard let value = config.value("quantization_config"), value != .null else { return .none }
        do {
            let settings = try JSONObjectReader(value, path: "quantization_config")
            let method = try settings.optionalString("quant_method") ?? "unknown"
            switch method {
            case "fp8":
                let format = try settings.optionalString("fmt") ?? "e4m3"
                guard format == "e4m3" else {
                    throw ImportError("\(path): field 'quantization_config.fmt': FP8 format '\(format)' is not supported (e4m3)")
                }
                var block = [128, 128]
                if let sizes = settings.value("weight_block_size"), sizes != .null {
                    guard case let .array(items) = sizes, items.count == 2 else {
                        throw ImportError("\(path): field 'quantization_config.weight_block_size' must be [rows, columns]")
                    }
                    block = try items.enumerated().map { (index, item) throws(JSONFieldError) in
                        try JSONObjectReader.integer(item, path: "quantization_config.weight_block_size[\(index)]")
                    }
                    guard block.allSatisfy({ $0 >= 1 }) else {
                        throw ImportError("\(path): field 'quantization_config.weight_block_size' must be positive, got \(block)")
                    }
                }
                return .fp8(blockRows: block[0], blockColumns: block[1])
            case "mxfp4":
                return .mxfp4
            default:
                throw ImportError("\(path): field 'quantization_config': quantisation method '\(method)' is not supported (fp8 e4m3 block-scaled, mxfp4); dequantise the checkpoint to F32, BF16 or F16 first")
            }
        } catch let error as ImportError {
            throw error
        } catch {
            throw ImportError("\(path): \(error)")
        }
    }

    private static func readJSONObject(_ path: String) throws(ImportError) -> JSONObjectReader {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: jsonLimit) } catch { throw ImportError("\(path): cannot be read: \(error.reason)") }
        do { return try JSONObjectReader(try JSONParser.parse(bytes)) } catch { throw ImportError("\(path): not a JSON object (\(error))") }
    }

    package func has(_ name: String) -> Bool { shardOf[name] != nil }

    /// The shape and dtype of a tensor, nil when absent.
    package func entry(_ name: String) -> SafetensorsEntry? { shardOf[name]?.entries[name] }

    /// Reads `name` as float32, checking its shape (`[out, in]` as Hugging Face stores it). An
    /// FP8 weight of an fp8 checkpoint is dequantised with its `<name>_scale_inv`.
    package func read(_ name: String, shape: [Int]) throws(ImportError) -> [Float] {
        guard let shard = shardOf[name], let entry = shard.entries[name] else {
            throw ImportError("\(directory): tensor '\(name)' is missing (expected shape \(shape))")
        }
        guard entry.shape == shape else {
            throw ImportError("\(shard.path): tensor '\(name)' has shape \(entry.shape), expected \(shape)")
        }
        if entry.dtype == "F8_E4M3", case let .fp8(blockRows, blockColumns) = quantisation, shape.count == 2 {
            let scaleName = "\(name)_scale_inv"
            let scaleShape = [(shape[0] + blockRows - 1) / blockRows, (shape[1] + blockColumns - 1) / blockColumns]
            guard has(scaleName) else {
                throw ImportError("\(directory): tensor '\(scaleName)' (the FP8 scales of '\(name)') is missing (expected shape \(scaleShape))")
            }
            let scales = try read(scaleName, shape: scaleShape)
            dtypesRead.insert(entry.dtype)
            do {
                let bytes = try shard.readBytes(name, shape: shape)
                return Dequantization.fp8(bytes, scales: scales, rows: shape[0], columns: shape[1], blockRows: blockRows, blockColumns: blockColumns)
            } catch { throw ImportError("\(error)") }
        }
        guard SafetensorsReader.floatDTypes.contains(entry.dtype) else {
            throw ImportError("\(shard.path): tensor '\(name)' has dtype \(entry.dtype); supported: \(SafetensorsReader.floatDTypes.joined(separator: ", ")), and F8_E4M3 with block scales in an fp8 checkpoint")
        }
        dtypesRead.insert(entry.dtype)
        do { return try shard.readFloats(name, shape: shape) } catch { throw ImportError("\(error)") }
    }

    /// Reads an MXFP4 expert tensor stored as `<base>_blocks` `U8 [experts, rows, groups, 16]`
    /// and `<base>_scales` `U8 [experts, rows, groups]`, as float32 `[experts, groups·32, rows]`.
    package func readMXFP4(_ base: String, experts: Int, rows: Int, columns: Int) throws(ImportError) -> [Float] {
        guard columns % 32 == 0 else { throw ImportError("\(directory): '\(base)_blocks': MXFP4 needs a multiple of 32 columns, the model has \(columns)") }
        let groups = columns / 32
        var raw: [[UInt8]] = []
        for (name, shape) in [("\(base)_blocks", [experts, rows, groups, 16]), ("\(base)_scales", [experts, rows, groups])] {
            guard let shard = shardOf[name], let entry = shard.entries[name] else {
                throw ImportError("\(directory): tensor '\(name)' is missing (expected shape \(shape))")
            }
            guard entry.shape == shape else { throw ImportError("\(shard.path): tensor '\(name)' has shape \(entry.shape), expected \(shape)") }
            guard entry.dtype == "U8" else { throw ImportError("\(shard.path): tensor '\(name)' has dtype \(entry.dtype), expected U8 (MXFP4)") }
            do { raw.append(try shard.readBytes(name, shape: shape)) } catch { throw ImportError("\(error)") }
        }
        dtypesRead.insert("MXFP4")
        return Dequantization.mxfp4(blocks: raw[0], scales: raw[1], experts: experts, rows: rows, groups: groups)
    }

    // MARK: config.json values, each error naming the field.

    package func integer(_ key: String) throws(ImportError) -> Int {
        guard let value = try optionalInteger(key) else { throw ImportError("\(directory)/config.json: missing field '\(key)'") }
        return value
    }

    package func optionalInteger(_ key: String) throws(ImportError) -> Int? {
        guard let value = config.value(key), value != .null else { return nil }
        do { return try JSONObjectReader.integer(value, path: key) } catch { throw ImportError("\(directory)/config.json: \(error)") }
    }

    package func optionalNumber(_ key: String) throws(ImportError) -> Double? {
        guard let value = config.value(key), value != .null else { return nil }
        do { return try JSONObjectReader.number(value, path: key) } catch { throw ImportError("\(directory)/config.json: \(error)") }
    }

    package func optionalString(_ key: String) throws(ImportError) -> String? {
        guard let value = config.value(key), value != .null else { return nil }
        do { return try JSONObjectReader.string(value, path: key) } catch { throw ImportError("\(directory)/config.json: \(error)") }
    }

    package func optionalBool(_ key: String) throws(ImportError) -> Bool? {
        guard let value = config.value(key), value != .null else { return nil }
        guard case let .bool(flag) = value else { throw ImportError("\(directory)/config.json: field '\(key)' must be true or false") }
        return flag
    }

    package func optionalIntegers(_ key: String) throws(ImportError) -> [Int]? {
        guard let value = config.value(key), value != .null else { return nil }
        guard case let .array(items) = value else { throw ImportError("\(directory)/config.json: field '\(key)' must be a list of integers") }
        var result: [Int] = []
        for (index, item) in items.enumerated() {
            do { result.append(try JSONObjectReader.integer(item, path: "\(key)[\(index)]")) } catch { throw ImportError("\(directory)/config.json: \(error)") }
        }
        return result
    }

    /// A config value the runtime cannot honour.
    package func unsupported(_ key: String, _ problem: String) -> ImportError {
        ImportError("\(directory)/config.json: field '\(key)': \(problem)")
    }
}
