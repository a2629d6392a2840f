#if canImport(Glibc)
import Glibc
#endif

/// A pool in a scratch directory with a key, served by a `poolfs serve -f`
/// child (in a namespace of a NetworkLab, or on loopback), over TCP. The
/// node is killed when this is dropped.
public final class ServedPool {
    public let scratch: Scratch
    public let name: String
    /// The directory that holds the pool (`--path`).
    public let home: String
    public let keyFile: String
    /// UCX over TCP, as on a network without RDMA.
    public static let environment = ["UCX_TLS": "tcp"]
    public private(set) var node: Child?
    /// HOST:PORT where the node listens.
    public private(set) var address = ""
    private let namespace: (lab: NetworkLab, name: String)?

    /// A new pool of its own, served.
    public convenience init(size: String = "64M", pageSize: String = "4K", medium: String = "dram",
                            lab: NetworkLab? = nil) throws {
        try self.init(pool: "served", at: nil, lab: lab) { home in
            ["create", "served", "--size", size, "--page-size", pageSize, "--medium", medium, "--path", home]
        }
    }

    /// Serves pool `name` at `home` (one that a mount uses, say).
    public convenience init(existing name: String, at home: String) throws {
        try self.init(pool: name, at: home, lab: nil) { _ in nil }
    }

    private init(pool name: String, at home: String?, lab: NetworkLab?, create: (String) -> [String]?) throws {
        let scratch = Scratch()
        self.scratch = scratch
        self.name = name
        self.home = home ?? scratch.path
        keyFile = scratch.path + "/key"
        namespace = lab.map { ($0, $0.node) }
        let poolfs = builtExecutable("poolfs")
        for arguments in [create(self.home), ["key", "create", keyFile]].compactMap({ $0 }) {
            let result = try run(poolfs, arguments)
            guard result.status == 0 else { throw NodeError(output: result.output) }
        }
        try start(listen: lab == nil ? "127.0.0.1:0" : "0.0.0.0:0")
    }

    /// Starts the node; `listen` as for `poolfs serve --listen`. Returns once
    /// it listens.
    public func start(listen: String) throws {
        let arguments = ["serve", name, "--path", home, "--listen", listen, "--key-file", keyFile, "-f"]
        let child = try namespace.map { try $0.lab.spawn(in: $0.name, builtExecutable("poolfs"), arguments,
                                                         environment: Self.environment) }
            ?? Child(builtExecutable("poolfs"), arguments, environment: Self.environment)
        let first = child.readLine() ?? ""
        guard first.hasPrefix("serving pool"), let at = first.split(separator: " ").last else {
            throw NodeError(output: first)
        }
        child.waitFor("pid:")
        address = String(at)
        node = child
    }

    // The node goes before the scratch directory that holds its pool.
    deinit { node = nil }

    /// The port the node listens on.
    public var port: String { String(address.split(separator: ":").last ?? "") }

    /// Kills the node (its pool stays).
    public func stop() { node = nil }

    /// Starts it again on the same port after it was killed.
    public func restart() throws {
        stop()
        try start(listen: (namespace == nil ? "127.0.0.1:" : "0.0.0.0:") + port)
    }

    public struct NodeError: Error, CustomStringConvertible {
        public let output: String
        public var description: String { "the memory node did not start: \(output)" }
    }
}
