import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Opens and closes: counted, so that an unlinked file keeps its pages
/// until its last close.
extension FileSystem {
    /// How the kernel should treat one open file: `direct` bypasses its page
    /// cache (reads and writes go to the pool in one request each, up to
    /// 1 MiB); `keepCache` says whether pages cached earlier are still good.
    public struct CachePolicy: Sendable, Equatable {
        public let direct: Bool
        public let keepCache: Bool
    }

    /// An open of a file (or directory): counted, so that an unlinked file
    /// keeps its pages until its last close. O_TRUNC arrives here.
    ///
    /// With `directIO` (the kernel keeps shared mappings coherent with
    /// direct I/O), every file is opened direct: its bytes are not held a
    /// second time in the page cache, and a copy is saved on each access.
    /// Without, a file opened only for writing, by nobody else, is written
    /// direct (the page cache would add a copy); while such a writer is
    /// open, other opens are direct too (a cached reader would miss its
    /// writes), and afterwards the cache is dropped once.
    public func open(_ number: UInt64, truncate: Bool, writeOnly: Bool) throws -> CachePolicy {
        if truncate {
            // Truncated and counted in one step: an unlink cannot come between.
            return try tree.writing {
                _ = try setAttributesLocked(number, AttributeChange(size: 0, mtime: .now()))
                return countOpen(try inode(number), writeOnly: writeOnly)
            }
        }
        return try tree.reading {
            let inode = try inode(number)
            return inode.lock.writing { countOpen(inode, writeOnly: writeOnly) }
        }
    }

    /// The inode's lock (or `tree` for writing) held.
    func countOpen(_ inode: Inode, writeOnly: Bool) -> CachePolicy {
        inode.opens += 1
        if inode.isRegular && directIO.load(ordering: .relaxed) {
            // The page cache holds only mapped pages, kept coherent by the
            // kernel: dropping them would unmap others' mappings.
            inode.directOpens += 1
            return CachePolicy(direct: true, keepCache: true)
        }
        if inode.isRegular && (inode.directOpens > 0 || (writeOnly && inode.opens == 1)) {
            inode.directOpens += 1
            inode.cacheStale = true
            return CachePolicy(direct: true, keepCache: false)
        }
        defer { inode.cacheStale = false }
        return CachePolicy(direct: false, keepCache: !inode.cacheStale)
    }

    /// The last close of a handle; an unlinked inode's last one frees it.
    public func release(_ number: UInt64, direct: Bool = false) {
        let last = tree.reading { () -> Bool in
            guard let inode = inodes[number] else { return false }
            return inode.lock.writing {
                inode.opens -= 1
                if direct { inode.directOpens -= 1 }
                // A close cannot fail: on a full pool the size stays to be
                // logged by the next fsync, change or unmount.
                if inode.dirty { try? logWritten(inode) }
                if inode.opens == 0 { giveBackAhead(inode) }
                return inode.opens == 0 && (inode.record.nlink == 0 || inode.directory?.isSparse == true)
            }
        }
        // Dropping an unlinked inode or compacting a directory's slots
        // changes the tree; most closes need neither.
        guard last || log.needsRewrite else { return }
        tree.writing {
            if let inode = inodes[number], inode.opens == 0 {
                if inode.record.nlink == 0 {
                    try? commit(.drop(inode: number))
                } else {
                    inode.directory?.compactIfSparse()
                }
            }
            compactIfLarge()
        }
    }
}
