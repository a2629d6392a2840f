import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// What a freeze keeps of the pool's data pages as they were at its
/// instant (OpenPool+Freeze): the file `freeze` in the pool's directory,
/// with the ranges the freeze needs (every process write-protects those
/// alone), and for each shelf of that instant one state word per memory
/// page and room for that page's bytes, written only for pages written
/// since (the file is sparse).
///
/// A page's state only moves forward, by compare-and-swap, so the three
/// kinds of users agree without a lock: the process about to write a page
/// saves it first; the freezer reading a page takes it (from the shelf
/// while no one saved it, from here once someone did); a page nobody
/// needs (free at the instant, or taken) is never saved.
final class FreezeArea: @unchecked Sendable {
    static let fileName = "freeze"
    /// A memory page: what write protection works in.
    static let pageBytes = 4096

    enum State {
        /// Nobody needs its bytes: the page was not allocated at the
        /// instant, or the freezer has them already. (A new file reads 0.)
        static let notNeeded: UInt32 = 0
        /// The shelf still holds the page as it was.
        static let asItWas: UInt32 = 1
        /// Its bytes as they were are here.
        static let saved: UInt32 = 2
        /// Being saved by participant slot `state - saving`.
        static let saving: UInt32 = 0x100
    }

    private enum Header {
        static let magic = 0, generation = 8, shelves = 16, ranges = 24
        /// Then from `bytes` on, `ranges` times: shelf, start, end (u64).
        static let rangeBytes = 24
        static let value: UInt64 = 0x315A_4545_5246_4F50  // "POFREEZ1"
        static func shelf(_ index: Int) -> Int { 64 + index * 24 }
        static let bytes = 4096
    }

    let file: MappedFile
    let generation: UInt32
    /// The shelves it covers: those of the freeze's instant.
    let shelfCount: Int
    /// The byte ranges of each shelf the freeze needs as they were.
    let needed: [[Range<Int>]]
    private let states: [Int]
    private let saves: [Int]
    private let lengths: [Int]

    private init(file: MappedFile) throws {
        self.file = file
        guard file.length >= Header.bytes, file.load(UInt64.self, at: Header.magic) == Header.value else {
            throw PoolError.damaged(path: file.path, reason: "not a freeze area")
        }
        generation = UInt32(truncatingIfNeeded: file.load(UInt64.self, at: Header.generation))
        shelfCount = Int(file.load(UInt64.self, at: Header.shelves))
        guard shelfCount <= Layout.ShelfTable.capacity else {
            throw PoolError.damaged(path: file.path, reason: "\(shelfCount) shelves")
        }
        lengths = (0..<shelfCount).map { Int(file.load(UInt64.self, at: Header.shelf($0))) }
        states = (0..<shelfCount).map { Int(file.load(UInt64.self, at: Header.shelf($0) + 8)) }
        saves = (0..<shelfCount).map { Int(file.load(UInt64.self, at: Header.shelf($0) + 16)) }
        var needed = [[Range<Int>]](repeating: [], count: shelfCount)
        let count = Int(file.load(UInt64.self, at: Header.ranges))
        guard count <= ((states.first ?? Header.bytes) - Header.bytes) / Header.rangeBytes else {
            throw PoolError.damaged(path: file.path, reason: "\(count) ranges")
        }
        for index in 0..<count {
            let at = Header.bytes + index * Header.rangeBytes
            let shelf = Int(file.load(UInt64.self, at: at))
            let start = Int(file.load(UInt64.self, at: at + 8)), end = Int(file.load(UInt64.self, at: at + 16))
            guard shelf < shelfCount, start <= end, end <= lengths[shelf] else {
                throw PoolError.damaged(path: file.path, reason: "range \(index) lies outside its shelf")
            }
            needed[shelf].append(start..<end)
        }
        self.needed = needed
    }

    /// A new area for shelves of these lengths, needing these byte ranges
    /// of each as they are now (a stale area, left by a freezer that died,
    /// goes first).
    static func create(in home: PoolDirectory, generation: UInt32, shelfLengths: [Int],
                       needing needed: [[Range<UInt64>]]) throws -> FreezeArea {
        // Runs side by side are one range: fewer for every process to protect.
        var ranges: [(shelf: Int, range: Range<UInt64>)] = []
        for (shelf, runs) in needed.enumerated() {
            for run in runs.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                if let last = ranges.last, last.shelf == shelf, last.range.upperBound == run.lowerBound {
                    ranges[ranges.count - 1].range = last.range.lowerBound..<run.upperBound
                } else {
                    ranges.append((shelf, run))
                }
            }
        }
        var size = Header.bytes + (ranges.count * Header.rangeBytes + pageBytes - 1) / pageBytes * pageBytes
        var layout: [(states: Int, saves: Int)] = []
        for length in shelfLengths {
            let states = size
            size += (length / pageBytes * 4 + pageBytes - 1) / pageBytes * pageBytes
            layout.append((states, size))
            size += (length + pageBytes - 1) / pageBytes * pageBytes
        }
        home.remove(fileName)
        let file = try MappedFile.create(in: home, name: fileName, size: UInt64(size), reserve: UInt64(Header.bytes), medium: .dram)
        file.store(UInt64(generation), at: Header.generation)
        file.store(UInt64(shelfLengths.count), at: Header.shelves)
        for (index, (length, place)) in zip(shelfLengths, layout).enumerated() {
            file.store(UInt64(length), at: Header.shelf(index))
            file.store(UInt64(place.states), at: Header.shelf(index) + 8)
            file.store(UInt64(place.saves), at: Header.shelf(index) + 16)
        }
        file.store(UInt64(ranges.count), at: Header.ranges)
        for (index, (shelf, range)) in ranges.enumerated() {
            let at = Header.bytes + index * Header.rangeBytes
            file.store(UInt64(shelf), at: at)
            file.store(range.lowerBound, at: at + 8)
            file.store(range.upperBound, at: at + 16)
        }
        file.store(Header.value, at: Header.magic)
        let area = try FreezeArea(file: file)
        for (shelf, range) in ranges { area.markNeeded(shelf: shelf, offset: Int(range.lowerBound), count: range.count) }
        return area
    }

    /// The area of freeze `generation`, or nil when there is none (the
    /// freeze ended, or another began).
    static func open(in home: PoolDirectory, generation: UInt32) -> FreezeArea? {
        guard let file = try? MappedFile.open(in: home, name: fileName, medium: .dram),
              let area = try? FreezeArea(file: file), area.generation == generation else { return nil }
        return area
    }

    static func remove(from home: PoolDirectory) { home.remove(fileName) }

    /// Whether the memory page at byte `offset` of shelf `shelf` is covered.
    func covers(shelf: Int, offset: Int) -> Bool {
        shelf >= 0 && shelf < shelfCount && offset >= 0 && offset < lengths[shelf]
    }

    private func state(_ shelf: Int, _ page: Int) -> (UnsafeAtomic<UInt32>, Int) {
        let at = states[shelf] + page * 4
        return (file.atomic32(at: at), at)
    }

    /// Marks bytes `[offset, offset+count)` of `shelf` as needed as they are now.
    private func markNeeded(shelf: Int, offset: Int, count: Int) {
        var page = offset / FreezeArea.pageBytes
        while page * FreezeArea.pageBytes < offset + count {
            state(shelf, page).0.store(State.asItWas, ordering: .relaxed)
            page += 1
        }
    }

    /// Whether a memory page of `[offset, offset+count)` of `shelf` may
    /// still need saving before it is written.
    func needsSaving(shelf: Int, offset: Int, count: Int) -> Bool {
        var at = offset / FreezeArea.pageBytes * FreezeArea.pageBytes
        while at < offset + count, covers(shelf: shelf, offset: at) {
            let seen = state(shelf, at / FreezeArea.pageBytes).0.load(ordering: .acquiring)
            if seen != State.notNeeded && seen != State.saved { return true }
            at += FreezeArea.pageBytes
        }
        return false
    }

    /// Saves the memory page at `offset` of `shelf` (its file `source`)
    /// unless it is saved or not needed: called before anything writes it.
    /// `tag` is the caller's participant slot; `isAlive(slot)` tells
    /// whether a saver that seems stuck still lives (if not, its save is
    /// done again: the page cannot have changed, its writers wait).
    func preserve(shelf: Int, offset: Int, from source: MappedFile, tag slot: Int, isAlive: (Int) -> Bool) {
        guard covers(shelf: shelf, offset: offset) else { return }
        let page = offset / FreezeArea.pageBytes
        let (word, at) = state(shelf, page)
        let mine = State.saving + UInt32(slot)
        var seen = word.load(ordering: .acquiring)
        while true {
            switch seen {
            case State.saved, State.notNeeded:
                return
            case State.asItWas:
                let (done, now) = word.compareExchange(expected: seen, desired: mine, ordering: .acquiringAndReleasing)
                if done { return save(shelf, page, word, at, from: source) }
                seen = now
            default:
                file.wait(at: at, whileEqualTo: seen, milliseconds: 50)
                let now = word.load(ordering: .acquiring)
                if now == seen && !isAlive(Int(seen - State.saving)),
                   word.compareExchange(expected: seen, desired: mine, ordering: .acquiringAndReleasing).exchanged {
                    return save(shelf, page, word, at, from: source)
                }
                seen = now
            }
        }
    }

    private func save(_ shelf: Int, _ page: Int, _ word: UnsafeAtomic<UInt32>, _ at: Int, from source: MappedFile) {
        let offset = page * FreezeArea.pageBytes
        let count = min(FreezeArea.pageBytes, lengths[shelf] - offset)
        // By pread, not the mapping: a hole of a lazy clone's run would
        // fault to the helper thread that may be the one saving.
        file.withBytes(at: saves[shelf] + offset, count: count) { try? source.readByFile(at: offset, into: $0) }
        word.store(State.saved, ordering: .releasing)
        file.wake(at: at)
    }

    /// Makes `buffer`, read from shelf `shelf` at `offset` after the
    /// instant, hold those bytes as they were at it: pages saved since come
    /// from here; the rest were not written, and are now taken so they
    /// never need saving. Read the shelf first, then call this.
    func takeAsTheyWere(shelf: Int, offset: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard shelf >= 0, shelf < shelfCount else { return }
        let size = FreezeArea.pageBytes
        precondition(offset % size == 0)
        var done = 0
        while done < buffer.count, covers(shelf: shelf, offset: offset + done) {
            let count = min(size, buffer.count - done)
            let (word, _) = state(shelf, (offset + done) / size)
            var seen = word.load(ordering: .acquiring)
            if seen == State.asItWas {
                // A saver that wins instead saves the same bytes: no write comes before its save.
                seen = word.compareExchange(expected: seen, desired: State.notNeeded, ordering: .acquiringAndReleasing).original
            }
            if seen == State.saved {
                file.withBytes(at: saves[shelf] + offset + done, count: count) {
                    UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + count]).copyMemory(from: UnsafeRawBufferPointer($0))
                }
            }
            done += count
        }
    }
}
