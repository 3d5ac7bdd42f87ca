import Foundation
import Synchronization

/// Where this rank is in a step — step, layer, phase — and when it got there, for the watchdog.
/// Written by the main thread at every phase boundary, read by the watchdog thread.
package final class ProgressBeacon: Sendable {
    package struct State: Equatable, Sendable {
        package var step: Int
        package var layer: Int
        package var phase: String
        /// Seconds (monotonic) when this state began.
        package var since: Double
    }

    private let state = Mutex(State(step: 0, layer: 0, phase: "start", since: ProgressBeacon.now()))

    package init() {}

    package static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    package func enter(step: Int? = nil, layer: Int? = nil, phase: String) {
        state.withLock { current in
            if let step { current.step = step }
            if let layer { current.layer = layer }
            current.phase = phase
            current.since = Self.now()
        }
    }

    package var current: State { state.withLock { $0 } }
}
