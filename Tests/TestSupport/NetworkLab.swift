#if canImport(Glibc)
import Glibc
#endif

/// Network namespaces a test makes and removes itself: a node's namespace
/// with a bridge, and each client's namespace joined to it by a veth pair,
/// all on one subnet of their own (10.N.0.1 the node, 10.N.0.(i+2) client
/// i), as machines on one fabric. Nothing here reaches any other network.
public final class NetworkLab {
    public let node: String
    public let clients: [String]
    private let subnet: Int
    private let tag: String

    /// Whether this machine lets a test make namespaces (root, iproute2).
    public static let available: Bool = {
        removeStale()
        let name = "pfprobe\(getpid())"
        guard (try? run("ip", ["netns", "add", name]))?.status == 0 else { return false }
        _ = try? run("ip", ["netns", "del", name])
        return true
    }()

    nonisolated(unsafe) private static var made = 0

    public init(clients count: Int) throws {
        NetworkLab.made += 1
        let tag = "pf\(getpid())x\(NetworkLab.made)"
        self.tag = tag
        subnet = 100 + Int(getpid() % 50) * 2 + NetworkLab.made % 2
        node = "\(tag)n"
        clients = (0..<count).map { "\(tag)c\($0)" }
        do {
            try ip(["netns", "add", node])
            try ip(["-n", node, "link", "set", "lo", "up"])
            try ip(["-n", node, "link", "add", "\(tag)b", "type", "bridge"])
            try ip(["-n", node, "addr", "add", "10.\(subnet).0.1/24", "dev", "\(tag)b"])
            try ip(["-n", node, "link", "set", "\(tag)b", "up"])
            for (i, client) in clients.enumerated() {
                try ip(["netns", "add", client])
                try ip(["-n", client, "link", "set", "lo", "up"])
                let nodeSide = "\(tag)v\(i)", clientSide = "\(tag)w\(i)"
                try ip(["link", "add", nodeSide, "type", "veth", "peer", "name", clientSide])
                try ip(["link", "set", nodeSide, "netns", node])
                try ip(["link", "set", clientSide, "netns", client])
                try ip(["-n", node, "link", "set", nodeSide, "master", "\(tag)b"])
                try ip(["-n", client, "addr", "add", "10.\(subnet).0.\(i + 2)/24", "dev", clientSide])
                try ip(["-n", node, "link", "set", nodeSide, "up"])
                try ip(["-n", client, "link", "set", clientSide, "up"])
            }
        } catch {
            remove()
            throw error
        }
    }

    deinit { remove() }

    /// The node's address on the lab's subnet.
    public var nodeAddress: String { "10.\(subnet).0.1" }

    /// Cuts or restores client `i`'s link, on the node's side.
    public func setLink(client: Int, up: Bool) throws {
        try ip(["-n", node, "link", "set", "\(tag)v\(client)", up ? "up" : "down"])
    }

    /// Joins this machine's own namespace to the node's bridge by a veth
    /// pair (10.N.0.250 on this side), for a program that cannot run in a
    /// namespace of its own (a FUSE mount the test must see). Deleting the
    /// node's namespace deletes the pair. Returns this side's name.
    public func linkHost() throws -> String {
        let hostSide = "\(tag)h", nodeSide = "\(tag)g"
        try ip(["link", "add", hostSide, "type", "veth", "peer", "name", nodeSide])
        try ip(["link", "set", nodeSide, "netns", node])
        try ip(["-n", node, "link", "set", nodeSide, "master", "\(tag)b"])
        try ip(["-n", node, "link", "set", nodeSide, "up"])
        try ip(["addr", "add", "10.\(subnet).0.250/24", "dev", hostSide])
        try ip(["link", "set", hostSide, "up"])
        return hostSide
    }

    /// Cuts or restores the host's link, on the node's side.
    public func setHostLink(_ host: String, up: Bool) throws {
        try ip(["-n", node, "link", "set", "\(tag)g", up ? "up" : "down"])
    }

    /// `executable arguments` inside `namespace`. `ip netns exec` becomes
    /// the program (no fork), with /sys showing the namespace's devices,
    /// which UCX lists to choose its interfaces.
    public func spawn(in namespace: String, _ executable: String, _ arguments: [String],
                      environment: [String: String] = [:]) throws -> Child {
        try Child("ip", ["netns", "exec", namespace, executable] + arguments, environment: environment)
    }

    /// Namespaces a test process that crashed left behind ("pf" and its pid).
    private static func removeStale() {
        let listed = (try? run("ip", ["netns", "list"]))?.output ?? ""
        for line in listed.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix("pf"), let x = name.firstIndex(of: "x"),
                  let pid = Int32(name[name.index(name.startIndex, offsetBy: 2)..<x]),
                  pid != getpid(), kill(pid, 0) != 0 else { continue }
            _ = try? run("ip", ["netns", "del", name])
        }
    }

    private func remove() {
        // Deleting a namespace deletes the veth ends inside it.
        for name in [node] + clients { _ = try? run("ip", ["netns", "del", name]) }
    }

    private func ip(_ arguments: [String]) throws {
        let result = try run("ip", arguments)
        guard result.status == 0 else { throw LabError(command: "ip " + arguments.joined(separator: " "), output: result.output) }
    }

    struct LabError: Error, CustomStringConvertible {
        let command: String
        let output: String
        var description: String { "\(command) failed: \(output)" }
    }
}
