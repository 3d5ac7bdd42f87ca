import Testing
@testable import ArgumentParsing

private let spec = CommandSpec(
    name: "demo", summary: "A demo command.", discussion: "",
    options: [
        .value("topology", "FILE", "topology file"),
        .value("trials", "N", default: "24", "trials"),
        .value("algorithms", "LIST", default: "all", "algorithms"),
        .flag("validate", "check only"),
    ])

private enum Color: String, CaseIterable { case red, green }

@Suite("Command-line parsing")
struct CommandLineOptionsTests {
    @Test("values in both forms, flags, and defaults for absent options")
    func values() throws {
        let options = try ParsedOptions(arguments: ["--topology", "a.json", "--trials=5", "--validate"], spec: spec)
        #expect(options.string("topology") == "a.json")
        #expect(try options.integer("trials", in: 1...10) == 5)
        #expect(options.flag("validate"))
        let defaults = try ParsedOptions(arguments: [], spec: spec)
        #expect(defaults.string("trials") == "24")
        #expect(defaults.string("topology") == nil)
        #expect(!defaults.flag("validate"))
    }

    @Test("an unknown option suggests the nearest known one")
    func unknownOption() {
        #expect(throws: UsageError.unknownOption(command: "demo", option: "--trails", suggestion: "trials")) {
            try ParsedOptions(arguments: ["--trails", "3"], spec: spec)
        }
        #expect(throws: UsageError.unknownOption(command: "demo", option: "--zzzzzzzz", suggestion: nil)) {
            try ParsedOptions(arguments: ["--zzzzzzzz"], spec: spec)
        }
    }

    @Test("a value option at the end, or followed by another option, is missing its value")
    func missingValue() {
        #expect(throws: UsageError.missingValue(command: "demo", option: "topology", valueName: "FILE")) {
            try ParsedOptions(arguments: ["--topology"], spec: spec)
        }
        #expect(throws: UsageError.missingValue(command: "demo", option: "topology", valueName: "FILE")) {
            try ParsedOptions(arguments: ["--topology", "--validate"], spec: spec)
        }
    }

    @Test("bad numbers and out-of-range numbers name the option and the range")
    func badNumbers() throws {
        let options = try ParsedOptions(arguments: ["--trials", "0"], spec: spec)
        #expect(throws: UsageError.invalidValue(command: "demo", option: "trials", value: "0", expected: "an integer in 1...10")) {
            try options.integer("trials", in: 1...10)
        }
        let words = try ParsedOptions(arguments: ["--trials", "many"], spec: spec)
        #expect(throws: UsageError.self) { try words.integer("trials", in: 1...10) }
    }

    @Test("on|off options: absent is nil, anything else is refused")
    func onOff() throws {
        #expect(try ParsedOptions(arguments: ["--topology", "on"], spec: spec).onOff("topology") == true)
        #expect(try ParsedOptions(arguments: ["--topology", "off"], spec: spec).onOff("topology") == false)
        #expect(try ParsedOptions(arguments: [], spec: spec).onOff("topology") == nil)
        let bad = try ParsedOptions(arguments: ["--topology", "yes"], spec: spec)
        #expect(throws: UsageError.invalidValue(command: "demo", option: "topology", value: "yes", expected: "on or off")) { try bad.onOff("topology") }
    }

    @Test("integer lists: every entry checked against the range, empty entries refused")
    func integerLists() throws {
        #expect(try ParsedOptions(arguments: ["--algorithms", "1,16,256"], spec: spec).integers("algorithms", in: 1...256) == [1, 16, 256])
        #expect(try ParsedOptions(arguments: [], spec: spec).integers("topology", in: 1...2) == nil)
        for bad in ["1,,2", "1,300", "x", ""] {
            let options = try ParsedOptions(arguments: ["--algorithms", bad], spec: spec)
            #expect(throws: UsageError.invalidValue(command: "demo", option: "algorithms", value: bad, expected: "comma-separated integers in 1...256")) {
                try options.integers("algorithms", in: 1...256)
            }
        }
    }

    @Test("lists of choices: all, duplicates folded, unknown names refused")
    func choices() throws {
        #expect(try ParsedOptions(arguments: [], spec: spec).choices("algorithms", as: Color.self) == [.red, .green])
        #expect(try ParsedOptions(arguments: ["--algorithms", "green,green"], spec: spec).choices("algorithms", as: Color.self) == [.green])
        #expect(throws: UsageError.self) {
            try ParsedOptions(arguments: ["--algorithms", "green,blue"], spec: spec).choices("algorithms", as: Color.self)
        }
    }

    @Test("a flag given a value and a stray argument are errors; --help is noted")
    func strayInput() throws {
        #expect(throws: UsageError.self) { try ParsedOptions(arguments: ["--validate=yes"], spec: spec) }
        #expect(throws: UsageError.unexpectedArgument(command: "demo", argument: "file.json")) {
            try ParsedOptions(arguments: ["file.json"], spec: spec)
        }
        #expect(try ParsedOptions(arguments: ["-h"], spec: spec).helpRequested)
    }

    @Test("help lists every declared option with its default")
    func help() {
        let text = spec.helpText
        #expect(text.contains("--topology FILE"))
        #expect(text.contains("--trials N") && text.contains("(default: 24)"))
        #expect(text.contains("--validate"))
        #expect(text.hasPrefix("usage: moe demo [options]"))
    }
}
