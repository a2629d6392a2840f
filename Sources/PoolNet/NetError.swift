import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// What can go wrong between a memory node and its clients, each as one line
/// that names the node or file and the cause.
public enum NetError: Error, CustomStringConvertible, Sendable {
    /// A UCX call failed; `status` is UCX's own words for it.
    case transport(call: String, status: String)
    /// The node did not answer `what` within the deadline.
    case timedOut(node: String, what: String, seconds: Double)
    /// The node cannot be reached (refused, reset, or gone mid-call).
    case unreachable(node: String, reason: String)
    /// The other side refused the handshake (wrong or missing key, bad hello).
    case refused(node: String, reason: String)
    /// The RemotePool was closed; it makes no more calls.
    case closed(node: String)
    /// The node carried the call out and answered with an error of its pool.
    case node(String, errno: Int32, message: String)
    /// Bytes that do not follow the protocol.
    case protocolViolation(String)
    case invalidNodeAddress(String, reason: String)
    case keyFile(path: String, reason: String)
    /// An address the node does not serve, found before anything was sent.
    case invalidAddress(GlobalAddress, reason: String)
    /// A size or count no call can take, found before anything was sent.
    case invalidSize(String, reason: String)

    public var description: String {
        switch self {
        case let .transport(call, status): "UCX \(call) failed: \(status)"
        case let .timedOut(node, what, seconds):
            "memory node \(node) did not answer \(what) within \(Self.format(seconds)) s"
        case let .unreachable(node, reason): "memory node \(node) is unreachable: \(reason)"
        case let .refused(node, reason): "memory node \(node) refused the connection: \(reason)"
        case let .node(node, _, message): "memory node \(node): \(message)"
        case let .closed(node): "the connection to memory node \(node) was closed"
        case let .protocolViolation(what): "protocol violation: \(what)"
        case let .invalidNodeAddress(text, reason): "'\(text)' is not a node address: \(reason)"
        case let .keyFile(path, reason): "key file \(path): \(reason)"
        case let .invalidAddress(address, reason): "address \(address): \(reason)"
        case let .invalidSize(text, reason): "\(text): \(reason)"
        }
    }

    /// The errno a file system answers for it: EIO for a node that is away.
    public var errno: Int32 {
        switch self {
        case let .node(_, code, _): code
        case .invalidAddress, .invalidNodeAddress, .invalidSize: EINVAL
        case .refused, .keyFile: EACCES
        case .closed: EBADF
        default: EIO
        }
    }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}
