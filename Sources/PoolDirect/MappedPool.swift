import Atomics
import CDirect
import DirectFormat
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A pool's `direct` area and shelves as this process maps them, for every
/// file of that pool it serves; kept for the life of the process. The one
/// place in the library that holds raw pointers into them.
final class MappedPool: @unchecked Sendable {
    let directory: String
    let identity: UInt64
    private let area: UnsafeMutableRawPointer
    /// What the C copy reads: the epoch and this process's client words.
    let state: UnsafeMutablePointer<pd_area>
    /// Mapped as runs name them: two files' refreshes may map at once.
    private let shelves = Mutex<[Int: Shelf]>([:])

    /// A shelf file mapped whole, kept open for mappings of files' runs.
    struct Shelf {
        let base: UnsafeMutableRawPointer
        let length: Int
        let writable: Bool
        let descriptor: Int32
    }

    /// Maps `directory`'s area if it is the one with `identity` (the
    /// mount's of now) and takes a client slot in it; nil otherwise.
    init?(directory: String, identity: UInt64) {
        let fd = pd_real_open("\(directory)/\(DirectAreaFormat.fileName)", O_RDWR | O_CLOEXEC, 0)
        guard fd >= 0 else { return nil }
        defer { _ = pd_real_close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size >= DirectAreaFormat.layoutOffset(DirectAreaFormat.layoutCapacity),
              let base = mmap(nil, Int(info.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            return nil
        }
        self.directory = directory
        self.identity = identity
        area = base
        state = .allocate(capacity: 1)
        state.initialize(to: pd_area(epoch: MappedPool.words(base, DirectAreaFormat.Header.epoch), client: nil, pins: nil,
                                     pin_count: 0))
        guard word(DirectAreaFormat.Header.magic).load(ordering: .acquiring) == DirectAreaFormat.magic,
              word(DirectAreaFormat.Header.version).load(ordering: .relaxed) == DirectAreaFormat.version,
              word(DirectAreaFormat.Header.identity).load(ordering: .relaxed) == identity,
              claimClient() else {
            munmap(base, Int(info.st_size))
            return nil
        }
    }

    private static func words(_ base: UnsafeMutableRawPointer, _ index: Int) -> UnsafeMutablePointer<UInt64> {
        (base + index * 8).assumingMemoryBound(to: UInt64.self)
    }

    private func word(_ index: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: UnsafeMutableRawPointer(MappedPool.words(area, index))
            .assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }

    var isRetired: Bool { word(DirectAreaFormat.Header.retired).load(ordering: .acquiring) != 0 }

    /// A client slot of this process: a free one, or one whose process died.
    /// Its counters of what was served stay, adding up for `.pool/info`.
    func claimClient() -> Bool {
        let me = UInt64(getpid())
        for client in 0..<DirectAreaFormat.clientCapacity {
            let base = DirectAreaFormat.clientOffset(client) / 8
            let pid = word(base + DirectAreaFormat.Client.pid)
            var current = pid.load(ordering: .acquiring)
            if current != 0, kill(pid_t(truncatingIfNeeded: current), 0) == 0 || errno != ESRCH { continue }
            guard pid.compareExchange(expected: current, desired: me, ordering: .sequentiallyConsistent).exchanged else {
                continue
            }
            current = me
            for parity in 0..<2 { word(base + DirectAreaFormat.Client.readers + parity).store(0, ordering: .releasing) }
            for pin in 0..<(2 * DirectAreaFormat.Client.pinCount) {
                word(base + DirectAreaFormat.Client.pins + pin).store(0, ordering: .releasing)
            }
            state.pointee.pins = MappedPool.words(area, base + DirectAreaFormat.Client.pins)
            state.pointee.pin_count = UInt64(DirectAreaFormat.Client.pinCount)
            state.pointee.client = MappedPool.words(area, base)
            return true
        }
        return false
    }

    /// The words of a layout slot, for the C copy's checks.
    func layoutWord(_ slot: Int, _ field: Int) -> UnsafeMutablePointer<UInt64> {
        MappedPool.words(area, DirectAreaFormat.layoutOffset(slot) / 8 + field)
    }

    func layoutAtomic(_ slot: Int, _ field: Int) -> UnsafeAtomic<UInt64> {
        word(DirectAreaFormat.layoutOffset(slot) / 8 + field)
    }

    /// Where `length` bytes at `offset` of shelf `index` are mapped here,
    /// whether they may be written, and the shelf file's descriptor; nil if
    /// the shelf cannot be mapped (no access) or does not hold them.
    func bytes(shelf index: Int, offset: UInt64, length: UInt64) -> (UnsafeMutablePointer<UInt8>, Bool, Int32)? {
        shelves.withLock { shelves in
            if shelves[index] == nil, let mapped = MappedPool.map("\(directory)/shelf-\(index)") { shelves[index] = mapped }
            guard let shelf = shelves[index], offset <= UInt64(shelf.length), length <= UInt64(shelf.length) - offset else {
                return nil
            }
            return ((shelf.base + Int(offset)).assumingMemoryBound(to: UInt8.self), shelf.writable, shelf.descriptor)
        }
    }

    /// A shelf file mapped whole, for writing where this process may.
    private static func map(_ path: String) -> Shelf? {
        var writable = true
        var fd = pd_real_open(path, O_RDWR | O_CLOEXEC, 0)
        if fd < 0 {
            writable = false
            fd = pd_real_open(path, O_RDONLY | O_CLOEXEC, 0)
        }
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size > 0,
              let base = mmap(nil, Int(info.st_size), PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0),
              base != MAP_FAILED else {
            _ = pd_real_close(fd)
            return nil
        }
        return Shelf(base: base, length: Int(info.st_size), writable: writable, descriptor: fd)
    }
}
