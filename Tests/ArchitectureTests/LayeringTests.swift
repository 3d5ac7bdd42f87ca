import Foundation
import Testing

/// The repository root, from this file's path (Tests/ArchitectureTests/LayeringTests.swift).
private let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Modules that come with the toolchain; any module may import them.
private let toolchainModules: Set<String> = ["Foundation", "Glibc", "Dispatch", "Synchronization"]
/// The C shims: only `internal import`, and only where the table says.
private let shims: Set<String> = ["CMPI", "COpenBLAS", "CKernels"]

/// One `import` line of a source file.
struct ImportLine: Equatable {
    let file: String
    let module: String
    /// `internal import` (an import that does not leak into the module's API).
    let isInternal: Bool
}

/// The `import` lines of a Swift source text.
func imports(in text: String, file: String) -> [ImportLine] {
    text.split(separator: "\n").compactMap { line in
        var words = line.split(separator: " ").map(String.init)
        var isInternal = false
        while let first = words.first, first.hasPrefix("@") || ["internal", "public", "package", "private", "fileprivate"].contains(first) {
            if first == "internal" || first == "private" || first == "fileprivate" { isInternal = true }
            words.removeFirst()
        }
        guard words.count >= 2, words[0] == "import" else { return nil }
        return ImportLine(file: file, module: words[1].split(separator: ".").first.map(String.init) ?? words[1], isInternal: isInternal)
    }
}

/// The "may import" column of docs/ARCHITECTURE.md's module table: `[module: allowed modules]`,
/// and for the shims the file a module may import them in (nil: any file of the module).
func allowedImports(architecture text: String) -> [String: [String: String?]] {
    var table: [String: [String: String?]] = [:]
    for line in text.split(separator: "\n") where line.hasPrefix("| `") {
        let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard cells.count >= 5 else { continue }
        let module = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
        var allowed: [String: String?] = [:]
        // Entries: `Name` optionally followed by "(internal import, `File.swift` only)".
        let column = cells[3]
        let pattern = try! NSRegularExpression(pattern: "`([A-Za-z+.]+)`( \\(internal import, (`([A-Za-z+]+\\.swift)` only|every file)\\))?")
        for match in pattern.matches(in: column, range: NSRange(column.startIndex..., in: column)) {
            let name = String(column[Range(match.range(at: 1), in: column)!])
            let file = Range(match.range(at: 4), in: column).map { String(column[$0]) }
            allowed[name] = .some(file)
        }
        table[module] = allowed
    }
    return table
}

/// Every Swift file of a module, with its text.
func sourceFiles(of module: String) throws -> [(path: String, text: String)] {
    let folder = module == "moe-bench" ? repositoryRoot.appendingPathComponent("Benchmarks/Sources/moe-bench")
                                       : repositoryRoot.appendingPathComponent("Sources/\(module)")
    // Subfolders group a module's files (MoE/Routing, MoE/Experts, ...); a file is named by its
    // own name, which is unique within a module (SwiftPM requires it).
    let names = (FileManager.default.enumerator(atPath: folder.path)?.allObjects as? [String] ?? [])
        .filter { $0.hasSuffix(".swift") }.sorted()
    return try names.map { (($0 as NSString).lastPathComponent, try String(contentsOf: folder.appendingPathComponent($0), encoding: .utf8)) }
}

@Suite("Layering: docs/ARCHITECTURE.md's import rules hold")
struct LayeringTests {
    let table: [String: [String: String?]]

    init() throws {
        table = allowedImports(architecture: try String(contentsOf: repositoryRoot.appendingPathComponent("docs/ARCHITECTURE.md"), encoding: .utf8))
    }

    @Test("the table names every module of the package")
    func everyModuleListed() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot.appendingPathComponent("Sources").path)
        for module in folders + ["moe-bench"] {
            #expect(table[module] != nil, "docs/ARCHITECTURE.md has no row for \(module)")
        }
    }

    @Test("each module imports only what its row allows; shims only by internal import, where allowed")
    func importsFollowTheTable() throws {
        var violations: [String] = []
        for (module, allowed) in table.sorted(by: { $0.key < $1.key }) where !shims.contains(module) {
            for (path, text) in try sourceFiles(of: module) {
                for line in imports(in: text, file: path) where !toolchainModules.contains(line.module) && line.module != module {
                    guard let onlyIn = allowed[line.module] else {
                        violations.append("\(module)/\(path) imports \(line.module), which its row does not allow")
                        continue
                    }
                    if shims.contains(line.module) {
                        if !line.isInternal { violations.append("\(module)/\(path): `import \(line.module)` must be `internal import`") }
                        if let onlyIn, onlyIn != path { violations.append("\(module)/\(path) imports \(line.module); only \(onlyIn) may") }
                    }
                }
            }
        }
        #expect(violations.isEmpty, "\(violations.joined(separator: "\n"))")
    }

    @Test("exchange algorithms move data only through ExchangeTransport (which applies link simulation)")
    func algorithmsUseTheTransport() throws {
        for (path, text) in try sourceFiles(of: "Exchange") where path != "ExchangeTransport.swift" {
            for call in ["sendNonblocking(", "receiveNonblocking(", "allToAllV(", "links?.willSend", "awaitDelivery("] where path != "LinkSimulator.swift" {
                #expect(!text.contains(call), "Exchange/\(path) calls \(call) directly; go through ExchangeTransport")
            }
        }
    }

    @Test("the checker itself catches a forbidden import, a public shim import and a shim outside its file")
    func checkerCatches() {
        let table = allowedImports(architecture: """
            | module | job | may import |
            |---|---|---|
            | `Upper` | x | `Lower`, `COpenBLAS` (internal import, `Gemm.swift` only) |
            """)
        #expect(table["Upper"]?["Lower"] == .some(nil))
        #expect(table["Upper"]?["COpenBLAS"] == .some("Gemm.swift"))
        #expect(table["Upper"]?["CMPI"] == nil, "a module the row does not list is not allowed")
        let lines = imports(in: "import Foundation\ninternal import COpenBLAS\n@testable import Lower\nlet x = 1", file: "Gemm.swift")
        #expect(lines == [ImportLine(file: "Gemm.swift", module: "Foundation", isInternal: false),
                          ImportLine(file: "Gemm.swift", module: "COpenBLAS", isInternal: true),
                          ImportLine(file: "Gemm.swift", module: "Lower", isInternal: false)])
    }
}
