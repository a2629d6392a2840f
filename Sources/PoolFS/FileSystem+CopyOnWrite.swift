import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Copy on write: before a file's bytes change, the pages under them that
/// other owners share (a clone, a snapshot) are copied, page by page, and
/// the file names its copies instead. Other owners never see the write.
extension FileSystem {
    /// Gives `inode` its own copy of each shared page under `[from, to)`.
    /// A copy is durable before the record that names it, which drops the
    /// shared page's count after it (SharedPages.swift): a kill at any
    /// point leaves the file with the old page or its copy, each whole.
    /// ENOSPC leaves the file as it was. The inode's lock held for writing.
    func unshare(_ inode: Inode, from: UInt64, to: UInt64) throws {
        let shared = sharedPieces(of: inode, from: from, to: to)
        guard !shared.isEmpty else { return }
        let heap = self.heap(inode.record.heap)
        for piece in shared {
            if piece.isFragment {
                try moveFragment(of: inode, to: piece.fragmentBytes)
                continue
            }
            var copies: [Extent] = []
            do {
                try reserveLog()
                try allocateRuns(piece.page..<piece.end, from: heap, into: &copies)
            } catch {
                free(copies.map { Release(extent: $0) })
                throw FileSystemError.noSpace
            }
            var logged = 0
            do {
                for copy in copies {
                    let source = piece.address.advanced(by: (copy.page - piece.page) << pageShift)
                    let bytes = Int(copy.byteCount(pageShift))
                    try pages.copy(bytes, from: source, to: copy.address)
                    try durably("copying shared pages") { try pool.persist(at: copy.address, count: bytes) }
                    try commit(.extent(inode: inode.number, copy))
                    logged += 1
                }
            } catch {
                free(copies.dropFirst(logged).map { Release(extent: $0) })
                throw FileSystemError.answering(error, otherwise: .noSpace)
            }
        }
    }

    /// The pieces of the file's runs under `[from, to)` (widened to whole
    /// pages) that other owners share too.
    func sharedPieces(of inode: Inode, from: UInt64, to: UInt64) -> [Extent] {
        var shared: [Extent] = []
        let low = from & ~(pageSize - 1)
        let high = to > UInt64.max - pageSize ? to : (to + pageSize - 1) & ~(pageSize - 1)
        try? forEachPiece(of: inode, from: low, to: high) { extent, at, count in
            guard !extent.isFragment else {
                if fragments.isShared(extent) { shared.append(extent) }
                return
            }
            let first = at >> pageShift
            let pages = Int((at + UInt64(count) + pageSize - 1) >> pageShift - first)
            for range in pool.sharedPages(at: extent.address.advanced(by: first << pageShift), count: pages) {
                let start = first + UInt64(range.lowerBound)
                shared.append(Extent(page: extent.page + start, address: extent.address.advanced(by: start << pageShift),
                                     pages: range.count))
            }
        }
        return shared
    }
}
