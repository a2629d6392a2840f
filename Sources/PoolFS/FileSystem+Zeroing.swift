import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// What a file shows past its old end is zeros, made durable before the
/// size that shows it; and the flush of a file's bytes.
extension FileSystem {
    /// Zeroes the bytes past the end of the file inside its last run (and
    /// in runs wholly past it), so that growing the file reads zeros.
    /// Shared pages are left as they are: no owner shows those bytes, and
    /// one that grows over them copies the page first (`zeroGrowing`).
    func zeroBeyondSize(_ inode: Inode) {
        let shared = sharedPieces(of: inode, from: inode.record.size, to: .max)
        try? forEachPiece(of: inode, from: inode.record.size, to: .max) { extent, offset, count in
            var position = offset
            let end = offset + UInt64(count)
            // Pieces of this run, in order, widened to whole pages.
            for piece in shared where piece.address.shelf == extent.address.shelf && piece.address >= extent.address {
                let start = piece.address.offset - extent.address.offset, stop = start + piece.byteCount(pageShift)
                guard stop > position, start < end else { continue }
                if start > position { try pages.zero(extent.address, at: position, count: Int(start - position)) }
                position = stop
            }
            if end > position { try pages.zero(extent.address, at: position, count: Int(end - position)) }
        }
    }

    /// Zeroes `[from, to)` of the file where it has pages (a punched hole's
    /// partial pages: `unshare` them first).
    func zero(_ inode: Inode, from: UInt64, to: UInt64) {
        try? zero(inode, from: from, to: to, persisting: false)
    }

    /// Zeroes what a file growing from `from` to `to` comes to show of its
    /// runs (what lay past its end), durably before the size that shows it
    /// is logged: on pmem a power cut must not bring the old bytes back.
    /// Shared pages are copied first.
    func zeroGrowing(_ inode: Inode, from: UInt64, to: UInt64) throws {
        try unshare(inode, from: from, to: to)
        try durably("zeroing what a file grows over") { try zero(inode, from: from, to: to, persisting: true) }
    }

    private func zero(_ inode: Inode, from: UInt64, to: UInt64, persisting: Bool) throws {
        try forEachPiece(of: inode, from: from, to: to) { extent, offset, count in
            try pages.zero(extent.address, at: offset, count: count)
            if persisting { try pool.persist(at: extent.address.advanced(by: offset), count: count) }
        }
    }

    /// Makes durable the bytes of `[from, to)` that lie in runs other than
    /// `fresh` (which `name` makes durable whole).
    func persist(_ inode: Inode, from: UInt64, to: UInt64, except fresh: [Extent]) throws {
        try forEachPiece(of: inode, from: from, to: to) { extent, offset, count in
            if !fresh.contains(where: { $0.address == extent.address }) {
                try pool.persist(at: extent.address.advanced(by: offset), count: count)
            }
        }
    }

    /// `body` with each run under `[from, to)`: the run, where in it the
    /// range starts, and how many of its bytes the range covers.
    func forEachPiece(of inode: Inode, from: UInt64, to: UInt64,
                      _ body: (Extent, UInt64, Int) throws -> Void) throws {
        guard from < to else { return }
        let extents = inode.extents.extents
        var index = inode.extents.firstEnding(after: from >> pageShift)
        while index < extents.count, extents[index].page << pageShift < to {
            let extent = extents[index]
            let start = extent.page << pageShift
            let low = max(from, start), high = min(to, extent.byteEnd(pageShift))
            // A fragment stands for page 0 but may end before `from`.
            if low < high { try body(extent, low - start, Int(high - low)) }
            index += 1
        }
    }
}
