import FileFormats

/// Why a topology could not be used. Every case names its source (a file path, or MPI's
/// shared-memory split) and reads as one line.
public enum TopologyError: Error, Equatable, CustomStringConvertible {
    case unreadable(FileAccessError)
    case syntax(source: String, JSONSyntaxError)
    case invalid(source: String, field: String, problem: String)
    case rankCountMismatch(source: String, declared: Int, worldSize: Int)

    public var description: String {
        switch self {
        case let .unreadable(error): return "cannot read topology \(error)"
        case let .syntax(source, error): return "\(source): invalid JSON at \(error)"
        case let .invalid(source, field, problem): return "\(source): field '\(field)': \(problem)"
        case let .rankCountMismatch(source, declared, worldSize):
            return "\(source) declares \(declared) ranks but mpirun started \(worldSize)"
        }
    }
}
