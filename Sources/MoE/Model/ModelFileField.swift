import FileFormats

/// One field of a model file, declared once: its key, its default as the docs state it, what it
/// means, how a value is read into a draft (type and range checked, the error naming the field)
/// and written back from one (nil: at its default, left out). The tables `LayerDraft.fields` and
/// `ModelDraft.fields` drive `ModelConfiguration.parse`, `document()` and docs/MODEL.md's field
/// tables (a test checks that the docs list every key with its default).
struct ModelFileField<Draft>: Sendable {
    let key: String
    /// The default as docs/MODEL.md shows it ("required" when there is none).
    let defaultText: String
    let meaning: String
    let read: @Sendable (inout Draft, JSONValue, _ path: String) throws(JSONFieldError) -> Void
    let write: @Sendable (Draft) -> JSONValue?

    /// An integer in `range`.
    static func integer(_ key: String, _ field: any WritableKeyPath<Draft, Int> & Sendable, default value: Int, in range: ClosedRange<Int>,
                        note: String = "", _ meaning: String) -> Self {
        Self(key: key, defaultText: String(value), meaning: meaning, read: { (draft, json, path) throws(JSONFieldError) in
            draft[keyPath: field] = try checked(try JSONObjectReader.integer(json, path: path), in: range, note: note, path: path)
        }, write: { draft in draft[keyPath: field] == value ? nil : .number(Double(draft[keyPath: field])) })
    }

    /// An integer in `range`, or absent (nil).
    static func optionalInteger(_ key: String, _ field: any WritableKeyPath<Draft, Int?> & Sendable, in range: ClosedRange<Int>, absent: String,
                                _ meaning: String) -> Self {
        Self(key: key, defaultText: absent, meaning: meaning, read: { (draft, json, path) throws(JSONFieldError) in
            draft[keyPath: field] = try checked(try JSONObjectReader.integer(json, path: path), in: range, note: "", path: path)
        }, write: { draft in draft[keyPath: field].map { .number(Double($0)) } })
    }

    /// A number; `check` says why a value is refused (nil: accepted).
    static func number(_ key: String, _ field: any WritableKeyPath<Draft, Double> & Sendable, default value: Double, defaultText: String? = nil,
                       check: @escaping @Sendable (Double) -> String?, _ meaning: String) -> Self {
        Self(key: key, defaultText: defaultText ?? JSONObjectReader.formatNumber(value), meaning: meaning, read: { (draft, json, path) throws(JSONFieldError) in
            let number = try JSONObjectReader.number(json, path: path)
            if let problem = check(number) { throw JSONFieldError(path: path, problem: problem) }
            draft[keyPath: field] = number
        }, write: { draft in draft[keyPath: field] == value ? nil : .number(draft[keyPath: field]) })
    }

    /// true or false.
    static func flag(_ key: String, _ field: any WritableKeyPath<Draft, Bool> & Sendable, default value: Bool = false, _ meaning: String) -> Self {
        Self(key: key, defaultText: String(value), meaning: meaning, read: { (draft, json, path) throws(JSONFieldError) in
            draft[keyPath: field] = try JSONObjectReader.bool(json, path: path)
        }, write: { draft in draft[keyPath: field] == value ? nil : .bool(draft[keyPath: field]) })
    }

    /// One of an enum's names; `noun` names the kind in the error ("unknown policy 'x' (a, b)").
    static func choice<Choice: RawRepresentable & CaseIterable & Equatable & Sendable>(
        _ key: String, _ field: any WritableKeyPath<Draft, Choice> & Sendable, default value: Choice, noun: String, _ meaning: String
    ) -> Self where Choice.RawValue == String {
        Self(key: key, defaultText: value.rawValue, meaning: meaning, read: { (draft, json, path) throws(JSONFieldError) in
            let name = try JSONObjectReader.string(json, path: path)
            guard let choice = Choice(rawValue: name) else {
                throw JSONFieldError(path: path, problem: "unknown \(noun) '\(name)' (\(Choice.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            draft[keyPath: field] = choice
        }, write: { draft in draft[keyPath: field] == value ? nil : .string(draft[keyPath: field].rawValue) })
    }

    private static func checked(_ value: Int, in range: ClosedRange<Int>, note: String, path: String) throws(JSONFieldError) -> Int {
        guard range.contains(value) else {
            throw JSONFieldError(path: path, problem: "must be in \(range.lowerBound)...\(range.upperBound)\(note), got \(value)")
        }
        return value
    }
}

extension Array {
    /// Reads every field of `reader` that this table declares into `draft`; returns the keys
    /// the reader gave. (Callers refuse keys outside the table first.)
    @discardableResult
    func read<Draft>(_ reader: JSONObjectReader, into draft: inout Draft) throws(JSONFieldError) -> Set<String>
    where Element == ModelFileField<Draft> {
        var given: Set<String> = []
        for field in self {
            guard let value = reader.value(field.key) else { continue }
            try field.read(&draft, value, reader.childPath(field.key))
            given.insert(field.key)
        }
        return given
    }

    /// The fields of `draft` that differ from their defaults, in table order.
    func write<Draft>(_ draft: Draft) -> [(key: String, value: JSONValue)] where Element == ModelFileField<Draft> {
        compactMap { field in field.write(draft).map { (field.key, $0) } }
    }

    /// The table as markdown rows: `| key | default | meaning |`.
    func markdownRows<Draft>() -> [String] where Element == ModelFileField<Draft> {
        map { "| `\($0.key)` | \($0.defaultText) | \($0.meaning) |" }
    }
}
