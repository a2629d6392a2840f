/// Where a remote shelf's bytes live: a region of the pool a memory node
/// serves. Kept beside the shelf's file as `shelf-N.remote`, one
/// `key=value` per line, written once when the shelf is added.
public struct RemoteShelfPlace: Sendable, Equatable {
    /// `HOST:PORT` of the node.
    public var node: String
    /// The key file that proves this pool to the node (absolute path).
    public var keyFile: String
    /// The region on the node that holds the shelf's data pages.
    public var region: String
    /// The region's first byte, in the node's pool.
    public var address: GlobalAddress
    /// The region's size: at least the shelf's data pages.
    public var bytes: UInt64

    public init(node: String, keyFile: String, region: String, address: GlobalAddress, bytes: UInt64) {
        self.node = node
        self.keyFile = keyFile
        self.region = region
        self.address = address
        self.bytes = bytes
    }

    static func fileName(_ shelf: Int) -> String { "shelf-\(shelf).remote" }

    var text: String {
        "node=\(node)\nkey-file=\(keyFile)\nregion=\(region)\naddress=\(address.rawValue)\nbytes=\(bytes)\n"
    }

    init(parsing text: String, path: String) throws {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        func field(_ name: String) throws -> String {
            guard let value = fields[name], !value.isEmpty else {
                throw PoolError.damaged(path: path, reason: "no \(name)= line")
            }
            return value
        }
        guard let raw = UInt64(try field("address")), let bytes = UInt64(try field("bytes")) else {
            throw PoolError.damaged(path: path, reason: "address= and bytes= must be numbers")
        }
        self.init(node: try field("node"), keyFile: try field("key-file"), region: try field("region"),
                  address: GlobalAddress(rawValue: raw), bytes: bytes)
    }

    /// The region name a pool's shelf takes on a node: one per pool and shelf.
    public static func regionName(poolUUID: String, shelf: Int) -> String {
        "poolfs.\(poolUUID.prefix(18)).shelf-\(shelf)"
    }
}

/// The connection through which a remote shelf's cache moves bytes, at
/// offsets from the start of the shelf's region. PoolNet provides it
/// (`RemoteShelves.install()` there); PoolCore knows no network.
public protocol RemoteShelfLink: AnyObject, Sendable {
    /// All reads in flight at once; done when it returns.
    func read(_ batch: [(offset: UInt64, into: UnsafeMutableRawBufferPointer)]) throws
    /// All writes in flight at once; in the node's pool when it returns.
    func write(_ batch: [(offset: UInt64, from: UnsafeRawBufferPointer)]) throws
    /// The UCX transport the link uses (`tcp`, `rc_verbs`…), for `.pool/shelves/N`.
    var transport: String { get }
    func close()
}

/// How a pool's remote shelves reach their nodes.
public enum RemoteShelves {
    /// Opens a link to a shelf's region within `deadlineSeconds`, with the
    /// cache's window (the memory every transfer goes into or out of:
    /// registered once), or throws saying why. Set once, before pools
    /// open, by PoolNet; unset, remote shelves answer EIO saying so.
    public nonisolated(unsafe) static var connect:
        (@Sendable (RemoteShelfPlace, Double, UnsafeMutableRawBufferPointer) throws -> RemoteShelfLink)?
}

/// Settings a pool's remote shelves share: the cache's size, the deadline.
public struct RemoteCacheSettings: Sendable, Equatable {
    /// Bytes of remote pages kept in local memory, all remote shelves together.
    public var cacheBytes: UInt64
    /// Seconds a transfer may take before it fails with EIO.
    public var timeoutSeconds: Double

    public init(cacheBytes: UInt64 = 256 << 20, timeoutSeconds: Double = 2) {
        self.cacheBytes = cacheBytes
        self.timeoutSeconds = timeoutSeconds
    }
}
