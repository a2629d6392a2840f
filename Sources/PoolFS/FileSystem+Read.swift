import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// File bytes out: reads lend the pool's pages to the caller (no copy).
extension FileSystem {
    var pages: UnsafeFilePages { UnsafeFilePages(pool: pool) }

    /// Runs `body` with segments covering `[offset, offset+size)` clipped at
    /// the end of the file: pointers into the file's pages, and into zeros
    /// for holes. The pages cannot be freed until `body` returns.
    public func withReadSegments<R>(_ number: UInt64, offset: UInt64, size: Int,
                                    _ body: (UnsafeBufferPointer<iovec>) -> R) throws -> R {
        defer { evictRemotePagesIfNeeded() }
        return try withReadSegments(number, offset: offset, size: size, unlessAccessDue: false, body)!
    }

    /// A read of the file's bytes: `body` gets the segments, as above, and
    /// the file's atime moves where relatime says this read must move it
    /// (FileSystem+Access.swift). Then `attributesStale` is called first,
    /// before `body` replies: whoever caches the file's attributes (the
    /// kernel) drops them, and a stat after the read sees the new atime.
    /// A usual read finds and locks the inode once. Not generic: called
    /// from another module on every read, a generic would look up its type
    /// metadata (under a lock) each time.
    public func read(_ number: UInt64, offset: UInt64, size: Int, attributesStale: () -> Void,
                     _ body: (UnsafeBufferPointer<iovec>) -> Void) throws {
        defer { evictRemotePagesIfNeeded() }
        if try withReadSegments(number, offset: offset, size: size,
                                unlessAccessDue: accessTimes.load(ordering: .relaxed), body) != nil { return }
        if accessed(number) { attributesStale() }
        try withReadSegments(number, offset: offset, size: size, unlessAccessDue: false, body)
    }

    private func withReadSegments<R>(_ number: UInt64, offset: UInt64, size: Int, unlessAccessDue: Bool,
                                     _ body: (UnsafeBufferPointer<iovec>) -> R) throws -> R? {
        try tree.reading {
            let inode = try inode(number)
            return try inode.lock.reading {
                guard !inode.isDirectory else { throw FileSystemError.isDirectory }
                if unlessAccessDue && FileSystem.accessDue(inode.record, now: .now()) { return nil }
                let fileSize = inode.record.size
                guard offset < fileSize, size > 0 else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
                let end = min(fileSize, offset + UInt64(size))
                let capacity = Int((end - offset) >> pageShift) + 3 + size / UnsafeFilePages.zeroBytes
                return try withUnsafeTemporaryAllocation(of: iovec.self, capacity: capacity) { segments in
                    let extents = inode.extents.extents
                    var count = 0
                    var position = offset
                    var index = inode.extents.firstEnding(after: offset >> pageShift)
                    while position < end, count < capacity {
                        if index < extents.count, extents[index].page << pageShift <= position {
                            let extent = extents[index]
                            let runEnd = min(end, extent.byteEnd(pageShift))
                            segments[count] = try pages.segment(extent.address, at: position - extent.page << pageShift,
                                                            count: Int(runEnd - position))
                            count += 1
                            position = runEnd
                            index += 1
                        } else {
                            let holeEnd = index < extents.count ? min(end, extents[index].page << pageShift) : end
                            let chunk = min(Int(holeEnd - position), UnsafeFilePages.zeroBytes)
                            segments[count] = UnsafeFilePages.zeroSegment(count: chunk)
                            count += 1
                            position += UInt64(chunk)
                        }
                    }
                    return body(UnsafeBufferPointer(rebasing: segments[0..<count]))
                }
            }
        }
    }
}
