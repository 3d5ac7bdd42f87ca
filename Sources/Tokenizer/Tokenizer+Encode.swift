import Foundation

extension Tokenizer {
    /// GPT-2's byte-to-character table: printable bytes stand for themselves, the others for
    /// U+0100 onwards in byte order, so every byte string is a printable string.
    static let byteCharacters: [Unicode.Scalar] = {
        let printable = Set(Array(33...126) + Array(161...172) + Array(174...255))
        var characters = [Unicode.Scalar](repeating: " ", count: 256)
        var next = 256
        for byte in 0..<256 {
            if printable.contains(byte) {
                characters[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                characters[byte] = Unicode.Scalar(UInt32(next))!
                next += 1
            }
        }
        return characters
    }()

    static let characterBytes: [Unicode.Scalar: UInt8] = {
        var table: [Unicode.Scalar: UInt8] = [:]
        for (byte, character) in byteCharacters.enumerated() { table[character] = UInt8(byte) }
        return table
    }()

    /// The ids of `text` (no special tokens added).
    package func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for segment in splitAdded(text) {
            switch segment {
            case let .added(id): ids.append(id)
            case let .text(part): ids += encodeText(part)
            }
        }
        return ids
    }

    enum Segment { case added(Int), text(String) }

    /// `text` cut at every added token (longest first, leftmost).
    func splitAdded(_ text: String) -> [Segment] {
        guard !added.isEmpty, !text.isEmpty else { return text.isEmpty ? [] : [.text(text)] }
        var segments: [Segment] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var best: (range: Range<Substring.Index>, id: Int)?
            for (content, id) in added where !content.isEmpty {
                if let range = rest.range(of: content), best == nil || range.lowerBound < best!.range.lowerBound {
                    best = (range, id)
                }
            }
            guard let found = best else {
                segments.append(.text(String(rest)))
                break
            }
            if found.range.lowerBound > rest.startIndex { segments.append(.text(String(rest[..<found.range.lowerBound]))) }
            segments.append(.added(found.id))
            rest = rest[found.range.upperBound...]
        }
        return segments
    }

    private func encodeText(_ text: String) -> [Int] {
        switch pipeline {
        case let .byteLevel(splits):
            var pieces = text.isEmpty ? [] : [text]
            // Code points, as tokenizers' regex engine sees the text (not grapheme clusters).
            for pattern in splits {
                guard let regex = try? Regex(pattern).matchingSemantics(.unicodeScalar) else { continue }
                pieces = pieces.flatMap { self.pieces($0, regex: regex) }
            }
            return pieces.flatMap { piece in
                bpe(Array(piece.utf8).map { [Self.byteCharacters[Int($0)]] })
            }
        case let .sentencePiece(prepend, splitOnSpace):
            var normal = text.replacingOccurrences(of: " ", with: "▁")
            if prepend, !text.isEmpty { normal = "▁" + normal }
            let parts = splitOnSpace ? splitBeforeMarker(normal) : [normal]
            return parts.flatMap { bpe($0.unicodeScalars.map { [$0] }) }
        }
    }

    /// `text` cut into the regex's matches and the gaps between them (`Isolated`).
    func pieces(_ text: String, regex: Regex<AnyRegexOutput>) -> [String] {
        var result: [String] = []
        var cursor = text.startIndex
        for match in text.matches(of: regex) where !match.range.isEmpty {
            if match.range.lowerBound > cursor { result.append(String(text[cursor..<match.range.lowerBound])) }
            result.append(String(text[match.range]))
            cursor = match.range.upperBound
        }
        if cursor < text.endIndex { result.append(String(text[cursor...])) }
        return result
    }

    /// Pieces each starting at a "▁" (Metaspace with `split`).
    private func splitBeforeMarker(_ text: String) -> [String] {
        var parts: [String] = [], current = ""
        for scalar in text.unicodeScalars {
            if scalar == "▁", !current.isEmpty {
                parts.append(current)
                current = ""
            }
            current.unicodeScalars.append(scalar)
        }
        if !current.isEmpty { parts.append(current) }
        return parts
    }

    /// BPE over `symbols`: merge the adjacent pair of lowest rank (the leftmost on a tie) until
    /// none merges; then each symbol's id — a symbol outside the vocabulary as its UTF-8 bytes'
    /// `<0xNN>` tokens (byte fallback), else the unknown token (consecutive ones fused).
    func bpe(_ symbols: [Symbol]) -> [Int] {
        var word = symbols
        while word.count > 1 {
            var best: (rank: Int, index: Int)?
            for index in 0..<word.count - 1 {
                if let rank = merges[Pair(left: word[index], right: word[index + 1])], best == nil || rank < best!.rank { best = (rank, index) }
            }
            guard let (_, index) = best else { break }
            word[index] += word[index + 1]
            word.remove(at: index + 1)
        }
        var ids: [Int] = []
        var lastWasUnknown = false
        for symbol in word {
            if let id = vocabulary[symbol] {
                ids.append(id)
                lastWasUnknown = false
            } else if byteFallback,
                      case let bytes = String(String.UnicodeScalarView(symbol)).utf8.map({ vocabulary[Array(String(format: "<0x%02X>", $0).unicodeScalars)] }),
                      bytes.allSatisfy({ $0 != nil }) {
                ids += bytes.map { $0! }
                lastWasUnknown = false
            } else if let unknown {
                if !(fuseUnknown && lastWasUnknown) { ids.append(unknown) }
                lastWasUnknown = true
            }
        }
        return ids
    }

    /// The text of `ids` (unknown ids are skipped).
    package func decode(_ ids: [Int]) -> String {
        let pieces = ids.compactMap { tokens[$0] }
        switch pipeline {
        case .byteLevel:
            var bytes: [UInt8] = []
            let addedContents = Set(added.map(\.content))
            for piece in pieces {
                if addedContents.contains(piece) { bytes += Array(piece.utf8); continue }
                for scalar in piece.unicodeScalars { if let byte = Self.characterBytes[scalar] { bytes.append(byte) } }
            }
            return String(decoding: bytes, as: UTF8.self)
        case let .sentencePiece(prepend, _):
            // "▁" → " ", <0xNN> runs → their UTF-8 text (invalid bytes each "�"), then the
            // prepended space dropped.
            var text = "", pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let valid = String(validating: pending, as: UTF8.self) { text += valid } else { text += String(repeating: "\u{FFFD}", count: pending.count) }
                pending = []
            }
            for piece in pieces {
                if piece.count == 6, piece.hasPrefix("<0x"), piece.hasSuffix(">"), let byte = UInt8(piece.dropFirst(3).prefix(2), radix: 16) {
                    pending.append(byte)
                    continue
                }
                flush()
                text += piece.replacingOccurrences(of: "▁", with: " ")
            }
            flush()
            if prepend, text.hasPrefix(" ") { text.removeFirst() }
            return text
        }
    }
}
