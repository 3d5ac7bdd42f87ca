import MessagePassing

/// A failure that every rank of the job has agreed on. Exactly one rank (`reportingRank`)
/// prints `message`; every rank then finalises MPI and exits with `exitCode`, so no rank is
/// left waiting in a collective and the output holds one clear line.
package struct JobFailure: AgreedFailure {
    package let message: String
    package let reportingRank: Int
    package var exitCode: Int32 = 1
    package var description: String { message }
    package var agreedReportingRank: Int? { reportingRank }

    package init(message: String, reportingRank: Int, exitCode: Int32 = 1) {
        self.message = message
        self.reportingRank = reportingRank
        self.exitCode = exitCode
    }
}

/// A problem with a job's inputs, as one line (wrapped by `JobContext.collectively`, which
/// adds the rank).
package struct InputError: Error, CustomStringConvertible {
    package let description: String
    package init(description: String) { self.description = description }
}
