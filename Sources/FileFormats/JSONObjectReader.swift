/// A problem with one field of a parsed JSON document: where it is (`path`, like
/// `links.inter_node.latency_us` or `nodes[2].ranks[0]`) and what is wrong with it.
public struct JSONFieldError: Error, Equatable, CustomStringConvertible {
    public let path: String
    public let problem: String

    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { path.isEmpty ? problem : "field '\(path)': \(problem)" }
}

/// Typed, path-aware reading of one JSON object, for configuration files.
///
/// Every accessor names the full path of the field in its error, and `rejectUnknownKeys`
/// turns a misspelt field into an error instead of a silently ignored setting.
public struct JSONObjectReader {
    /// Path of this object inside the document ("" for the root).
    public let path: String
    private let members: [(key: String, value: JSONValue)]

    public init(_ value: JSONValue, path: String = "") throws(JSONFieldError) {
        guard case let .object(members) = value else {
            throw JSONFieldError(path: path, problem: "expected an object, found \(value.kindDescription)")
        }
        self.path = path
        self.members = members
    }

    public var keys: [String] { members.map(\.key) }

    public func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Fails on the first member whose key is not in `allowed`, listing what is allowed.
    public func rejectUnknownKeys(allowed: [String]) throws(JSONFieldError) {
        for key in keys where !allowed.contains(key) {
            throw JSONFieldError(
                path: childPath(key),
                problem: "unknown field (allowed: \(allowed.joined(separator: ", ")))")
        }
    }

    public func value(_ key: String) -> JSONValue? { members.first { $0.key == key }?.value }

    private func required(_ key: String) throws(JSONFieldError) -> JSONValue {
        guard let value = value(key) else { throw JSONFieldError(path: childPath(key), problem: "missing required field") }
        return value
    }

    public func string(_ key: String) throws(JSONFieldError) -> String {
        try JSONObjectReader.string(try required(key), path: childPath(key))
    }

    public func optionalString(_ key: String) throws(JSONFieldError) -> String? {
        guard let value = value(key) else { return nil }
        return try JSONObjectReader.string(value, path: childPath(key))
    }

    public func number(_ key: String) throws(JSONFieldError) -> Double {
        try JSONObjectReader.number(try required(key), path: childPath(key))
    }

    public func optionalNumber(_ key: String) throws(JSONFieldError) -> Double? {
        guard let value = value(key) else { return nil }
        return try JSONObjectReader.number(value, path: childPath(key))
    }

    public func integer(_ key: String) throws(JSONFieldError) -> Int {
        try JSONObjectReader.integer(try required(key), path: childPath(key))
    }

    public func optionalInteger(_ key: String) throws(JSONFieldError) -> Int? {
        guard let value = value(key) else { return nil }
        return try JSONObjectReader.integer(value, path: childPath(key))
    }

    public func optionalBool(_ key: String) throws(JSONFieldError) -> Bool? {
        guard let value = value(key) else { return nil }
        return try JSONObjectReader.bool(value, path: childPath(key))
    }

    /// The elements of an array field, each with its own path (`key[i]`).
    public func array(_ key: String) throws(JSONFieldError) -> [(path: String, value: JSONValue)] {
        let value = try required(key)
        guard case let .array(elements) = value else {
            throw JSONFieldError(path: childPath(key), problem: "expected an array, found \(value.kindDescription)")
        }
        return elements.enumerated().map { ("\(childPath(key))[\($0.offset)]", $0.element) }
    }

    public func object(_ key: String) throws(JSONFieldError) -> JSONObjectReader {
        try JSONObjectReader(try required(key), path: childPath(key))
    }

    public func optionalObject(_ key: String) throws(JSONFieldError) -> JSONObjectReader? {
        guard let value = value(key) else { return nil }
        return try JSONObjectReader(value, path: childPath(key))
    }

    // MARK: Conversions of single values, usable on array elements too.

    public static func string(_ value: JSONValue, path: String) throws(JSONFieldError) -> String {
        guard case let .string(text) = value else {
            throw JSONFieldError(path: path, problem: "expected a string, found \(value.kindDescription)")
        }
        return text
    }

    public static func bool(_ value: JSONValue, path: String) throws(JSONFieldError) -> Bool {
        guard case let .bool(flag) = value else {
            throw JSONFieldError(path: path, problem: "expected true or false, found \(value.kindDescription)")
        }
        return flag
    }

    public static func number(_ value: JSONValue, path: String) throws(JSONFieldError) -> Double {
        guard case let .number(number) = value else {
            throw JSONFieldError(path: path, problem: "expected a number, found \(value.kindDescription)")
        }
        return number
    }

    /// An integral number within ±2^53 (the range in which a JSON number is an exact integer).
    public static func integer(_ value: JSONValue, path: String) throws(JSONFieldError) -> Int {
        let number = try number(value, path: path)
        guard number.rounded() == number, abs(number) <= 9_007_199_254_740_992 else {
            throw JSONFieldError(path: path, problem: "expected an integer, found \(formatNumber(number))")
        }
        return Int(number)
    }

    /// A number as a user wrote it: integers without a trailing ".0".
    public static func formatNumber(_ number: Double) -> String {
        if number.rounded() == number, abs(number) < 1e15 { return String(Int(number)) }
        return String(number)
    }
}
