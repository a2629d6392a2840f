import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// fallocate(2): allocating, keeping the size, and punching holes.
extension FileSystem {
    /// fallocate(2): mode 0 and KEEP_SIZE allocate; PUNCH_HOLE frees.
    public func allocateSpace(_ number: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard length > 0, !overflow else { throw FileSystemError.invalid }
        if FileSystem.isFrozen(number) { throw FileSystemError.readOnly }
        guard end <= FileSystem.maximumFileSize else { throw FileSystemError.tooBig }
        // Like a write, under the file's lock: no other file waits. Space
        // is allocated `stepBytes` at a time.
        let allocating = mode == 0 || mode == FileSystem.keepSize
        try stepping(number, from: offset, to: end) { inode, at in
            guard inode.isRegular else { throw inode.isDirectory ? FileSystemError.isDirectory : FileSystemError.notSupported }
            if allocating, at == offset { try checkRoom(inode, offset: offset, end: end) }
            let stop = allocating ? min(end, (at / FileSystem.stepBytes + 1) * FileSystem.stepBytes) : end
            try allocateSpaceLocked(inode, mode: mode, offset: at, end: stop)
            return stop
        }
    }

    /// linux/falloc.h
    static let keepSize: Int32 = 0x01, punchHole: Int32 = 0x02
    /// What a fallocate allocates, or an fsync flushes, in one step
    /// (`stepping`).
    static let stepBytes: UInt64 = 64 << 20

    /// Before the first chunk: ENOSPC with nothing allocated when the pool
    /// has fewer free pages than the range has unallocated. (One that runs
    /// out later, racing other writers, keeps the chunks it allocated, as
    /// ext4's does.)
    private func checkRoom(_ inode: Inode, offset: UInt64, end: UInt64) throws {
        let missing = inode.extents.holes(in: (offset >> pageShift)..<((end - 1) >> pageShift + 1)).reduce(0) { $0 + $1.count }
        guard UInt64(missing) <= pool.usage().freeBytes >> pageShift else { throw FileSystemError.noSpace }
    }

    /// The inode's lock held.
    private func allocateSpaceLocked(_ inode: Inode, mode: Int32, offset: UInt64, end: UInt64) throws {
        let keepSize = FileSystem.keepSize, punchHole = FileSystem.punchHole
        switch mode {
        case 0, keepSize:
            // Pages asked for past the size stay, and so do those taken ahead.
            if mode == keepSize, end > inode.record.size, inode.aheadOfSize { noteAhead(inode, false) }
            try makeRoom(in: inode, upTo: end)
            if mode == 0, end > inode.record.size { try zeroGrowing(inode, from: inode.record.size, to: end) }
            let fresh = try allocate(inode, pages: (offset >> pageShift)..<((end - 1) >> pageShift + 1), keeping: 0..<0)
            try logRuns(fresh, of: inode, growingTo: mode == 0 && end > inode.record.size ? end : nil, time: .now())
            publishWrite(inode, tookRuns: true)
        case punchHole | keepSize:
            let first = (offset + pageSize - 1) >> pageShift, last = end >> pageShift
            // The partial pages at the ends are zeroed in place: copied
            // first if shared, before anything changes.
            try unshare(inode, from: offset, to: min(first << pageShift, end))
            try unshare(inode, from: max(offset, last << pageShift), to: end)
            try commit(.punch(inode: inode.number, from: min(first, last), to: last, time: .now()))
            zero(inode, from: offset, to: min(end, inode.record.size))
            inode.noteUnsynced(offset..<max(offset, min(end, inode.record.size)))
        default:
            throw FileSystemError.notSupported
        }
    }
}
