import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// A remote shelf's link to its node: a `RemotePool` of its own, the
/// shelf's offsets turned into addresses in the node's region.
final class RemoteShelfConnection: RemoteShelfLink, @unchecked Sendable {
    private let pool: RemotePool
    private let region: GlobalAddress
    let transport: String

    init(_ place: RemoteShelfPlace, deadlineSeconds: Double, window: UnsafeMutableRawBufferPointer) throws {
        let key = try NodeKey.load(from: place.keyFile)
        pool = try RemotePool(connectingTo: try NodeAddress(place.node), key: key, deadlineSeconds: deadlineSeconds)
        region = place.address
        transport = pool.transport
        // Lunasa's eager memory: the cache's window, registered once.
        try pool.register(UnsafeRawBufferPointer(window))
    }

    func read(_ batch: [(offset: UInt64, into: UnsafeMutableRawBufferPointer)]) throws {
        try pool.read(batch.map { (region.advanced(by: $0.offset), $0.into) })
    }

    func write(_ batch: [(offset: UInt64, from: UnsafeRawBufferPointer)]) throws {
        try pool.write(batch.map { (region.advanced(by: $0.offset), $0.from) })
    }

    func close() { pool.close() }
}

extension RemoteShelves {
    /// Lets pools opened from now on reach their remote shelves' nodes.
    public static func install() {
        connect = { place, deadline, window in try RemoteShelfConnection(place, deadlineSeconds: deadline, window: window) }
    }

    /// Reserves `bytes` for shelf `shelf` of the pool `poolUUID` on a node:
    /// a region named for them (opened again where an earlier attempt made
    /// it), for `Pool.grow(by:remote:)`.
    public static func reserve(on node: String, keyFile: String, poolUUID: String, shelf: Int, bytes: UInt64,
                               deadlineSeconds: Double = 60) throws -> RemoteShelfPlace {
        let key = try NodeKey.load(from: keyFile)
        let remote = try RemotePool(connectingTo: try NodeAddress(node), key: key, deadlineSeconds: deadlineSeconds)
        defer { remote.close() }
        let name = RemoteShelfPlace.regionName(poolUUID: poolUUID, shelf: shelf)
        let region: RemoteRegion
        do {
            region = try remote.createRegion(name: name, size: bytes)
        } catch NetError.node(_, EEXIST, _) {
            // An earlier grow that stopped after reserving it.
            region = try remote.openRegion(name: name)
        }
        guard region.size >= bytes else {
            throw NetError.invalidSize(ByteSize.format(bytes), reason: "region '\(name)' on \(node) holds only \(ByteSize.format(region.size))")
        }
        return RemoteShelfPlace(node: node, keyFile: absolute(keyFile), region: name, address: region.address, bytes: region.size)
    }

    private static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + path
    }
}
