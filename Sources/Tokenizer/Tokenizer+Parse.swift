import FileFormats

extension Tokenizer {
    /// The tokenizer a tokenizer.json document describes, or the field that SwiftMoE cannot honour.
    static func parse(_ document: JSONValue, path: String) throws -> Tokenizer {
        func fail(_ field: String, _ problem: String) -> TokenizerError { TokenizerError(path: path, field: field, problem: problem) }
        guard case let .object(root) = document else { throw fail("", "expected a JSON object") }
        func member(_ object: [(key: String, value: JSONValue)], _ key: String) -> JSONValue? {
            object.first { $0.key == key }?.value
        }
        func string(_ value: JSONValue?) -> String? { if case let .string(text)? = value { return text } else { return nil } }
        func bool(_ value: JSONValue?) -> Bool? { if case let .bool(flag)? = value { return flag } else { return nil } }
        guard case let .object(model)? = member(root, "model") else { throw fail("model", "missing") }
        let kind = string(member(model, "type")) ?? "BPE"
        guard kind == "BPE" else { throw fail("model.type", "'\(kind)' is not supported (byte-level BPE and SentencePiece-style BPE are)") }
        guard case let .object(vocabularyMembers)? = member(model, "vocab") else { throw fail("model.vocab", "missing") }
        var vocabulary: [Symbol: Int] = [:]
        var tokens: [Int: String] = [:]
        for (token, value) in vocabularyMembers {
            guard case let .number(id) = value, id >= 0, id == id.rounded() else { throw fail("model.vocab.\(token)", "expected a token id") }
            vocabulary[Array(token.unicodeScalars)] = Int(id)
            tokens[Int(id)] = token
        }
        var merges: [Pair: Int] = [:]
        if case let .array(items)? = member(model, "merges") {
            for (rank, item) in items.enumerated() {
                let pair: Pair
                switch item {
                case let .string(text):
                    let parts = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                    guard parts.count == 2 else { throw fail("model.merges[\(rank)]", "expected \"left right\"") }
                    pair = Pair(left: Array(parts[0].unicodeScalars), right: Array(parts[1].unicodeScalars))
                case let .array(parts) where parts.count == 2:
                    guard let left = string(parts[0]), let right = string(parts[1]) else { throw fail("model.merges[\(rank)]", "expected two strings") }
                    pair = Pair(left: Array(left.unicodeScalars), right: Array(right.unicodeScalars))
                default: throw fail("model.merges[\(rank)]", "expected a pair")
                }
                if merges[pair] == nil { merges[pair] = rank }
            }
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] where string(member(model, key)).map({ !$0.isEmpty }) == true {
            throw fail("model.\(key)", "is not supported")
        }
        var added: [(content: String, id: Int)] = []
        if case let .array(items)? = member(root, "added_tokens") {
            for case let .object(token) in items {
                guard let content = string(member(token, "content")), case let .number(id)? = member(token, "id") else { continue }
                added.append((content, Int(id)))
                vocabulary[Array(content.unicodeScalars)] = Int(id)
                tokens[Int(id)] = content
            }
        }
        added.sort { $0.content.count > $1.content.count }
        let pipeline = try Self.pipeline(normalizer: member(root, "normalizer"), preTokenizer: member(root, "pre_tokenizer"), fail: fail)
        let unknown = string(member(model, "unk_token")).flatMap { vocabulary[Array($0.unicodeScalars)] }
        return Tokenizer(vocabulary: vocabulary, tokens: tokens, merges: merges, added: added, pipeline: pipeline, unknown: unknown,
                         fuseUnknown: bool(member(model, "fuse_unk")) ?? false, byteFallback: bool(member(model, "byte_fallback")) ?? false)
    }

    /// Which of the two pipelines the normaliser and pre-tokenizer describe.
    private static func pipeline(normalizer: JSONValue?, preTokenizer: JSONValue?, fail: (String, String) -> TokenizerError) throws -> Pipeline {
        func object(_ value: JSONValue?) -> [(key: String, value: JSONValue)]? { if case let .object(members)? = value { return members } else { return nil } }
        func type(_ value: JSONValue?) -> String? { object(value)?.first { $0.key == "type" }.flatMap { if case let .string(text) = $0.value { text } else { nil } } }
        func field(_ value: JSONValue?, _ key: String) -> JSONValue? { object(value)?.first { $0.key == key }?.value }
        func flatten(_ value: JSONValue?, list: String) -> [JSONValue] {
            guard let value, value != .null else { return [] }
            if type(value) == "Sequence", case let .array(items)? = field(value, list) { return items.flatMap { flatten($0, list: list) } }
            return [value]
        }
        let normalizers = flatten(normalizer, list: "normalizers")
        let preTokenizers = flatten(preTokenizer, list: "pretokenizers")
        // SentencePiece-style: Prepend("▁") + Replace(" " → "▁") normalisers, or a Metaspace pre-tokenizer.
        let normalizerTypes = normalizers.compactMap(type)
        if normalizerTypes.contains("Replace") || normalizerTypes.contains("Prepend") || preTokenizers.contains(where: { type($0) == "Metaspace" }) {
            for (index, item) in normalizers.enumerated() {
                switch type(item) {
                case "Prepend", "Replace": continue
                default: throw fail("normalizer[\(index)]", "'\(type(item) ?? "?")' is not supported with SentencePiece-style BPE")
                }
            }
            var prepend = normalizerTypes.contains("Prepend"), split = false
            for (index, item) in preTokenizers.enumerated() {
                guard type(item) == "Metaspace" else { throw fail("pre_tokenizer[\(index)]", "'\(type(item) ?? "?")' is not supported with SentencePiece-style BPE") }
                if case let .string(scheme)? = field(item, "prepend_scheme") { prepend = scheme != "never" }
                else if case let .bool(flag)? = field(item, "add_prefix_space") { prepend = flag }
                else { prepend = true }
                if case let .bool(flag)? = field(item, "split") { split = flag }
            }
            return .sentencePiece(prepend: prepend, splitOnSpace: split)
        }
        guard normalizers.isEmpty else { throw fail("normalizer", "'\(normalizerTypes.first ?? "?")' is not supported with byte-level BPE") }
        var patterns: [String] = []
        var byteLevel = false
        for (index, item) in preTokenizers.enumerated() {
            switch type(item) {
            case "Split":
                guard case let .object(members)? = field(item, "pattern"), let regex = members.first(where: { $0.key == "Regex" || $0.key == "String" }),
                      case let .string(text) = regex.value else { throw fail("pre_tokenizer[\(index)].pattern", "expected a Regex or String") }
                if case let .string(behavior)? = field(item, "behavior"), behavior != "Isolated" {
                    throw fail("pre_tokenizer[\(index)].behavior", "'\(behavior)' is not supported (Isolated is)")
                }
                let pattern = regex.key == "Regex" ? text : escape(text)
                guard (try? Regex(pattern)) != nil else { throw fail("pre_tokenizer[\(index)].pattern", "the regex does not compile here") }
                patterns.append(pattern)
            case "ByteLevel":
                byteLevel = true
                if case .bool(true)? = field(item, "add_prefix_space") { throw fail("pre_tokenizer[\(index)].add_prefix_space", "true is not supported") }
                if case .bool(true)? = field(item, "use_regex") { patterns.append(gpt2Pattern) }
            default:
                throw fail("pre_tokenizer[\(index)]", "'\(type(item) ?? "?")' is not supported (Split, ByteLevel and Metaspace are)")
            }
        }
        guard byteLevel else { throw fail("pre_tokenizer", "neither byte-level (ByteLevel) nor SentencePiece-style (Metaspace, or Prepend/Replace normalisers): not supported") }
        return .byteLevel(splits: patterns)
    }

    /// `text` as a regex matching it literally.
    private static func escape(_ text: String) -> String {
        text.map { "\\^$.|?*+()[]{}/".contains($0) ? "\\\($0)" : String($0) }.joined()
    }
}
