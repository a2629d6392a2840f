import Atomics
import CLinux
import CPmem
#if canImport(Glibc)
import Glibc
#endif

/// One shelf file mapped MAP_SHARED, and the only owner of that mapping: the
/// pointer never leaves this type except inside the accessors below, which
/// check their bounds. `dram` files are mapped with mmap; `pmem` files with
/// libpmem, which also tells whether stores can be made durable with cache
/// flushes (real pmem) or need msync.
final class MappedFile: @unchecked Sendable {
    let path: String
    let medium: Medium
    /// Kept open for fallocate and for the file locks placed on shelf 0.
    let descriptor: Int32
    private let base: UnsafeMutableRawPointer
    let length: Int
    let isPersistentMemory: Bool
    /// Whether mincore tells this file's holes: on tmpfs, where a page is
    /// in memory only if written (or reserved and then written), and for a
    /// caller that owns the file (mincore reports every page resident to
    /// one that may not write it). Elsewhere read-ahead fills holes' pages.
    private lazy var mincoreTellsHoles: Bool = {
        var info = stat()
        guard CLinux_is_on_tmpfs(descriptor) != 0, fstat(descriptor, &info) == 0 else { return false }
        return geteuid() == 0 || info.st_uid == geteuid()
    }()

    /// The errno of the first msync that failed, 0 if none: the kernel
    /// reports a write-back error once, and bytes it could not write are
    /// not durable, whatever later flushes say. Sticky, for `checkPersisted`.
    private let persistError = ManagedAtomic<Int32>(0)

    private init(path: String, medium: Medium, descriptor: Int32, base: UnsafeMutableRawPointer,
                 length: Int, isPersistentMemory: Bool) {
        self.path = path
        self.medium = medium
        self.descriptor = descriptor
        self.base = base
        self.length = length
        self.isPersistentMemory = isPersistentMemory
    }

    deinit {
        switch medium {
        case .dram, .remote: munmap(base, length)
        case .pmem: pmem_unmap(base, length)
        }
        SystemCall.close(descriptor)
    }

    /// Creates a new file of `size` bytes (failing if it exists) and maps it.
    /// The file is sparse except for `reserve` leading bytes, whose blocks are
    /// allocated now.
    static func create(in directory: PoolDirectory, name: String, size: UInt64, reserve: UInt64,
                       medium: Medium) throws -> MappedFile {
        let path = directory.path(of: name)
        let fd = try directory.open(name, flags: O_RDWR | O_CREAT | O_EXCL)
        do {
            try SystemCall.truncate(fd, to: size, path: path)
            try SystemCall.allocate(fd, offset: 0, length: reserve, path: path)
            return try map(path: path, descriptor: fd, length: size, medium: medium)
        } catch {
            SystemCall.close(fd)
            directory.remove(name)
            throw error
        }
    }

    /// Maps an existing file whole.
    static func open(in directory: PoolDirectory, name: String, medium: Medium) throws -> MappedFile {
        let path = directory.path(of: name)
        let fd = try directory.open(name, flags: O_RDWR)
        do {
            let size = try SystemCall.fileSize(fd, path: path)
            guard size > 0 else { throw PoolError.damaged(path: path, reason: "the file is empty") }
            return try map(path: path, descriptor: fd, length: size, medium: medium)
        } catch {
            SystemCall.close(fd)
            throw error
        }
    }

    private static func map(path: String, descriptor fd: Int32, length: UInt64,
                            medium: Medium) throws -> MappedFile {
        switch medium {
        case .dram, .remote:
            let base = try SystemCall.mapShared(fd, length: Int(length), path: path)
            return MappedFile(path: path, medium: medium, descriptor: fd, base: base,
                              length: Int(length), isPersistentMemory: false)
        case .pmem:
            var mapped = 0
            var isPmem: Int32 = 0
            // libpmem opens by path: the file already open, not whatever is at its path now.
            guard let base = pmem_map_file("/proc/self/fd/\(fd)", 0, 0, 0, &mapped, &isPmem) else {
                throw PoolError.system(call: "pmem_map_file", path: path, errno: errno)
            }
            return MappedFile(path: path, medium: medium, descriptor: fd, base: base,
                              length: mapped, isPersistentMemory: isPmem != 0)
        }
    }

    /// The span of `[offset, offset+count)` that may lie over holes, to be
    /// reserved again; nil where every block is there. On dram, pages not
    /// in memory (a fallocated page never written among them: reserving it
    /// again is harmless); elsewhere, from lseek(SEEK_HOLE).
    func holes(offset: UInt64, count: UInt64) -> Range<UInt64>? {
        if medium == .dram && mincoreTellsHoles {
            return notInMemory(offset: Int(offset), count: Int(count)).map { UInt64($0.lowerBound)..<UInt64($0.upperBound) }
        }
        return SystemCall.hasHole(descriptor, offset: offset, length: count) ? offset..<offset + count : nil
    }

    /// Reserves file blocks for `[offset, offset+length)`.
    func reserve(offset: UInt64, length: UInt64) throws {
        try SystemCall.allocate(descriptor, offset: offset, length: length, path: path)
    }

    // MARK: Bounded access

    @inline(__always)
    func atomic(at offset: Int) -> UnsafeAtomic<UInt64> {
        precondition(offset >= 0 && offset + 8 <= length && offset & 7 == 0)
        let pointer = (base + offset).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self)
        return UnsafeAtomic(at: pointer)
    }

    func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= length)
        return (base + offset).loadUnaligned(as: T.self)
    }

    func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= length)
        (base + offset).storeBytes(of: value, as: T.self)
    }

    /// Raw bytes of a checked range, for the caller's closure only.
    @discardableResult
    func withBytes<R>(at offset: Int, count: Int,
                      _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        return try body(UnsafeMutableRawBufferPointer(start: base + offset, count: count))
    }

    /// A 32-bit word, for the few that processes wait on (futexes).
    @inline(__always)
    func atomic32(at offset: Int) -> UnsafeAtomic<UInt32> {
        precondition(offset >= 0 && offset + 4 <= length && offset & 3 == 0)
        return UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UnsafeAtomic<UInt32>.Storage.self))
    }

    /// Waits, at most `milliseconds`, while the word at `offset` holds
    /// `expected`: any process that maps the file can wake it.
    func wait(at offset: Int, whileEqualTo expected: UInt32, milliseconds: Int32) {
        precondition(offset >= 0 && offset + 4 <= length && offset & 3 == 0)
        CLinux_futex_wait((base + offset).assumingMemoryBound(to: UInt32.self), expected, milliseconds)
    }

    func wake(at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= length && offset & 3 == 0)
        CLinux_futex_wake((base + offset).assumingMemoryBound(to: UInt32.self))
    }

    // MARK: Write protection (freezes)

    /// Registers `[offset, offset+count)` with userfaultfd `uffd`, for
    /// `writeProtect` in it (which alone touches page tables). Returns
    /// errno, 0 when done.
    func register(_ uffd: Int32, offset: Int, count: Int) -> Int32 {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        return CLinux_uffd_register(uffd, base + offset, count) == 0 ? 0 : errno
    }

    /// How many bytes of `[offset, offset+count)` the file holds (not
    /// holes), by SEEK_DATA and SEEK_HOLE: a lazy clone's filled pages.
    func heldBytes(offset: Int, count: Int) -> Int {
        var held = 0, at = offset
        let end = offset + count
        while at < end {
            let data = lseek(descriptor, off_t(at), SEEK_DATA)
            guard data >= 0, Int(data) < end else { break }
            let hole = min(end, Int(max(lseek(descriptor, data, SEEK_HOLE), data)))
            held += hole - Int(data)
            at = max(hole, Int(data) + 1)
        }
        return held
    }

    /// Registers `[offset, offset+count)` for missing pages too (holes):
    /// a load or store there waits until `uffd`'s reader fills the page.
    func registerMissing(_ uffd: Int32, offset: Int, count: Int) -> Int32 {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        return CLinux_uffd_register_missing(uffd, base + offset, count) == 0 ? 0 : errno
    }

    /// Puts `count` bytes from `source` into the holes of a range
    /// registered for missing pages, page by page, waking whoever waits:
    /// 0, or errno (EEXIST where a page was there, which stops it).
    func fill(_ uffd: Int32, offset: Int, from source: UnsafeRawPointer, count: Int) -> Int32 {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        return CLinux_uffd_fill(uffd, base + offset, source, count) == 0 ? 0 : errno
    }

    /// Write-protects a registered range: a write there waits until
    /// `uffd`'s reader lets it go. Returns errno, 0 when done.
    func writeProtect(_ uffd: Int32, offset: Int, count: Int) -> Int32 {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        return CLinux_uffd_protect(uffd, base + offset, count, 1) == 0 ? 0 : errno
    }

    /// Lets writes to the range go again, waking those waiting; with
    /// `unregister`, the range leaves `uffd` too.
    func allowWrites(_ uffd: Int32, offset: Int, count: Int, unregister: Bool) {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        _ = CLinux_uffd_protect(uffd, base + offset, count, 0)
        if unregister { _ = CLinux_uffd_unregister(uffd, base + offset, count) }
    }

    /// The offset in this mapping of a process address, or nil.
    func offset(ofAddress address: UInt64) -> Int? {
        let start = UInt64(UInt(bitPattern: base))
        return address >= start && address - start < UInt64(length) ? Int(address - start) : nil
    }

    /// Copies `copy` made with pwrite rather than through the mapping.
    let copiesThroughFile = ManagedAtomic<Int>(0)

    /// Writes below this size copy through the mapping: the residency
    /// question (one mincore) costs more than a fault it could save.
    static let coldCopyMinimum = 64 << 10

    /// Copies `source` to `offset`. Where a dram page there is not resident
    /// (fresh, or given back), the bytes go in with pwrite: the kernel fills
    /// a page it hands the file whole without zeroing it first, where a
    /// store through the mapping faults each page in zeroed (the cold
    /// write in BENCHMARKS.md); a resident page takes memcpy, faster there.
    /// A pwrite that fails (no block for the page) throws: a store there
    /// would raise SIGBUS.
    func copy(to offset: Int, from source: UnsafeRawBufferPointer, byFile: Bool = true) throws {
        precondition(offset >= 0 && offset + source.count <= length)
        guard let from = source.baseAddress, source.count > 0 else { return }
        if byFile, medium == .dram, MappedFile.mayWriteAnywhere, source.count >= MappedFile.coldCopyMinimum, !isResident(offset) {
            try writeByFile(at: offset, source)
            copiesThroughFile.wrappingIncrement(ordering: .relaxed)
            return
        }
        (base + offset).copyMemory(from: from, byteCount: source.count)
    }

    /// Writes `bytes` at `offset` with pwrite, not through the mapping.
    func writeByFile(at offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
        precondition(offset >= 0 && offset + bytes.count <= length)
        try SystemCall.calling("pwrite", path, descriptor) { _ = try $0.writeAll(toAbsoluteOffset: Int64(offset), bytes) }
    }

    /// Reads `buffer.count` bytes at `offset` with pread: no page fault for
    /// each page this process has not touched through the mapping.
    func readByFile(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        precondition(offset >= 0 && offset + buffer.count <= length)
        guard let start = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, start + done, buffer.count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PoolError.system(call: "pread", path: path, errno: n < 0 ? errno : EIO) }
            done += n
        }
    }

    /// Whether no file size limit (RLIMIT_FSIZE) applies: pwrite past one
    /// raises SIGXFSZ, where a store through the mapping knows no limit.
    private static let mayWriteAnywhere: Bool = {
        var limit = rlimit()
        return getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0 && limit.rlim_cur == rlim_t.max
    }()

    /// Whether the page holding `offset` is in memory (mincore: resident
    /// and up to date, which a fallocated page is not until written).
    private func isResident(_ offset: Int) -> Bool {
        notInMemory(offset: offset, count: 1) == nil
    }

    /// The span from the first to the last page of `[offset, offset+count)`
    /// (page-aligned) that is not in memory: a hole, or blocks reserved and
    /// never written; nil where all are; all of it where mincore cannot say.
    /// Its cost grows with `count` only, where lseek(SEEK_HOLE) walks on to
    /// the next hole however far away that is.
    func notInMemory(offset: Int, count: Int) -> Range<Int>? {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        let page = Int(getpagesize())
        let first = offset / page, end = (offset + count + page - 1) / page
        var lowest = Int.max, highest = -1
        let step = 1 << 12
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: step) { states -> Range<Int>? in
            for chunk in stride(from: first, to: end, by: step) {
                let pages = min(step, end - chunk)
                guard mincore(base + chunk * page, pages * page, states.baseAddress) == 0 else {
                    return first * page..<end * page
                }
                for index in 0..<pages where states[index] & 1 == 0 {
                    lowest = min(lowest, chunk + index)
                    highest = chunk + index
                }
            }
            return highest < 0 ? nil : lowest * page..<(highest + 1) * page
        }
    }

    /// A typed view of whole words, for the page table and bitmap scans.
    func words(at offset: Int, count: Int) -> UnsafeMutablePointer<UInt64> {
        precondition(offset >= 0 && offset & 7 == 0 && offset + count * 8 <= length)
        return (base + offset).assumingMemoryBound(to: UInt64.self)
    }

    /// The start of a checked range, for the few Unsafe types that keep
    /// pointers into the mapping (they live no longer than it).
    func pointer(at offset: Int, count: Int) -> UnsafeMutableRawPointer {
        precondition(offset >= 0 && count >= 0 && offset + count <= length)
        return base + offset
    }

    /// Makes `[offset, offset+count)` durable: cache flushes on real pmem,
    /// msync for pmem-medium files elsewhere; tmpfs needs nothing.
    func persist(offset: Int, count: Int) {
        precondition(offset >= 0 && offset + count <= length)
        switch medium {
        case .dram, .remote: return
        case .pmem:
            if isPersistentMemory {
                pmem_persist(base + offset, count)
            } else if pmem_msync(base + offset, count) != 0 {
                notePersistFailure(errno)
            }
        }
    }

    /// Records a failed flush; the first one is kept.
    func notePersistFailure(_ error: Int32) {
        _ = persistError.compareExchange(expected: 0, desired: error == 0 ? EIO : error, ordering: .relaxed)
    }

    /// Throws if a flush of this file ever failed: what callers that
    /// promise durability (Pool.write, store, persist) check after theirs.
    func checkPersisted() throws {
        let error = persistError.load(ordering: .relaxed)
        if error != 0 { throw PoolError.system(call: "msync", path: path, errno: error) }
    }

    func persistAll() { persist(offset: 0, count: length) }
}
