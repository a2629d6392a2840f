/// Invariant checks that cost too much for a release build; compiled in by
/// `POOLFS_INTERNAL_CHECKS=1 swift build`, which `scripts/test` runs the
/// stress and recovery tests under.
@inline(__always)
func internalCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                   file: StaticString = #fileID, line: UInt = #line) {
    #if POOLFS_INTERNAL_CHECKS
    if !condition() { preconditionFailure("poolfs invariant: \(message())", file: file, line: line) }
    #endif
}

extension Shelf {
    /// Every page of `[page, page+length)` is free in the bitmap and free (or
    /// an uncovered tail) in the page table.
    func isFreeRun(_ page: Int, _ length: Int) -> Bool {
        (0..<length).allSatisfy { !bitIsSet(page + $0) && (entry(page + $0).kind == .free || entry(page + $0).kind == .tail) }
    }

    /// `[page, page+length)` is a run that a carve (Shelf.carveRun) left
    /// half done: under its head lie heads of pieces inside it, of its kind
    /// and tag, each followed by its own tails, and elsewhere the old run's
    /// tails (or, in a piece whose head is not yet written, tails that
    /// count from where that head will be).
    func isHalfCarvedRun(_ page: Int, _ length: Int) -> Bool {
        let outer = entry(page)
        guard length >= 1, page >= 0, page + length <= pageCount, outer.isHead, outer.length == length else { return false }
        var piece = 0..<length
        for i in 1..<max(1, length) {
            let e = entry(page + i)
            if e.isHead, e.kind == outer.kind, e.tag == outer.tag, e.length >= 1, e.length <= length - i {
                piece = i..<(i + e.length)
            } else if e.kind == .tail, e.length >= 1, e.length <= i {
                let head = i - e.length
                guard head == 0 || (piece.contains(i) && head == piece.lowerBound)
                    || entry(page + head).kind == .tail else { return false }
            } else {
                return false
            }
        }
        return true
    }

    /// `[page, page+length)` is exactly one run, inside the shelf.
    func isWholeRun(_ page: Int, _ length: Int) -> Bool {
        length >= 1 && page >= 0 && page + length <= pageCount && entry(page).isHead && entry(page).length == length
            && (1..<length).allSatisfy { entry(page + $0) == .tail(distance: $0) }
    }
}
