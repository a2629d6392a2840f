/// Access times as Linux's relatime keeps them, tmpfs's default: reading a
/// file's bytes or a directory's entries sets its atime when the atime is
/// not later than its mtime or ctime, or is a day old. A file read many
/// times costs one logged change per change of the file (or per day), not
/// one per read. A mount with `noatime` turns it off (`accessTimes`).
extension FileSystem {
    static let relatimeSeconds: Int64 = 24 * 3600

    /// The clock is read only when the times alone do not decide.
    static func accessDue(_ record: InodeRecord, now: @autoclosure () -> Timestamp) -> Bool {
        !isFrozen(record.number) && record.atime <= record.mtime || record.atime <= record.ctime
            || now().seconds - record.atime.seconds >= relatimeSeconds
    }

    /// Notes a read of the inode's bytes or entries; true when its atime
    /// moved (the kernel's cached attributes are then stale). File reads
    /// call it only when a read found it due (`read`).
    public func accessed(_ number: UInt64) -> Bool {
        guard accessTimes.load(ordering: .relaxed) else { return false }
        let now = Timestamp.now()
        // Shared locks first: a directory listed again needs no more.
        let due = (try? tree.reading {
            let inode = try inode(number)
            return inode.lock.reading { FileSystem.accessDue(inode.record, now: now) }
        }) ?? false
        guard due else { return false }
        // The file's lock, as a write's: a read that moves the atime waits
        // for no other file (a fallocate of gigabytes holds the tree shared
        // for seconds).
        return (try? tree.reading {
            let inode = try inode(number)
            return try inode.lock.writing {
                guard FileSystem.accessDue(inode.record, now: now) else { return false }
                if inode.dirty { try logWritten(inode) }
                // A read changes no ctime.
                try commit(.setAttributes(inode: number, AttributeChange(atime: now, ctime: inode.record.ctime)))
                return true
            }
        }) ?? false
    }
}
