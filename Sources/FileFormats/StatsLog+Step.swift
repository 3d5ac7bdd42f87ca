/// The stats log's one line per step, both ways: `jsonLine` writes what the coordinator records,
/// `init(_:)` reads it back (and older lines, which lack some fields). Counts must be ≥ 0 and at
/// most `StatsLog.countLimit`, drop rates in 0...1, seconds finite and ≥ 0; a per-layer field
/// is given for every layer or for none.
extension StatsLog.Step {
    // MARK: Writing

    /// The step as one line of JSON (no newline), under the capacity policy `policy`.
    public func jsonLine(policy: String) -> String {
        var members: [(String, JSONValue)] = [("step", Self.number(step)), ("policy", .string(policy))]
        if !phaseNames.isEmpty { members.append(("phase_seconds_slowest_rank", .object(zip(phaseNames, phaseSeconds).map { ($0, .number($1)) }))) }
        if !expertSecondsByRank.isEmpty { members.append(("expert_seconds_by_rank", .array(expertSecondsByRank.map { .number($0) }))) }
        members.append(("layers", .array(routed.indices.map(layerValue))))
        if !placementChanges.isEmpty {
            members.append(("placement_changes", .array(placementChanges.map { change in
                .object([("layer", Self.number(change.layer)), ("group", Self.number(change.group)),
                         ("predicted_imbalance_before", .number(change.predictedImbalanceBefore)),
                         ("predicted_imbalance_after", .number(change.predictedImbalanceAfter)),
                         ("moved_experts", Self.number(change.movedExperts)), ("migration_bytes", Self.number(change.migrationBytes))])
            })))
        }
        return JSONValue.object(members).serialized(pretty: false)
    }

    private func layerValue(_ layer: Int) -> JSONValue {
        func numbers(_ values: [Int]) -> JSONValue { .array(values.map(Self.number)) }
        func optional(_ field: String, _ values: [[Int]]) -> [(String, JSONValue)] { values.isEmpty ? [] : [(field, numbers(values[layer]))] }
        var members: [(String, JSONValue)] = tokens.isEmpty ? [] : [("tokens", Self.number(tokens[layer]))]
        members += [("routed", numbers(routed[layer]))] + optional("kept", kept) + optional("dropped", droppedPerExpert)
        if !capacity.isEmpty { members.append(("capacity", capacity[layer].map(numbers) ?? .null)) }
        members += [("drop_rate", .number(dropRate[layer])), ("imbalance", .number(imbalance[layer])), ("dispatch_bytes", Self.number(bytes[layer]))]
        members += optional("bytes_sent_by_rank", bytesSentByRank) + optional("bytes_received_by_rank", bytesReceivedByRank)
            + optional("rows_by_rank", rowsByRank)
        if !nextCapacity.isEmpty { members.append(("next_capacity", nextCapacity[layer])) }
        return .object(members)
    }

    private static func number(_ value: Int) -> JSONValue { .number(Double(value)) }

    // MARK: Reading

    /// One line's step, from its parsed object.
    init(_ root: JSONObjectReader) throws {
        self.init(step: try Self.count(root, "step", path: "step"), routed: [], dropRate: [], imbalance: [], bytes: [])
        for (layerPath, value) in try root.array("layers") { try readLayer(try JSONObjectReader(value, path: layerPath), path: layerPath) }
        if let phases = try root.optionalObject("phase_seconds_slowest_rank") {
            phaseNames = phases.keys
            phaseSeconds = try phases.keys.map { key in try Self.seconds(phases.value(key)!, path: phases.childPath(key)) }
        }
        if root.value("expert_seconds_by_rank") != nil {
            expertSecondsByRank = try root.array("expert_seconds_by_rank").map { try Self.seconds($0.value, path: $0.path) }
        }
        if root.value("placement_changes") != nil {
            placementChanges = try root.array("placement_changes").map { try readChange(try JSONObjectReader($0.value, path: $0.path), path: $0.path) }
        }
        let layers = routed.count
        for (field, count) in [("kept", kept.count), ("dropped", droppedPerExpert.count), ("tokens", tokens.count), ("capacity", capacity.count),
                               ("bytes_sent_by_rank", bytesSentByRank.count), ("bytes_received_by_rank", bytesReceivedByRank.count),
                               ("rows_by_rank", rowsByRank.count), ("next_capacity", nextCapacity.count)] where count != 0 && count != layers {
            throw JSONFieldError(path: "layers", problem: "\(field) is given for some layers only")
        }
        if kept.isEmpty { kept = routed }
    }

    private mutating func readLayer(_ layer: JSONObjectReader, path layerPath: String) throws {
        let routes = try Self.counts(layer, "routed")
        routed.append(routes)
        if layer.value("tokens") != nil { tokens.append(try Self.count(layer, "tokens", path: "\(layerPath).tokens")) }
        if layer.value("kept") != nil {
            let kept = try Self.counts(layer, "kept")
            guard kept.count == routes.count, zip(kept, routes).allSatisfy({ $0 <= $1 }) else {
                throw JSONFieldError(path: "\(layerPath).kept", problem: "must have one count per expert, each at most its routes")
            }
            self.kept.append(kept)
        }
        droppedPerExpert.append(try Self.counts(layer, "dropped"))
        if let value = layer.value("capacity") {
            capacity.append(value == .null ? nil : try Self.counts(layer, "capacity"))
        }
        let dropRate = try layer.number("drop_rate")
        guard (0...1).contains(dropRate) else { throw JSONFieldError(path: "\(layerPath).drop_rate", problem: "must be in 0...1, got \(dropRate)") }
        self.dropRate.append(dropRate)
        let imbalance = try layer.number("imbalance")
        guard imbalance >= 0 else { throw JSONFieldError(path: "\(layerPath).imbalance", problem: "must be ≥ 0, got \(imbalance)") }
        self.imbalance.append(imbalance)
        bytes.append(try Self.byteCount(try layer.integer("dispatch_bytes"), path: "\(layerPath).dispatch_bytes"))
        if layer.value("bytes_sent_by_rank") != nil {
            bytesSentByRank.append(try layer.array("bytes_sent_by_rank").map { try Self.byteCount(try JSONObjectReader.integer($0.value, path: $0.path), path: $0.path) })
        }
        if layer.value("bytes_received_by_rank") != nil {
            bytesReceivedByRank.append(try layer.array("bytes_received_by_rank").map { try Self.byteCount(try JSONObjectReader.integer($0.value, path: $0.path), path: $0.path) })
        }
        if layer.value("rows_by_rank") != nil { rowsByRank.append(try Self.counts(layer, "rows_by_rank")) }
        if let next = layer.value("next_capacity") { nextCapacity.append(next) }
    }

    private func readChange(_ change: JSONObjectReader, path changePath: String) throws -> StatsLog.PlacementChange {
        let layer = try Self.count(change, "layer", path: "\(changePath).layer")
        guard layer < routed.count else {
            throw JSONFieldError(path: "\(changePath).layer", problem: "names layer \(layer) of \(routed.count)")
        }
        func optionalCount(_ key: String) throws -> Int { change.value(key) == nil ? 0 : try Self.count(change, key, path: "\(changePath).\(key)") }
        func optionalRatio(_ key: String) throws -> Double {
            guard let value = change.value(key) else { return 0 }
            return try Self.seconds(value, path: "\(changePath).\(key)")  // finite and ≥ 0, like a time
        }
        return StatsLog.PlacementChange(layer: layer, group: try optionalCount("group"),
                                        predictedImbalanceBefore: try optionalRatio("predicted_imbalance_before"),
                                        predictedImbalanceAfter: try optionalRatio("predicted_imbalance_after"),
                                        movedExperts: try optionalCount("moved_experts"),
                                        migrationBytes: try Self.count(change, "migration_bytes", path: "\(changePath).migration_bytes"))
    }

    /// A count: ≥ 0 and bounded so that sums over a whole log (≤ 1 GiB of text) cannot overflow.
    private static func count(_ value: JSONValue, path: String) throws -> Int {
        let number = try JSONObjectReader.integer(value, path: path)
        guard number >= 0 else { throw JSONFieldError(path: path, problem: "must be ≥ 0, got \(number)") }
        guard number <= StatsLog.countLimit else { throw JSONFieldError(path: path, problem: "must be at most \(StatsLog.countLimit), got \(number)") }
        return number
    }

    private static func count(_ reader: JSONObjectReader, _ key: String, path: String) throws -> Int {
        guard let value = reader.value(key) else { return try reader.integer(key) }  // throws "missing"
        return try count(value, path: path)
    }

    private static func counts(_ reader: JSONObjectReader, _ key: String) throws -> [Int] {
        try reader.array(key).map { try count($0.value, path: $0.path) }
    }

    private static func byteCount(_ bytes: Int, path: String) throws -> Int {
        guard (0...StatsLog.byteLimit).contains(bytes) else { throw JSONFieldError(path: path, problem: "must be in 0...\(StatsLog.byteLimit), got \(bytes)") }
        return bytes
    }

    private static func seconds(_ value: JSONValue, path: String) throws -> Double {
        let seconds = try JSONObjectReader.number(value, path: path)
        guard seconds.isFinite, seconds >= 0 else { throw JSONFieldError(path: path, problem: "must be a finite number ≥ 0, got \(seconds)") }
        return seconds
    }
}
