/// Growing a pool while it is in use, NVMM's way: the new shelf is formatted
/// under a temporary name, renamed into place, then published in the shelf
/// table by one atomic store. A crash before the store leaves a file that
/// nothing refers to (removed by the next grow); after it, a whole shelf.
extension OpenPool {
    /// `remote`, for a remote shelf: reserves the shelf's data bytes on a
    /// node, told the new shelf's index and that size (under the global
    /// lock, so that the index is the one the shelf gets).
    func grow(by size: UInt64, medium: Medium? = nil,
              remote: ((Int, UInt64) throws -> RemoteShelfPlace)? = nil) throws -> Int {
        try withGlobalLock {
            let index = shelves.count
            guard index < Layout.ShelfTable.capacity else {
                throw PoolError.tooManyShelves(name: name, limit: Layout.ShelfTable.capacity)
            }
            guard size / pageSize < ShelfGeometry.maximumPages else {
                throw PoolError.invalidSize(ByteSize.format(size), reason: "a shelf holds at most 2^32 pages")
            }
            guard let geometry = ShelfGeometry(index: index, size: size, pageSize: pageSize) else {
                throw PoolError.invalidSize(ByteSize.format(size),
                                            reason: "a shelf needs more than \(ByteSize.format(UInt64(Layout.shelfMetadata) + pageSize))")
            }
            let medium = remote == nil ? medium ?? shelves[0]!.file.medium : .remote
            guard medium != .remote || remote != nil else { throw PoolError.invalidMedium(medium.rawValue) }
            let file = OpenPool.shelfName(index)
            // A remote shelf's file holds its page table, and pages cached.
            let reserve = medium == .pmem ? size : geometry.dataOffset
            try Space.check(home, needs: reserve)
            home.remove(file + ".tmp")
            for stale in [RemoteShelfPlace.fileName(index), RemoteShelfCache.stateFileName(index)] { home.remove(stale) }
            if let remote {
                let place = try remote(index, geometry.dataBytes)
                try home.writeText(place.text, to: RemoteShelfPlace.fileName(index))
            }
            let staging = try MappedFile.create(in: home, name: file + ".tmp", size: size, reserve: reserve, medium: medium)
            ShelfHeader.format(staging, index: index, uuid: superblock.uuid, size: size, pageSize: pageSize,
                               medium: medium, reserved: reserve)
            staging.persistAll()
            home.remove(file)
            try home.rename(file + ".tmp", to: file)
            ShelfTable.publish(metadata, index: index, record: ShelfRecord(size: size, medium: medium),
                               uuid: superblock.uuid)
            try refreshShelvesLocked()
            return index
        }
    }
}

enum Space {
    /// Refuses to make a file the file system cannot hold.
    static func check(_ directory: PoolDirectory, needs bytes: UInt64) throws {
        if let available = directory.availableBytes, available < bytes {
            throw PoolError.notEnoughSpace(path: directory.path, needed: bytes, available: available)
        }
    }
}
