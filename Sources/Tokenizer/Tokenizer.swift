import FileFormats

/// A checkpoint's `tokenizer.json` (Hugging Face `tokenizers`), for the kinds MoE checkpoints use:
/// - byte-level BPE (GPT-2, Qwen2/Qwen3-MoE, OLMoE, DeepSeek, GPT-OSS): the text split by a regex
///   (a `Split` pre-tokenizer's pattern, or GPT-2's when `ByteLevel` has `use_regex`), each
///   piece's UTF-8 bytes mapped to printable characters (GPT-2's byte-to-character table), BPE
///   merges within each piece; decoded by mapping the characters back to bytes;
/// - SentencePiece-style BPE with byte fallback (Llama, Mixtral): spaces replaced by "▁" and one
///   prepended (a `Prepend`/`Replace` normaliser or a `Metaspace` pre-tokenizer), BPE merges over
///   characters, characters outside the vocabulary as `<0xNN>` byte tokens; decoded by turning
///   "▁" back into spaces, byte tokens back into UTF-8, and dropping the prepended space.
/// Added (special) tokens in the text are matched first, longest first, and become their own
/// ids. Anything else (WordPiece, Unigram, other normalisers) is refused when loading, naming the
/// file and the field. Pure: no I/O beyond reading the file.
package struct Tokenizer: Sendable {
    /// A token's text as Unicode scalars: tokenizers compares code points, while Swift's String
    /// equality would merge canonically equivalent tokens ("é" and "e" + U+0301) and its
    /// Characters would fuse "\r\n" into one symbol.
    typealias Symbol = [Unicode.Scalar]

    let vocabulary: [Symbol: Int]
    package let tokens: [Int: String]
    let merges: [Pair: Int]
    let added: [(content: String, id: Int)]
    let pipeline: Pipeline
    let unknown: Int?
    let fuseUnknown: Bool
    let byteFallback: Bool

    struct Pair: Hashable, Sendable {
        let left: Symbol
        let right: Symbol
    }

    /// How text becomes pieces and tokens become text, per kind.
    enum Pipeline: Sendable {
        /// `splits`: the pre-tokenizer's regexes, applied in order, each to every piece the one
        /// before left (DeepSeek has three; none: the whole text is one piece).
        case byteLevel(splits: [String])
        /// `prepend`: "▁" goes in front of the text (SentencePiece's dummy prefix); `splitOnSpace`:
        /// pieces start at each "▁" (Metaspace with `split`).
        case sentencePiece(prepend: Bool, splitOnSpace: Bool)
    }

    /// GPT-2's pre-tokenizer pattern (`ByteLevel` with `use_regex`).
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// "byte-level BPE" or "SentencePiece-style BPE" (for messages).
    package var kind: String {
        if case .byteLevel = pipeline { return "byte-level BPE" }
        return "SentencePiece-style BPE" + (byteFallback ? " with byte fallback" : "")
    }

    /// Tokens in the vocabulary (added tokens included).
    package var count: Int { (tokens.keys.max() ?? -1) + 1 }

    package static func load(path: String) throws(TokenizerError) -> Tokenizer {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: 1 << 30) } catch { throw TokenizerError(path: path, field: "", problem: error.reason) }
        do {
            return try parse(try JSONParser.parse(bytes), path: path)
        } catch let error as TokenizerError {
            throw error
        } catch {
            throw TokenizerError(path: path, field: "", problem: "invalid JSON: \(error)")
        }
    }
}

/// Why a tokenizer.json cannot be used: the file, the field, the problem.
package struct TokenizerError: Error, CustomStringConvertible, Equatable {
    package let path: String
    package let field: String
    package let problem: String
    package var description: String { field.isEmpty ? "\(path): \(problem)" : "\(path): field '\(field)': \(problem)" }
}
