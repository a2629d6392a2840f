import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// copy_file_range(2) inside the mount: the whole pages of the range are
/// shared with the copy (one more owner each, no byte moved), and only an
/// unaligned head and tail are copied. Either file's next write to a
/// shared page copies that page first (FileSystem+CopyOnWrite.swift).
extension FileSystem {
    /// Copies `count` bytes at `sourceOffset` of `source` to `targetOffset`
    /// of `target`, as far as the source's end; returns the bytes copied.
    /// Ranges of one file must not overlap (EINVAL), as the kernel says.
    public func copyRange(from source: UInt64, at sourceOffset: UInt64, to target: UInt64, at targetOffset: UInt64,
                          count: UInt64, by caller: Caller? = nil) throws -> Int {
        try refuseIfFailed()
        if FileSystem.isFrozen(target) { throw FileSystemError.readOnly }
        defer { evictRemotePagesIfNeeded() }
        var setIDBits: UInt32 = 0
        let copied = try tree.reading {
            let from = try inode(source), to = try inode(target)
            for inode in [from, to] where !inode.isRegular {
                throw inode.isDirectory ? FileSystemError.isDirectory : FileSystemError.invalid
            }
            let (end, overflow) = targetOffset.addingReportingOverflow(count)
            guard !overflow, !sourceOffset.addingReportingOverflow(count).overflow else { throw FileSystemError.invalid }
            guard end <= FileSystem.maximumFileSize else { throw FileSystemError.tooBig }
            setIDBits = SetIDBits.droppedByWrite(mode: to.record.mode, gid: to.record.gid, by: caller)
            if from === to {
                guard sourceOffset + count <= targetOffset || end <= sourceOffset else { throw FileSystemError.invalid }
                return try to.lock.writing { try copyLocked(from, sourceOffset, to, targetOffset, count) }
            }
            // Two files' locks, in inode order: two copies the other way round wait, never deadlock.
            if source < target {
                return try from.lock.reading { try to.lock.writing { try copyLocked(from, sourceOffset, to, targetOffset, count) } }
            }
            return try to.lock.writing { try from.lock.reading { try copyLocked(from, sourceOffset, to, targetOffset, count) } }
        }
        if setIDBits != 0 { try dropSetIDBits(target, setIDBits) }
        return copied
    }

    /// Both inodes' locks held (the target's for writing).
    private func copyLocked(_ source: Inode, _ sourceOffset: UInt64, _ target: Inode, _ targetOffset: UInt64,
                            _ count: UInt64) throws -> Int {
        let size = source.record.size
        guard sourceOffset < size, count > 0 else { return 0 }
        let length = min(count, size - sourceOffset), sourceEnd = sourceOffset + length
        let targetEnd = targetOffset + length, oldSize = target.record.size
        // The pages that can be shared: whole ones at the same place in a
        // page on both sides, and the source's last partial page where the
        // copy ends both files there.
        let shift = targetOffset &- sourceOffset
        var first = (sourceOffset + pageSize - 1) & ~(pageSize - 1)
        var last = sourceEnd & ~(pageSize - 1)
        if sourceEnd == size, oldSize <= targetEnd { last = (sourceEnd + pageSize - 1) & ~(pageSize - 1) }
        // Pages a program maps writable (direct access) change under any
        // sharer: they are copied.
        if (sourceOffset ^ targetOffset) & (pageSize - 1) != 0 || source.extents.fragment != nil || first >= last
            || isMappedWritable(source) {
            first = sourceEnd
            last = sourceEnd
        }
        try makeRoom(in: target, upTo: targetEnd)
        if first < last {
            if targetOffset > oldSize { try zeroGrowing(target, from: oldSize, to: targetOffset) }
            try share(source, pages: first..<last, to: target, shift: shift)
            publishShared(source)
            let sharedEnd = min(last, sourceEnd) &+ shift
            if sharedEnd > target.record.size {
                let now = Timestamp.now()
                try commit(.written(inode: target.number, size: sharedEnd, time: now))
            }
        }
        // Head, then tail: the tail starts where the shared pages end, so
        // growing over it zeroes nothing they hold.
        try copyBytes(source, sourceOffset..<min(first, sourceEnd), to: target, shift: shift)
        try copyBytes(source, min(max(last, first), sourceEnd)..<sourceEnd, to: target, shift: shift)
        return Int(length)
    }

    /// Shares the source's pages `bytes` (whole pages) with the target at
    /// `bytes + shift`: what the target had there goes, the source's holes
    /// stay holes. Each count goes up before the record that names it.
    private func share(_ source: Inode, pages bytes: Range<UInt64>, to target: Inode, shift: UInt64) throws {
        try reserveLog()
        let low = (bytes.lowerBound &+ shift) >> pageShift, high = (bytes.upperBound &+ shift) >> pageShift
        try commit(.punch(inode: target.number, from: low, to: high, time: .now()))
        var pieces: [Extent] = []
        try forEachPiece(of: source, from: bytes.lowerBound, to: bytes.upperBound) { extent, at, count in
            let pages = Int((UInt64(count) + pageSize - 1) >> pageShift)
            pieces.append(Extent(page: ((extent.page << pageShift + at) &+ shift) >> pageShift,
                                 address: extent.address.advanced(by: at), pages: pages))
        }
        for piece in pieces {
            do {
                try pool.shareTrackedPages(at: piece.address, count: piece.pages)
            } catch PoolError.tooManyShares {
                // Pages at the most owners they can have: copied instead.
                let start = piece.page << pageShift &- shift
                try copyBytes(source, start..<min(start + piece.byteCount(pageShift), source.record.size), to: target, shift: shift)
                continue
            }
            do {
                try commit(.extent(inode: target.number, piece))
            } catch {
                try? pool.releaseTrackedPages(at: piece.address, count: piece.pages)
                throw error
            }
        }
    }

    /// Copies the source's `bytes` to `bytes + shift` of the target, as a
    /// write would, in steps of `stepBytes`.
    private func copyBytes(_ source: Inode, _ bytes: Range<UInt64>, to target: Inode, shift: UInt64) throws {
        var position = bytes.lowerBound
        while position < bytes.upperBound {
            let count = Int(min(bytes.upperBound - position, FileSystem.stepBytes))
            var done = 0
            _ = try writeLocked(target, offset: position &+ shift, count: count) { _, buffer in
                try read(source, at: position + UInt64(done), into: buffer)
                done += buffer.count
            }
            position += UInt64(count)
        }
    }

    /// The file's bytes at `offset` into `buffer`, holes as zeros; the
    /// inode's lock held.
    private func read(_ inode: Inode, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard let base = buffer.baseAddress else { return }
        var position = offset
        let end = offset + UInt64(buffer.count)
        try forEachPiece(of: inode, from: offset, to: end) { extent, at, count in
            let start = extent.page << pageShift + at
            if start > position { memset(base + Int(position - offset), 0, Int(start - position)) }
            memcpy(base + Int(start - offset), try pages.segment(extent.address, at: at, count: count).iov_base, count)
            position = start + UInt64(count)
        }
        if end > position { memset(base + Int(position - offset), 0, Int(end - position)) }
    }
}
