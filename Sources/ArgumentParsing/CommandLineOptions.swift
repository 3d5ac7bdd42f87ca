// Hand-written command-line parsing shared by `moe` and `moe-bench` (no outside packages).
import Foundation

/// One option of a subcommand, declared once: parsing, validation and `--help` all read it.
package struct OptionSpec: Sendable {
    /// Long name without dashes (`topology` for `--topology`).
    package let name: String
    /// Placeholder for the value in help (`FILE`); `nil` for a flag that takes no value.
    package let valueName: String?
    package let help: String
    /// Default value shown in help and used when the option is absent.
    package let defaultValue: String?

    package static func value(_ name: String, _ valueName: String, default defaultValue: String? = nil, _ help: String) -> OptionSpec {
        OptionSpec(name: name, valueName: valueName, help: help, defaultValue: defaultValue)
    }

    package static func flag(_ name: String, _ help: String) -> OptionSpec {
        OptionSpec(name: name, valueName: nil, help: help, defaultValue: nil)
    }
}

/// A subcommand's name, what it does, and its options.
package struct CommandSpec: Sendable {
    package let name: String
    package let summary: String
    /// Longer explanation printed by `--help`, after the usage line.
    package let discussion: String
    package let options: [OptionSpec]
    /// Name of the positional arguments the command takes (for help), nil when it takes none.
    package let positional: String?

    package init(name: String, summary: String, discussion: String, options: [OptionSpec], positional: String? = nil) {
        self.name = name
        self.summary = summary
        self.discussion = discussion
        self.options = options
        self.positional = positional
    }

    package func option(named name: String) -> OptionSpec? { options.first { $0.name == name } }

    /// The `--help` text, generated from the declaration.
    package var helpText: String {
        var lines = ["usage: moe \(name) [options]" + (positional.map { " \($0)" } ?? ""), "", summary]
        if !discussion.isEmpty { lines += ["", discussion] }
        lines += ["", "options:"]
        let allOptions = options + [.flag("help", "show this help and exit")]
        let labels = allOptions.map { "--\($0.name)" + ($0.valueName.map { " \($0)" } ?? "") }
        let width = (labels.map(\.count).max() ?? 0) + 2
        for (label, option) in zip(labels, allOptions) {
            var line = "  " + label.padding(toLength: width, withPad: " ", startingAt: 0) + option.help
            if let defaultValue = option.defaultValue { line += " (default: \(defaultValue))" }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}

/// A command line that cannot be run, with a message that says what to fix.
package enum UsageError: Error, Equatable, CustomStringConvertible {
    case unknownCommand(String, known: [String])
    case unknownOption(command: String, option: String, suggestion: String?)
    case missingValue(command: String, option: String, valueName: String)
    case invalidValue(command: String, option: String, value: String, expected: String)
    case unexpectedArgument(command: String, argument: String)
    case conflict(command: String, detail: String)

    package var description: String {
        switch self {
        case let .unknownCommand(name, known):
            return "unknown command '\(name)' (commands: \(known.joined(separator: ", ")))"
        case let .unknownOption(_, option, suggestion):
            return "unknown option '\(option)'" + (suggestion.map { " (did you mean '--\($0)'?)" } ?? "")
        case let .missingValue(_, option, valueName):
            return "option '--\(option)' needs a value \(valueName)"
        case let .invalidValue(_, option, value, expected):
            return "invalid value '\(value)' for --\(option): expected \(expected)"
        case let .unexpectedArgument(_, argument):
            return "unexpected argument '\(argument)' (options start with --)"
        case let .conflict(_, detail):
            return "\(detail)"
        }
    }
}

/// The options given on one command line, checked against a `CommandSpec`.
package struct ParsedOptions: Equatable {
    package let command: String
    package private(set) var values: [String: String] = [:]
    package private(set) var flags: Set<String> = []
    /// The options the command line named (values and flags), before defaults were filled in.
    private var given: Set<String> = []
    /// True when `--help` was given: the caller prints help and runs nothing.
    package private(set) var helpRequested = false
    /// Arguments that are not options, in order (only for commands that declare `positional`).
    package private(set) var positional: [String] = []
    /// Names of the options the command declares.
    let declared: Set<String>

    /// The one positional argument of a command that takes exactly one; a usage error naming
    /// `what` (e.g. "stats log file (moe stats FILE)") otherwise.
    package func singlePositional(_ what: String) throws(UsageError) -> String {
        guard positional.count == 1 else { throw .conflict(command: command, detail: "give exactly one \(what), got \(positional.count)") }
        return positional[0]
    }

    /// Parses `arguments` (everything after the subcommand name). Accepts `--name value` and
    /// `--name=value`; a repeated option keeps its last value, as most Unix tools do.
    package init(arguments: [String], spec: CommandSpec) throws(UsageError) {
        command = spec.name
        declared = Set(spec.options.map(\.name))
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--help" || argument == "-h" { helpRequested = true; continue }
            guard argument.hasPrefix("--"), argument.count > 2 else {
                guard spec.positional != nil, !argument.hasPrefix("-") else {
                    throw .unexpectedArgument(command: spec.name, argument: argument)
                }
                positional.append(argument)
                continue
            }
            let body = argument.dropFirst(2)
            let name: String
            var inlineValue: String?
            if let equals = body.firstIndex(of: "=") {
                name = String(body[..<equals])
                inlineValue = String(body[body.index(after: equals)...])
            } else {
                name = String(body)
            }
            guard let option = spec.option(named: name) else {
                throw .unknownOption(command: spec.name, option: "--\(name)", suggestion: Self.closest(to: name, in: spec.options.map(\.name)))
            }
            if let valueName = option.valueName {
                if let inlineValue {
                    values[name] = inlineValue
                } else {
                    guard index < arguments.count, !arguments[index].hasPrefix("--") else {
                        throw .missingValue(command: spec.name, option: name, valueName: valueName)
                    }
                    values[name] = arguments[index]
                    index += 1
                }
            } else {
                guard inlineValue == nil else {
                    throw .invalidValue(command: spec.name, option: name, value: inlineValue!, expected: "no value (it is a flag)")
                }
                flags.insert(name)
            }
        }
        given = Set(values.keys).union(flags)
        for option in spec.options where option.valueName != nil && values[option.name] == nil {
            if let defaultValue = option.defaultValue { values[option.name] = defaultValue }
        }
    }

    package func flag(_ name: String) -> Bool { flags.contains(name) }

    /// Whether the command line gave option `name` (not just its default).
    package func isGiven(_ name: String) -> Bool { given.contains(name) }

    package func string(_ name: String) -> String? { values[name] }

    /// An integer option within `range`.
    package func integer(_ name: String, in range: ClosedRange<Int>) throws(UsageError) -> Int? {
        guard let text = values[name] else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw .invalidValue(command: command, option: name, value: text, expected: "an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// An `on|off` option: true, false, or nil when absent.
    package func onOff(_ name: String) throws(UsageError) -> Bool? {
        guard let text = values[name] else { return nil }
        guard text == "on" || text == "off" else { throw .invalidValue(command: command, option: name, value: text, expected: "on or off") }
        return text == "on"
    }

    /// A comma-separated list of integers, each within `range` (at least one).
    package func integers(_ name: String, in range: ClosedRange<Int>) throws(UsageError) -> [Int]? {
        guard let text = values[name] else { return nil }
        var result: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let value = Int(part), range.contains(value) else {
                throw .invalidValue(command: command, option: name, value: text,
                                    expected: "comma-separated integers in \(range.lowerBound)...\(range.upperBound)")
            }
            result.append(value)
        }
        return result
    }

    /// A finite floating-point option within `range`.
    package func number(_ name: String, in range: ClosedRange<Double>) throws(UsageError) -> Double? {
        guard let text = values[name] else { return nil }
        guard let value = Double(text), value.isFinite, range.contains(value) else {
            throw .invalidValue(command: command, option: name, value: text, expected: "a number in \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// An option whose value must be one of a `RawRepresentable` enum's cases.
    package func choice<T: RawRepresentable & CaseIterable>(_ name: String, as type: T.Type) throws(UsageError) -> T? where T.RawValue == String {
        guard let text = values[name] else { return nil }
        guard let value = T(rawValue: text) else {
            throw .invalidValue(command: command, option: name, value: text,
                                expected: "one of " + T.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return value
    }

    /// A comma-separated list of enum cases; `all` means every case.
    package func choices<T: RawRepresentable & CaseIterable>(_ name: String, as type: T.Type) throws(UsageError) -> [T]? where T.RawValue == String {
        guard let text = values[name] else { return nil }
        if text == "all" { return Array(T.allCases) }
        var result: [T] = []
        for part in text.split(separator: ",") {
            guard let value = T(rawValue: String(part)) else {
                throw .invalidValue(command: command, option: name, value: String(part),
                                    expected: "a comma-separated list of " + T.allCases.map(\.rawValue).joined(separator: ", ") + ", or all")
            }
            if !result.contains(where: { $0.rawValue == value.rawValue }) { result.append(value) }
        }
        guard !result.isEmpty else {
            throw .invalidValue(command: command, option: name, value: text, expected: "at least one value")
        }
        return result
    }

    /// The known name nearest to `name` by edit distance, if it is close enough to be a typo.
    static func closest(to name: String, in candidates: [String]) -> String? {
        let scored = candidates.map { ($0, editDistance(Array(name), Array($0))) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, name.count / 3) else { return nil }
        return best.0
    }

    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for (i, left) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, right) in b.enumerated() {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (left == right ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// An option declared once with its type and default: `spec` goes into the command's
/// `CommandSpec` (parsing and `--help`), and `ParsedOptions.value(_:)` reads it back as a
/// `Value` — so a read can neither misspell the name nor restate the default. `Value` is
/// optional exactly when the option has no default.
package struct TypedOption<Value>: Sendable {
    package let spec: OptionSpec
    let convert: @Sendable (ParsedOptions) throws(UsageError) -> Value

    package init(spec: OptionSpec, convert: @escaping @Sendable (ParsedOptions) throws(UsageError) -> Value) {
        self.spec = spec
        self.convert = convert
    }
}

extension TypedOption where Value == Int {
    package static func integer(_ name: String, _ valueName: String = "N", default value: Int, in range: ClosedRange<Int>, _ help: String) -> Self {
        Self(spec: .value(name, valueName, default: String(value), help)) { (options) throws(UsageError) in try options.integer(name, in: range) ?? value }
    }
}

extension TypedOption where Value == Int? {
    package static func integer(_ name: String, _ valueName: String = "N", in range: ClosedRange<Int>, _ help: String) -> Self {
        Self(spec: .value(name, valueName, help)) { (options) throws(UsageError) in try options.integer(name, in: range) }
    }
}

extension TypedOption where Value == Double {
    package static func number(_ name: String, _ valueName: String, default value: Double, in range: ClosedRange<Double>, _ help: String) -> Self {
        Self(spec: .value(name, valueName, default: Self.shortest(value), help)) { (options) throws(UsageError) in try options.number(name, in: range) ?? value }
    }

    /// `1.0` as "1", `0.25` as "0.25": the default as a user would type it.
    static func shortest(_ value: Double) -> String { value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value) }
}

extension TypedOption where Value == Double? {
    package static func number(_ name: String, _ valueName: String, in range: ClosedRange<Double>, _ help: String) -> Self {
        Self(spec: .value(name, valueName, help)) { (options) throws(UsageError) in try options.number(name, in: range) }
    }
}

extension TypedOption where Value == String? {
    package static func string(_ name: String, _ valueName: String, _ help: String) -> Self {
        Self(spec: .value(name, valueName, help)) { options in options.string(name) }
    }
}

extension TypedOption where Value == Bool {
    package static func flag(_ name: String, _ help: String) -> Self {
        Self(spec: .flag(name, help)) { options in options.flag(name) }
    }
}

extension TypedOption where Value == Bool? {
    /// `--name on|off`; nil when absent (the caller's "not said" case, e.g. the topology decides).
    package static func onOff(_ name: String, _ help: String) -> Self {
        Self(spec: .value(name, "on|off", help)) { (options) throws(UsageError) in try options.onOff(name) }
    }
}

extension TypedOption {
    /// One of an enum's cases, with a default.
    package static func choice(_ name: String, _ valueName: String, default value: Value, _ help: String) -> Self
    where Value: RawRepresentable & CaseIterable & Sendable, Value.RawValue == String {
        Self(spec: .value(name, valueName, default: value.rawValue, help)) { (options) throws(UsageError) in
            try options.choice(name, as: Value.self) ?? value
        }
    }

    /// A comma-separated list of an enum's cases (`all` = every case), with a default.
    package static func choices<Element>(_ name: String, _ valueName: String, default value: [Element], _ help: String) -> Self
    where Value == [Element], Element: RawRepresentable & CaseIterable & Sendable, Element.RawValue == String {
        let defaultText = value.count == Element.allCases.count && value.count > 1 ? "all" : value.map(\.rawValue).joined(separator: ",")
        return Self(spec: .value(name, valueName, default: defaultText, help)) { (options) throws(UsageError) in
            try options.choices(name, as: Element.self) ?? value
        }
    }
}

extension ParsedOptions {
    /// The value of a typed option of this command. Reading an option the command does not
    /// declare is a programming error (a unit test per command reads every option it declares).
    package func value<Value>(_ option: TypedOption<Value>) throws(UsageError) -> Value {
        precondition(declared.contains(option.spec.name), "--\(option.spec.name) is not an option of '\(command)'")
        return try option.convert(self)
    }
}

extension TypedOption where Value == String {
    /// An option the command cannot run without: absent is a usage error naming it.
    package static func required(_ name: String, _ valueName: String, _ help: String) -> Self {
        Self(spec: .value(name, valueName, help)) { (options) throws(UsageError) in
            guard let text = options.string(name) else { throw .missingValue(command: options.command, option: name, valueName: valueName) }
            return text
        }
    }
}

extension TypedOption where Value == UInt64 {
    /// A seed: a non-negative integer.
    package static func seed(_ name: String = "seed", default value: UInt64, _ help: String) -> Self {
        Self(spec: .value(name, "N", default: String(value), help)) { (options) throws(UsageError) in
            UInt64(try options.integer(name, in: 0...Int.max) ?? Int(value))
        }
    }
}

extension TypedOption {
    /// One of an enum's cases, or nil when absent.
    package static func choice<Wrapped>(_ name: String, _ valueName: String, _ help: String) -> Self
    where Value == Wrapped?, Wrapped: RawRepresentable & CaseIterable & Sendable, Wrapped.RawValue == String {
        Self(spec: .value(name, valueName, help)) { (options) throws(UsageError) in try options.choice(name, as: Wrapped.self) }
    }

    /// A comma-separated list of integers in `range`, with a default.
    package static func integers(_ name: String, _ valueName: String = "LIST", default value: [Int], in range: ClosedRange<Int>, _ help: String) -> Self
    where Value == [Int] {
        Self(spec: .value(name, valueName, default: value.map(String.init).joined(separator: ","), help)) { (options) throws(UsageError) in
            try options.integers(name, in: range) ?? value
        }
    }
}

extension TypedOption where Value == [Double] {
    /// A comma-separated list of finite numbers in `range`, with a default.
    package static func numbers(_ name: String, _ valueName: String = "LIST", default value: [Double], in range: ClosedRange<Double>,
                               _ help: String) -> Self {
        Self(spec: .value(name, valueName, default: value.map { String($0) }.joined(separator: ","), help)) {
            (options) throws(UsageError) in
            guard let text = options.string(name) else { return value }
            var result: [Double] = []
            for part in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let number = Double(part), number.isFinite, range.contains(number) else {
                    throw .invalidValue(command: options.command, option: name, value: text,
                                        expected: "comma-separated numbers in \(range.lowerBound)...\(range.upperBound)")
                }
                result.append(number)
            }
            return result
        }
    }
}

extension TypedOption {
    /// `(option name, path)` for path checks and messages, naming the option by its declaration.
    public func naming(_ path: String?) -> (option: String, path: String?) { (spec.name, path) }
}
