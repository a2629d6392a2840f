/// A directory's entries. Each entry keeps the slot it was added in, and a
/// slot is its readdir offset: a listing that runs while entries come and go
/// never sees one twice nor misses one that stayed. Slots are compacted only
/// while nobody has the directory open.
struct Directory: Sendable {
    struct Entry: Sendable {
        let name: FileName
        var inode: UInt64
    }

    private(set) var slots: [Entry?] = []
    private var byName: [FileName: Int] = [:]

    var isEmpty: Bool { byName.isEmpty }

    func inode(named name: FileName) -> UInt64? {
        byName[name].flatMap { slots[$0]?.inode }
    }

    mutating func add(_ name: FileName, _ inode: UInt64) {
        byName[name] = slots.count
        slots.append(Entry(name: name, inode: inode))
    }

    /// Points an existing name at another inode, in place.
    mutating func replace(_ name: FileName, _ inode: UInt64) {
        guard let slot = byName[name] else { return add(name, inode) }
        slots[slot]?.inode = inode
    }

    @discardableResult
    mutating func remove(_ name: FileName) -> UInt64? {
        guard let slot = byName.removeValue(forKey: name) else { return nil }
        let inode = slots[slot]?.inode
        slots[slot] = nil
        return inode
    }

    /// Whether empty slots are most of the table.
    var isSparse: Bool { slots.count > 64 && byName.count * 2 < slots.count }

    /// Drops empty slots when they are most of the table.
    mutating func compactIfSparse() {
        guard isSparse else { return }
        slots = slots.compactMap { $0 }.map { Optional($0) }
        byName = [:]
        for (slot, entry) in slots.enumerated() { byName[entry!.name] = slot }
    }

    /// Entries from slot `start` on, with the slot after each.
    func entries(from start: Int) -> some Sequence<(entry: Entry, next: Int)> {
        (max(start, 0)..<slots.count).lazy.compactMap { slot in slots[slot].map { ($0, slot + 1) } }
    }

    var names: [(FileName, UInt64)] { slots.compactMap { $0.map { ($0.name, $0.inode) } } }
}
