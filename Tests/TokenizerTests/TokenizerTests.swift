import FileFormats
import Foundation
import Testing
@testable import Tokenizer

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/tokenizers").path

/// The strings of a fixture with the ids and decoded text Hugging Face `tokenizers` gave.
private func cases(_ kind: String) throws -> [(text: String, ids: [Int], decoded: String)] {
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/\(kind)/cases.json"))
    let records = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
    return try records.map { (try #require($0["text"] as? String), try #require($0["ids"] as? [Int]), try #require($0["decoded"] as? String)) }
}

@Suite("Tokenizers: encode and decode equal Hugging Face tokenizers' (Tests/Fixtures/make_tokenizers.py)")
struct TokenizerTests {
    @Test("300 strings (Unicode, whitespace runs, digits, emoji) encode to tokenizers' ids and decode to its text", arguments: ["byte_level", "sentencepiece", "byte_level_deepseek", "byte_level_o200k"])
    func matchesTokenizers(kind: String) throws {
        let tokenizer = try Tokenizer.load(path: "\(fixtures)/\(kind)/tokenizer.json")
        var wrong: [String] = []
        let all = try cases(kind)
        for (text, ids, decoded) in all {
            let encoded = tokenizer.encode(text)
            if encoded != ids { wrong.append("encode \(text.debugDescription): \(encoded) ≠ \(ids)") }
            let back = tokenizer.decode(ids)
            if back != decoded { wrong.append("decode \(ids): \(back.debugDescription) ≠ \(decoded.debugDescription)") }
        }
        #expect(all.count >= 300)
        #expect(wrong.isEmpty, "\(kind): \(wrong.count) of \(all.count) differ, e.g.\n\(wrong.prefix(8).joined(separator: "\n"))")
    }

    @Test("an unsupported model or pre-tokenizer is refused, naming the file and the field")
    func refusesUnsupported() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (json, field) in [(#"{"model": {"type": "WordPiece", "vocab": {}}}"#, "field 'model.type': 'WordPiece' is not supported"),
                              (#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}}"#, "field 'pre_tokenizer[0]': 'Whitespace' is not supported"),
                              (#"{"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": null}"#, "field 'pre_tokenizer': neither byte-level")] {
            let path = "\(folder)/tokenizer.json"
            try json.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(throws: TokenizerError.self) { try Tokenizer.load(path: path) }
            do { _ = try Tokenizer.load(path: path) } catch { #expect("\(error)".contains(path) && "\(error)".contains(field), "\(error)") }
        }
    }
}
