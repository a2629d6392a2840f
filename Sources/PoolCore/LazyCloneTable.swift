import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// A region clone that still shares pages with its source: where the
/// clone's run has a hole, its bytes are the source's page as it is (the
/// source page has not been written since the clone's instant: a write
/// there first fills the clone's page). FreezeHelper keeps that true in
/// every process.
struct LazyClone: Equatable, Sendable {
    let slot: Int
    let source: GlobalAddress
    let clone: GlobalAddress
    let bytes: UInt64

    func sourceRange(in shelf: Int) -> Range<Int>? {
        source.shelf == shelf ? Int(source.offset)..<Int(source.offset + bytes) : nil
    }

    func cloneRange(in shelf: Int) -> Range<Int>? {
        clone.shelf == shelf ? Int(clone.offset)..<Int(clone.offset + bytes) : nil
    }
}

/// The pool's lazy region clones: the file `clones` in its directory, a
/// live word and three more (source, clone, bytes) per slot. Changed under
/// the global lock only; an entry is published by its live word, written
/// last, and dropped before either run is freed, so an entry always names
/// two allocated runs.
final class LazyCloneTable: @unchecked Sendable {
    static let fileName = "clones"
    static let capacity = 64

    private enum Format {
        static let magic = 0, count = 8
        static let value: UInt64 = 0x3153_454E_4F4C_4350  // "PCLONES1"
        static let entries = 64, entryBytes = 32
        static let bytes = entries + LazyCloneTable.capacity * entryBytes
    }

    private let file: MappedFile

    private init(file: MappedFile) throws {
        guard file.length >= Format.bytes, file.load(UInt64.self, at: Format.magic) == Format.value else {
            throw PoolError.damaged(path: file.path, reason: "not a table of region clones")
        }
        self.file = file
    }

    /// The pool's table, made if it has none yet.
    static func openOrCreate(in home: PoolDirectory) throws -> LazyCloneTable {
        if let file = try? MappedFile.open(in: home, name: fileName, medium: .dram),
           file.load(UInt64.self, at: Format.magic) == Format.value {
            return try LazyCloneTable(file: file)
        }
        // Made aside and linked in whole: another opener never maps half of one.
        let scratch = "\(fileName).\(getpid())"
        home.remove(scratch)
        let file = try MappedFile.create(in: home, name: scratch, size: UInt64(Format.bytes), reserve: UInt64(Format.bytes),
                                         medium: .dram)
        file.store(Format.value, at: Format.magic)
        if link(home.path(of: scratch), home.path(of: fileName)) != 0 {
            home.remove(scratch)
            let existing = try MappedFile.open(in: home, name: fileName, medium: .dram)
            return try LazyCloneTable(file: existing)
        }
        home.remove(scratch)
        return try LazyCloneTable(file: file)
    }

    /// Whether no clone shares pages: one load. The count goes up before an
    /// entry is published and down after it is dropped, so a holder of the
    /// global lock that dies between leaves it too high, never too low.
    var isEmpty: Bool { file.atomic(at: Format.count).load(ordering: .acquiring) == 0 }

    private func word(_ slot: Int, _ field: Int) -> UnsafeAtomic<UInt64> {
        file.atomic(at: Format.entries + slot * Format.entryBytes + field * 8)
    }

    func entries() -> [LazyClone] { (0..<LazyCloneTable.capacity).compactMap(entry) }

    /// Slot `slot`'s clone, if one lives there.
    func entry(_ slot: Int) -> LazyClone? {
        guard word(slot, 0).load(ordering: .acquiring) == 1 else { return nil }
        return LazyClone(slot: slot, source: GlobalAddress(rawValue: word(slot, 1).load(ordering: .relaxed)),
                         clone: GlobalAddress(rawValue: word(slot, 2).load(ordering: .relaxed)),
                         bytes: word(slot, 3).load(ordering: .relaxed))
    }

    /// Whether `clone` is still in the table (not dropped since it was read).
    func holds(_ clone: LazyClone) -> Bool { entry(clone.slot) == clone }

    /// A new entry; nil when the table is full. Global lock held.
    func add(source: GlobalAddress, clone: GlobalAddress, bytes: UInt64) -> LazyClone? {
        guard let slot = (0..<LazyCloneTable.capacity).first(where: { word($0, 0).load(ordering: .acquiring) == 0 }) else {
            return nil
        }
        file.atomic(at: Format.count).wrappingIncrement(ordering: .acquiringAndReleasing)
        word(slot, 1).store(source.rawValue, ordering: .relaxed)
        word(slot, 2).store(clone.rawValue, ordering: .relaxed)
        word(slot, 3).store(bytes, ordering: .relaxed)
        word(slot, 0).store(1, ordering: .releasing)
        return entry(slot)
    }

    /// Global lock held.
    func remove(_ clone: LazyClone) {
        guard holds(clone) else { return }
        word(clone.slot, 0).store(0, ordering: .releasing)
        file.atomic(at: Format.count).wrappingDecrement(ordering: .acquiringAndReleasing)
    }

    /// The count again from the live words (after a holder of the global
    /// lock died between the count and an entry). Global lock held.
    func recount() {
        let live = (0..<LazyCloneTable.capacity).filter { word($0, 0).load(ordering: .acquiring) == 1 }.count
        file.atomic(at: Format.count).store(UInt64(live), ordering: .releasing)
    }
}
