import MessagePassing

/// Placeholder; replaced by the shared-memory link simulation.
@MainActor
public final class LinkSimulator {
    func willSend(from: Int, to: Int, bytes: Int) {}
    func awaitDelivery(from: Int, to: Int) {}
}
