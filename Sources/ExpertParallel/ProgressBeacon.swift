import Foundation
import Synchronization

/// Where this rank is in a step — step, layer, phase — and when it got there, for the watchdog.
/// Written by the main thread at every phase boundary, read by the watchdog thread.
public final class ProgressBeacon: Sendable {
    public struct State: Equatable, Sendable {
        public var step: Int
        public var layer: Int
        public var phase: String
        /// Seconds (monotonic) when this state began.
        public var since: Double
    }

    private let state = Mutex(State(step: 0, layer: 0, phase: "start", since: ProgressBeacon.now()))

    public init() {}

    public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    public func enter(step: Int? = nil, layer: Int? = nil, phase: String) {
        state.withLock { current in
            if let step { current.step = step }
            if let layer { current.layer = layer }
            current.phase = phase
            current.since = Self.now()
        }
    }

    public var current: State { state.withLock { $0 } }
}
