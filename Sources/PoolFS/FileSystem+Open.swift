import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Opens and closes: counted, so that an unlinked file keeps its pages
/// until its last close.
extension FileSystem {
    /// An open of a file: counted, so that an unlinked file keeps its
    /// pages until its last close. O_TRUNC arrives here. Returns the
    /// file's mode (how the kernel caches it is the adapter's to say).
    public func open(_ number: UInt64, truncate: Bool) throws -> UInt32 {
        if truncate {
            // Truncated and counted in one step: an unlink cannot come between.
            return try tree.writing {
                _ = try setAttributesLocked(number, AttributeChange(size: 0, mtime: .now()))
                return countOpen(try inode(number))
            }
        }
        return try tree.reading {
            let inode = try inode(number)
            return inode.lock.writing { countOpen(inode) }
        }
    }

    /// The inode's lock (or `tree` for writing) held.
    func countOpen(_ inode: Inode) -> UInt32 {
        inode.opens += 1
        return inode.record.mode
    }

    /// The last close of a handle; an unlinked inode's last one frees it.
    public func release(_ number: UInt64) {
        let last = tree.reading { () -> Bool in
            guard let inode = inodes[number] else { return false }
            return inode.lock.writing {
                inode.opens -= 1
                // A close cannot fail: on a full pool the size stays to be
                // logged by the next fsync, change or unmount.
                if inode.dirty { try? logWritten(inode) }
                if inode.opens == 0 {
                    endLease(inode)
                    giveBackAhead(inode)
                    // Kept dirty where the node does not answer: fsync says so.
                    try? writeBack(inode, from: 0, to: .max)
                }
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
