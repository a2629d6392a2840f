import PoolCore

/// Files whose runs lie on remote shelves: their pages are cached here and
/// written back to the node at fsync, at the file's last close and when
/// evicted. Eviction takes the tree's lock alone, so no reply or copy
/// holds a pointer into a page that goes (UnsafeFilePages).
extension FileSystem {
    /// Sends the dirty cached pages of `[from, to)` of the file to their node.
    func writeBack(_ inode: Inode, from: UInt64, to: UInt64) throws {
        guard pool.hasRemoteShelves else { return }
        try forEachPiece(of: inode, from: from, to: to) { extent, offset, count in
            try pool.writeBack(at: extent.address.advanced(by: offset), count: count)
        }
    }

    /// Once an operation let go of its locks: the caches brought back under
    /// their budget if they grew past it.
    func evictRemotePagesIfNeeded() {
        guard pool.remoteCacheIsOverBudget else { return }
        tree.writing { pool.evictRemotePages() }
    }
}
