import Testing
@testable import FileFormats

@Suite("Strict JSON parser")
struct JSONParserTests {
    @Test("parses every kind of value and keeps object order")
    func parsesValues() throws {
        let value = try JSONParser.parse(#"{"b": [1, -2.5e2, true, false, null], "a": "x\u00e9\n"}"#)
        #expect(value == .object([
            ("b", .array([.number(1), .number(-250), .bool(true), .bool(false), .null])),
            ("a", .string("xé\n")),
        ]))
    }

    @Test("decodes surrogate pairs")
    func surrogatePairs() throws {
        #expect(try JSONParser.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test("reports line and column of a syntax error", arguments: [
        ("{\n  \"a\": 1,\n}", 3, 1, "expected a string key in object"),
        ("[1, 2", 1, 6, "expected ',' or ']' in array"),
        ("{\"a\": 1, \"a\": 2}", 1, 10, "duplicate key \"a\""),
        ("[01]", 1, 3, "expected ',' or ']' in array"),
        ("[NaN]", 1, 2, "unexpected character 'N', expected a value"),
        ("{} x", 1, 4, "unexpected text after the JSON document"),
        ("\"abc", 1, 5, "unterminated string"),
        ("[1e999]", 1, 2, "number 1e999 is out of range"),
    ])
    func syntaxErrors(text: String, line: Int, column: Int, problem: String) {
        #expect(throws: JSONSyntaxError(line: line, column: column, problem: problem)) { try JSONParser.parse(text) }
    }

    @Test("refuses nesting deeper than the limit instead of overflowing the stack")
    func depthLimit() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(deep) }
        let fine = String(repeating: "[", count: JSONParser.maximumDepth) + String(repeating: "]", count: JSONParser.maximumDepth)
        #expect(throws: Never.self) { try JSONParser.parse(fine) }
    }

    @Test("rejects invalid UTF-8 and raw control characters in strings")
    func invalidStrings() {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xFF, 0x22]) }
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse("\"a\u{01}b\"") }
    }

    @Test("serialisation parses back to the same value")
    func roundTrip() throws {
        let value = JSONValue.object([
            ("name", .string("q\"uote\\ \u{1}")), ("n", .number(3)), ("x", .number(0.1)),
            ("rows", .array([.array([.number(1), .number(2)]), .object([])])), ("none", .null),
        ])
        #expect(try JSONParser.parse(value.serialized(pretty: true)) == value)
        #expect(try JSONParser.parse(value.serialized(pretty: false)) == value)
    }
}

@Suite("JSON object reader")
struct JSONObjectReaderTests {
    @Test("names the full path of a field of the wrong type")
    func wrongType() throws {
        let reader = try JSONObjectReader(try JSONParser.parse(#"{"links": {"inter": {"latency_us": "5"}}}"#))
        let inter = try reader.object("links").object("inter")
        #expect(throws: JSONFieldError(path: "links.inter.latency_us", problem: "expected a number, found a string")) {
            try inter.number("latency_us")
        }
    }

    @Test("an unknown field is an error that lists the allowed ones")
    func unknownField() throws {
        let reader = try JSONObjectReader(try JSONParser.parse(#"{"nodes": [], "nodez": 1}"#))
        #expect(throws: JSONFieldError(path: "nodez", problem: "unknown field (allowed: nodes, links)")) {
            try reader.rejectUnknownKeys(allowed: ["nodes", "links"])
        }
    }

    @Test("integers must be integral")
    func integers() throws {
        #expect(try JSONObjectReader.integer(.number(7), path: "a") == 7)
        #expect(throws: JSONFieldError(path: "a[0]", problem: "expected an integer, found 1.5")) {
            try JSONObjectReader.integer(.number(1.5), path: "a[0]")
        }
        #expect(throws: JSONFieldError.self) { try JSONObjectReader.integer(.number(1e300), path: "a") }
    }

    @Test("a missing required field names the field")
    func missing() throws {
        let reader = try JSONObjectReader(.object([]), path: "nodes[3]")
        #expect(throws: JSONFieldError(path: "nodes[3].ranks", problem: "missing required field")) { try reader.array("ranks") }
    }
}
