import Testing
@testable import ArgumentParsing

private enum Shape: String, CaseIterable, Sendable { case round, square, flat }

private enum DemoOptions {
    static let trials = TypedOption<Int>.integer("trials", default: 24, in: 1...100, "trials")
    static let limit = TypedOption<Int?>.integer("limit", in: 0...9, "an optional limit")
    static let factor = TypedOption<Double>.number("factor", "C", default: 1.25, in: 0...10, "a factor")
    static let factors = TypedOption<[Double]>.numbers("factors", default: [1.0, 1.25], in: 0...10, "factors")
    static let shape = TypedOption<Shape>.choice("shape", "NAME", default: .square, "a shape")
    static let shapes = TypedOption<[Shape]>.choices("shapes", "LIST", default: Shape.allCases, "shapes")
    static let output = TypedOption<String>.required("output", "FILE", "where to write")
    static let links = TypedOption<Bool?>.onOff("links", "simulate links")
    static let quiet = TypedOption<Bool>.flag("quiet", "say less")
    static let seed = TypedOption<UInt64>.seed(default: 7, "a seed")
    static let spec = CommandSpec(
        name: "typed", summary: "Typed options.", discussion: "",
        options: [trials.spec, limit.spec, factor.spec, factors.spec, shape.spec, shapes.spec, output.spec, links.spec, quiet.spec, seed.spec])
}

@Suite("Typed options: declared once, read back typed")
struct TypedOptionTests {
    @Test("absent options read as their declared default (or nil), and help shows the same default")
    func defaults() throws {
        let options = try ParsedOptions(arguments: ["--output", "x.json"], spec: DemoOptions.spec)
        #expect(try options.value(DemoOptions.trials) == 24)
        #expect(try options.value(DemoOptions.limit) == nil)
        #expect(try options.value(DemoOptions.factor) == 1.25)
        #expect(try options.value(DemoOptions.factors) == [1.0, 1.25])
        #expect(try options.value(DemoOptions.shape) == .square)
        #expect(try options.value(DemoOptions.shapes) == Shape.allCases)
        #expect(try options.value(DemoOptions.links) == nil)
        #expect(try options.value(DemoOptions.quiet) == false)
        #expect(try options.value(DemoOptions.seed) == 7)
        let help = DemoOptions.spec.helpText
        for expected in ["--trials N", "(default: 24)", "(default: 1.25)", "(default: 1.0,1.25)", "(default: square)", "(default: all)", "(default: 7)"] {
            #expect(help.contains(expected), "help lacks \(expected)")
        }
    }

    @Test("given values are parsed and range-checked")
    func values() throws {
        let options = try ParsedOptions(
            arguments: ["--trials", "3", "--limit=9", "--factor", "0.5", "--factors", "2,3.5", "--shape", "flat", "--shapes", "round",
                        "--output", "o", "--links", "off", "--quiet", "--seed", "12"],
            spec: DemoOptions.spec)
        #expect(try options.value(DemoOptions.trials) == 3)
        #expect(try options.value(DemoOptions.limit) == 9)
        #expect(try options.value(DemoOptions.factor) == 0.5)
        #expect(try options.value(DemoOptions.factors) == [2, 3.5])
        #expect(try options.value(DemoOptions.shape) == .flat)
        #expect(try options.value(DemoOptions.shapes) == [.round])
        #expect(try options.value(DemoOptions.output) == "o")
        #expect(try options.value(DemoOptions.links) == false)
        #expect(try options.value(DemoOptions.quiet))
        #expect(try options.value(DemoOptions.seed) == 12)
        #expect(throws: UsageError.invalidValue(command: "typed", option: "trials", value: "101", expected: "an integer in 1...100")) {
            try ParsedOptions(arguments: ["--trials", "101"], spec: DemoOptions.spec).value(DemoOptions.trials)
        }
        #expect(throws: UsageError.self) { try ParsedOptions(arguments: ["--factors", "1,x"], spec: DemoOptions.spec).value(DemoOptions.factors) }
        #expect(throws: UsageError.self) { try ParsedOptions(arguments: ["--shape", "oval"], spec: DemoOptions.spec).value(DemoOptions.shape) }
    }

    @Test("a required option that is absent is a usage error naming it")
    func required() {
        #expect(throws: UsageError.missingValue(command: "typed", option: "output", valueName: "FILE")) {
            try ParsedOptions(arguments: [], spec: DemoOptions.spec).value(DemoOptions.output)
        }
    }

    @Test("reading an option the command does not declare stops the program (a bug, not an input)")
    func undeclared() async {
        await #expect(processExitsWith: .failure) {
            let other = CommandSpec(name: "other", summary: "", discussion: "", options: [])
            _ = try? ParsedOptions(arguments: [], spec: other).value(DemoOptions.trials)
        }
    }
}
