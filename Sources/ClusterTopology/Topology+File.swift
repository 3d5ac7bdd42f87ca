import FileFormats

/// The topology file format (documented in `Topologies/README.md`):
///
/// ```json
/// { "name": "2x2", "description": "...",
///   "nodes": [ { "name": "node0", "ranks": [0, 1] }, { "name": "node1", "ranks": [2, 3] } ],
///   "links": { "intra_node": { "latency_us": 0.3, "bandwidth_gb_per_s": 10 },
///              "inter_node": { "latency_us": 7, "bandwidth_gb_per_s": 2.2 },
///              "simulate": false } }
/// ```
/// `name`, `description` and `links` (and each link class in it) are optional; unknown fields
/// are errors, so a misspelt setting is never silently ignored.
extension Topology {
    /// Largest topology file accepted: 1 MiB is thousands of nodes.
    public static let fileSizeLimit = 1 << 20

    /// Reads and validates a topology file.
    public static func load(path: String) throws(TopologyError) -> Topology {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: fileSizeLimit) } catch { throw .unreadable(error) }
        return try parse(bytes, path: path)
    }

    /// Parses and validates topology JSON; `path` names the source in errors.
    public static func parse(_ bytes: [UInt8], path: String) throws(TopologyError) -> Topology {
        let document: JSONValue
        do { document = try JSONParser.parse(bytes) } catch { throw .syntax(source: path, error) }
        do {
            let root = try JSONObjectReader(document)
            try root.rejectUnknownKeys(allowed: ["name", "description", "nodes", "links"])
            var nodes: [Node] = []
            for (nodePath, nodeValue) in try root.array("nodes") {
                let node = try JSONObjectReader(nodeValue, path: nodePath)
                try node.rejectUnknownKeys(allowed: ["name", "ranks"])
                let ranks = try node.array("ranks").map { (path: String, value: JSONValue) throws(JSONFieldError) in
                    try JSONObjectReader.integer(value, path: path)
                }
                nodes.append(Node(name: try node.string("name"), ranks: ranks))
            }
            var intraNode = LinkCost.sharedMemoryDefault
            var interNode = LinkCost.networkDefault
            var simulate = false
            if let links = try root.optionalObject("links") {
                try links.rejectUnknownKeys(allowed: ["intra_node", "inter_node", "simulate"])
                if let link = try links.optionalObject("intra_node") { intraNode = try linkCost(link) }
                if let link = try links.optionalObject("inter_node") { interNode = try linkCost(link) }
                simulate = try links.optionalBool("simulate") ?? false
            }
            let fileName = path.split(separator: "/").last.map { String($0.split(separator: ".").first ?? $0) } ?? path
            return try Topology(
                name: try root.optionalString("name") ?? fileName,
                description: try root.optionalString("description") ?? "",
                nodes: nodes, intraNode: intraNode, interNode: interNode, simulateLinks: simulate, origin: .file(path: path))
        } catch let error as JSONFieldError {
            throw .invalid(source: path, field: error.path, problem: error.problem)
        } catch let error as TopologyError {
            throw error
        } catch {
            throw .invalid(source: path, field: "", problem: "\(error)")
        }
    }

    private static func linkCost(_ link: JSONObjectReader) throws(JSONFieldError) -> LinkCost {
        try link.rejectUnknownKeys(allowed: ["latency_us", "bandwidth_gb_per_s"])
        return LinkCost(latencyMicroseconds: try link.number("latency_us"),
                        bandwidthGigabytesPerSecond: try link.number("bandwidth_gb_per_s"))
    }
}
