/// A failure every rank of the job has agreed on (through `lowestFailingRank`,
/// `broadcastOutcome`, a status word in an exchange, ...): each rank throws it, exactly one rank
/// prints it, and every rank then finalises MPI and exits with `exitCode`, so nobody is left in
/// a collective. The executables' main (`JobMain`) renders every conforming error the same way;
/// nothing maps them by hand. An error whose `agreedReportingRank` is nil was not agreed on (an
/// MPI call failed on one rank mid-exchange): the job is aborted.
public protocol AgreedFailure: Error, CustomStringConvertible {
    /// The rank that prints the failure, or nil when the ranks did not agree on it.
    var agreedReportingRank: Int? { get }
    /// The exit status of every rank (1 unless the failure says otherwise; 2 for usage errors).
    var exitCode: Int32 { get }
}

extension AgreedFailure {
    public var exitCode: Int32 { 1 }
}
