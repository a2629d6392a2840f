import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// File bytes in: writes land in pool pages in one copy, into runs taken
/// as the write needs them (FileSystem+Allocation.swift).
extension FileSystem {
    /// Writes `source` at `offset`, growing the file; all or nothing.
    public func write(_ number: UInt64, offset: UInt64, from source: UnsafeRawBufferPointer,
                      by caller: Caller? = nil) throws -> Int {
        guard let base = source.baseAddress else { return 0 }
        var done = 0
        return try write(number, offset: offset, count: source.count, by: caller) { address, segment in
            // The pool's way: a large copy into pages not yet in memory goes
            // through the shelf file (MappedFile.copy).
            try durably("writing a file's bytes") {
                try pool.copy(to: address, from: UnsafeRawBufferPointer(start: base + done, count: segment.count))
            }
            done += segment.count
        }
    }

    /// Writes `count` bytes at `offset`, growing the file: `fill` copies the
    /// bytes, in order, straight into each run of pool pages they land in.
    /// All or nothing: a full pool leaves the file as it was (ENOSPC).
    /// A write by `caller` drops the file's set-user-ID and set-group-ID
    /// bits as Linux does (SetIDBits.swift).
    public func write(_ number: UInt64, offset: UInt64, count: Int, by caller: Caller? = nil,
                      _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws -> Int {
        try write(number, offset: offset, count: count, by: caller) { try fill($1) }
    }

    /// The same, `fill` also told each run's global address.
    private func write(_ number: UInt64, offset: UInt64, count: Int, by caller: Caller?,
                       _ fill: (GlobalAddress, UnsafeMutableRawBufferPointer) throws -> Void) throws -> Int {
        try refuseIfFailed()
        if FileSystem.isFrozen(number) { throw FileSystemError.readOnly }
        defer { evictRemotePagesIfNeeded() }
        var setIDBits: UInt32 = 0
        let written = try tree.reading {
            let inode = try inode(number)
            setIDBits = SetIDBits.droppedByWrite(mode: inode.record.mode, gid: inode.record.gid, by: caller)
            guard inode.isRegular else { throw inode.isDirectory ? FileSystemError.isDirectory : FileSystemError.invalid }
            guard count > 0 else { return 0 }
            let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
            guard !overflow, end <= FileSystem.maximumFileSize else { throw FileSystemError.tooBig }
            return try inode.lock.writing { try writeLocked(inode, offset: offset, count: count, fill) }
        }
        // Rare, and a change of the namespace's kind: after the write, under the tree's lock.
        if setIDBits != 0 { try dropSetIDBits(number, setIDBits) }
        return written
    }

    /// A write with the inode's lock held for writing (and `tree` for
    /// reading): `count` bytes at `offset`, checked to fit.
    func writeLocked(_ inode: Inode, offset: UInt64, count: Int,
                     _ fill: (GlobalAddress, UnsafeMutableRawBufferPointer) throws -> Void) throws -> Int {
        let end = offset + UInt64(count)
        try makeRoom(in: inode, upTo: end)
        try unshare(inode, from: offset, to: end)
        let oldSize = inode.record.size
        let grows = end > oldSize
        // Room to log the new size (and the frees that make room again).
        if grows { try reserveLog() }
        // A write past the end shows the bytes between: zeros, not what the runs held.
        if offset > oldSize { try zeroGrowing(inode, from: oldSize, to: offset) }
        let lastPage = (end - 1) >> pageShift + 1
        let fresh = try allocate(inode, pages: (offset >> pageShift)..<lastPage, keeping: offset..<end,
                                 visibleTo: oldSize, logReserved: grows, appending: grows && offset <= oldSize)
        let now = Timestamp.now()
        do {
            // Every run's pages ready before the first byte lands: a
            // remote shelf's node that does not answer fails the
            // write before it changes anything.
            if pool.hasRemoteShelves {
                try forEachPiece(of: inode, from: offset, to: end) { extent, at, count in
                    _ = try pages.bytes(extent.address, at: at, count: count)
                }
            }
            try forEachPiece(of: inode, from: offset, to: end) { extent, at, count in
                try fill(extent.address.advanced(by: at), try pages.bytes(extent.address, at: at, count: count))
                pages.written(extent.address, at: at, count: count)
            }
            // What landed past the old end in a run the file had may
            // cover a freed file's bytes there: durable before the
            // size that shows it (a power cut on pmem).
            if grows { try durably("flushing a write") { try persist(inode, from: max(offset, oldSize), to: end, except: fresh) } }
            inode.noteUnsynced(offset..<end)
        } catch {
            takeBack(fresh, logged: 0, of: inode)
            throw FileSystemError.answering(error, otherwise: .noSpace)
        }
        try logRuns(fresh, of: inode, growingTo: grows ? end : nil, time: now, durableTo: end)
        if let last = fresh.last, last.end > lastPage, !inode.aheadOfSize { noteAhead(inode, true) }
        inode.record.mtime = now
        inode.record.ctime = now
        if grows || !fresh.isEmpty { publishWrite(inode, tookRuns: !fresh.isEmpty) }
        // Times not yet logged (a growing write logged them with its size).
        inode.dirty = !grows
        return count
    }

    /// Logs the runs `allocate` made, once their bytes are in
    /// and durable (on pmem; nothing to do on dram): a kill before leaves
    /// them unnamed (the next mount frees them), and a named run never
    /// shows some old file's bytes. Then logs the size the file grows to,
    /// if it does, with its times: a close needs no round trip. On failure
    /// the runs are taken back and the file keeps its size: ENOSPC, or EIO
    /// where the log or a flush failed for another reason (`durably`).
    func logRuns(_ fresh: [Extent], of inode: Inode, growingTo size: UInt64?, time: Timestamp,
                 durableTo: UInt64 = .max) throws {
        var logged = 0
        do {
            try durably("logging a write") {
                for extent in fresh {
                    // Pages taken ahead (past `durableTo`) show nothing until
                    // the size grows over them, which zeroes them durably.
                    let bytes = min(extent.byteEnd(pageShift), max(durableTo, extent.page << pageShift)) - extent.page << pageShift
                    try pool.persist(at: extent.address, count: Int(bytes))
                    try log.append(.extent(inode: inode.number, extent))
                    logged += 1
                }
                if let size {
                    try log.append(.written(inode: inode.number, size: size, time: time))
                }
            }
            if let size {
                inode.record.size = size
                inode.record.mtime = time
                inode.record.ctime = time
            }
        } catch {
            takeBack(fresh, logged: logged, of: inode)
            throw error
        }
    }

    func reserveLog() throws {
        do { try log.reserveSpares() } catch { throw FileSystemError.noSpace }
    }
}
