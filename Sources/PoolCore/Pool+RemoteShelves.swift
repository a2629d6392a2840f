/// Remote shelves as the file system uses them: bytes reached through the
/// cache, written back and evicted when it says. A library caller needs
/// none of this: `read`, `write`, `copy` and `withUnsafeMutableBytes` go
/// through the cache by themselves.
extension Pool {
    /// The cache's size and the transfers' deadline (the mount's
    /// `remote_cache` and `remote_timeout`).
    public var remoteCacheSettings: RemoteCacheSettings {
        get { core.remoteBudget.settings }
        set { core.remoteBudget.settings = newValue }
    }

    public var hasRemoteShelves: Bool { core.hasRemoteShelves }

    /// Where `[address, address+count)` is mapped in this process, fetched
    /// into the cache first if it lies on a remote shelf (`writing`: pages
    /// the range covers whole are not fetched; call `noteWritten` once the
    /// bytes are in, which makes them dirty). Valid
    /// until `evictRemotePages()`: the caller keeps that from running.
    /// A node that does not answer throws `PoolError.remoteShelf` (EIO).
    @inline(__always)
    public func unsafeResidentPointer(to address: GlobalAddress, count: Int, writing: Bool) throws -> UnsafeMutableRawPointer {
        try core.residentPointer(to: address, count: count, writing: writing)
    }

    /// After bytes were stored through `unsafeResidentPointer`: their pages
    /// are dirty, to be written back.
    public func noteWritten(at address: GlobalAddress, count: Int) {
        core.noteWritten(at: address, count: count)
    }

    /// Sends the range's dirty cached pages to their node (fsync, a last
    /// close); a no-op on local shelves.
    public func writeBack(at address: GlobalAddress, count: Int) throws {
        try core.writeBack(at: address, count: count)
    }

    /// Every remote shelf's dirty pages to its node (unmount).
    public func writeBackAll() throws { try core.writeBackAll() }

    /// Whether the caches hold more than `remoteCacheSettings` allows.
    public var remoteCacheIsOverBudget: Bool { core.remoteCacheIsOverBudget }

    /// Evicts the least lately used pages down to three quarters of the
    /// budget. No pointer `unsafeResidentPointer` gave may be in use.
    public func evictRemotePages() { core.evictRemotePages() }

    /// Each remote shelf's index, where its bytes live, and the address of
    /// its first data page (the region's first byte on the node).
    public func remoteShelves() -> [(shelf: Int, place: RemoteShelfPlace, dataStart: GlobalAddress)] { core.remotePlaces() }
}

extension Pool {
    /// The remote shelves of a pool, read from its directory without
    /// opening it (`poolfs check` asks their nodes).
    public static func remoteShelfPlaces(name: String, at home: String? = nil) throws -> [(shelf: Int, place: RemoteShelfPlace)] {
        guard let directory = try PoolHome.poolDirectory(name, home) else {
            throw PoolError.poolNotFound(name: name, path: Pool.directory(name, home))
        }
        return try directory.list().compactMap { file -> (Int, RemoteShelfPlace)? in
            guard file.hasPrefix("shelf-"), file.hasSuffix(".remote"),
                  let index = Int(file.dropFirst("shelf-".count).dropLast(".remote".count)) else { return nil }
            let path = directory.path(of: file)
            return (index, try RemoteShelfPlace(parsing: try SystemCall.readText(path), path: path))
        }.sorted { $0.0 < $1.0 }
    }
}
