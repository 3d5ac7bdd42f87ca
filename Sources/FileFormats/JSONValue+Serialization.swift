extension JSONValue {
    /// Serialises as JSON text. `pretty` puts object members and array elements on their own
    /// lines (arrays of numbers stay on one line, so matrices remain readable).
    public func serialized(pretty: Bool = true) -> String {
        var output = ""
        write(to: &output, indent: pretty ? 0 : nil)
        return output
    }

    private func write(to output: inout String, indent: Int?) {
        switch self {
        case .null: output += "null"
        case let .bool(flag): output += flag ? "true" : "false"
        case let .number(number): output += JSONValue.format(number)
        case let .string(text): JSONValue.writeString(text, to: &output)
        case let .array(elements):
            let scalarsOnly = elements.allSatisfy { if case .array = $0 { return false }; if case .object = $0 { return false }; return true }
            if indent == nil || scalarsOnly || elements.isEmpty {
                output += "["
                for (index, element) in elements.enumerated() {
                    if index > 0 { output += indent == nil ? "," : ", " }
                    element.write(to: &output, indent: nil)
                }
                output += "]"
            } else {
                let inner = indent! + 2
                output += "[\n"
                for (index, element) in elements.enumerated() {
                    output += String(repeating: " ", count: inner)
                    element.write(to: &output, indent: inner)
                    output += index + 1 < elements.count ? ",\n" : "\n"
                }
                output += String(repeating: " ", count: indent!) + "]"
            }
        case let .object(members):
            guard let indent, !members.isEmpty else {
                output += "{"
                for (index, member) in members.enumerated() {
                    if index > 0 { output += "," }
                    JSONValue.writeString(member.key, to: &output)
                    output += ":"
                    member.value.write(to: &output, indent: nil)
                }
                output += "}"
                return
            }
            let inner = indent + 2
            output += "{\n"
            for (index, member) in members.enumerated() {
                output += String(repeating: " ", count: inner)
                JSONValue.writeString(member.key, to: &output)
                output += ": "
                member.value.write(to: &output, indent: inner)
                output += index + 1 < members.count ? ",\n" : "\n"
            }
            output += String(repeating: " ", count: indent) + "}"
        }
    }

    /// Integers print without a fraction; other finite numbers in Swift's shortest round-trip
    /// form; NaN and infinities (which JSON cannot hold) as null.
    static func format(_ number: Double) -> String {
        guard number.isFinite else { return "null" }
        if number.rounded() == number, abs(number) < 1e15 { return String(Int64(number)) }
        return "\(number)"
    }

    private static func writeString(_ text: String, to output: inout String) {
        output += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }
}
