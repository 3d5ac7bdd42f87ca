/// A failure that every rank of the job has agreed on. Exactly one rank (`reportingRank`)
/// prints `message`; every rank then finalises MPI and exits with `exitCode`, so no rank is
/// left waiting in a collective and the output holds one clear line.
public struct JobFailure: Error, CustomStringConvertible {
    public let message: String
    public let reportingRank: Int
    public var exitCode: Int32 = 1
    public var description: String { message }

    public init(message: String, reportingRank: Int, exitCode: Int32 = 1) {
        self.message = message
        self.reportingRank = reportingRank
        self.exitCode = exitCode
    }
}

/// A problem with a job's inputs, as one line (wrapped by `JobContext.collectively`, which
/// adds the rank).
public struct InputError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}
