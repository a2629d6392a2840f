import PoolCore

/// Small files in fragments (FragmentRuns.swift): a file gets one when its
/// first bytes are written and it stays within half a page; a change that
/// needs more room moves it first.
extension FileSystem {
    /// Before a change makes a file in a fragment reach `end`: moves its
    /// bytes to a fragment that holds `end`, or past the largest fragment
    /// to a page of its own, whose bytes past the file's size are whatever
    /// they were (the change zeroes what it uncovers). Logged as the file's
    /// new extent, which replaces the fragment, live and on replay. The
    /// inode's lock held.
    func makeRoom(in inode: Inode, upTo end: UInt64) throws {
        guard let old = inode.extents.fragment, end > UInt64(old.fragmentBytes) else { return }
        try move(inode, from: old, toHold: end)
    }

    /// After a cut: a file whose bytes now fit a smaller fragment than
    /// what holds them (its fragment, or its only page) moves into it.
    /// The inode's lock held.
    func shrinkToFit(_ inode: Inode) throws {
        let size = inode.record.size
        guard size > 0, inode.extents.extents.count == 1, let only = inode.extents.extents.first,
              only.page == 0, only.isFragment || only.pages == 1,
              let bytes = fragments.capacity(for: size), UInt64(bytes) < only.byteCount(pageShift)
        else { return }
        try move(inode, from: only, toHold: size)
    }

    /// Copies a shared fragment into one of the file's own, of `bytes`.
    func moveFragment(of inode: Inode, to bytes: Int) throws {
        guard let old = inode.extents.fragment else { return }
        try move(inode, from: old, toHold: UInt64(bytes))
    }

    /// Moves the file's first `size` bytes from `old` (its fragment, or
    /// its only page) into a fragment that holds `end` bytes, or a page.
    private func move(_ inode: Inode, from old: Extent, toHold end: UInt64) throws {
        let heap = self.heap(inode.record.heap)
        let new: Extent
        do {
            if let bytes = fragments.capacity(for: end) {
                new = try fragments.allocate(bytes: bytes, from: heap)
            } else {
                new = Extent(page: 0, address: try heap.allocateTrackedPages(count: 1), pages: 1)
            }
        } catch {
            throw FileSystemError.noSpace
        }
        let size = Int(min(inode.record.size, old.byteCount(pageShift)))
        do {
            try pages.copy(size, from: old.address, to: new.address)
            // Durable before the log names them in place of the old ones.
            try durably("flushing a small file's bytes") { try pool.persist(at: new.address, count: size) }
            try commit(.extent(inode: inode.number, new))
        } catch {
            free([Release(extent: new)])
            throw FileSystemError.answering(error, otherwise: .noSpace)
        }
    }
}
