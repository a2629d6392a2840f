import Atomics
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// The file `direct` beside a mounted pool's shelves, mapped shared by the
/// mount and by every process with direct access (libpoolfs-direct.so):
/// where the mount publishes the runs of the files those processes lease,
/// and where they say when they are copying. The one place that holds raw
/// pointers into it. Every word is a UInt64 read and written atomically.
///
/// - header (one page): magic, version, the epoch readers enter, capacities,
///   whether a later mount has retired it.
/// - clients (`clientCapacity` × `Client.words` words), one per process:
///   its pid, its readers by the epoch's parity, what it served directly,
///   and its pins: the layouts whose pages it maps (slot + 1, and its
///   mappings of that file: read-only ones in the low half, writable ones
///   in the high half).
/// - layouts (`layoutCapacity` × `layoutWords` words), one per leased
///   file: a generation (odd while rewritten), the inode, its size, flags,
///   and its runs (file offset, length, global address, flags).
public struct UnsafeDirectArea: @unchecked Sendable {
    public static let fileName = Pool.directAreaFileName
    static let magic: UInt64 = 0x5443_4552_4944_5350   // "PSDIRECT"
    static let version: UInt64 = 2

    public enum Header {
        public static let magic = 0, version = 1, epoch = 2, clients = 3, layouts = 4, layoutWords = 5
        public static let retired = 6
        /// Random at each mount: a client finds whether the file it mapped is this mount's.
        public static let identity = 7
        /// The mount's process: `poolfs info` shows an area only while it lives.
        public static let mount = 8
        static let bytes = 4096
    }

    /// A client's words.
    public enum Client {
        public static let pid = 0, readers = 1   // and 2: readers by parity
        public static let bytesRead = 3, bytesWritten = 4, reads = 5, writes = 6
        public static let pins = 8, pinCount = 12
        public static let words = 32
        /// A writable mapping's count in a pin's second word.
        public static let writablePin: UInt64 = 1 << 32
    }

    /// A layout's words; runs follow from `runs`, `Run.words` each.
    public enum Layout {
        public static let generation = 0, inode = 1, size = 2, flags = 3, runCount = 4
        public static let runs = 8
        /// Writes go through the mount: they drop set-ID bits there.
        public static let writesThroughMount: UInt64 = 1
    }

    public enum Run {
        public static let start = 0, length = 1, address = 2, flags = 3
        public static let words = 4
        /// No other owner shares its pages: a direct write may change them.
        public static let writable: UInt64 = 1
    }

    public static let clientCapacity = 256
    public static let layoutCapacity = 4096
    public static let layoutWords = 2048
    public static let maximumRuns = (layoutWords - Layout.runs) / Run.words

    static var length: Int {
        Header.bytes + clientCapacity * Client.words * 8 + layoutCapacity * layoutWords * 8
    }

    let base: UnsafeMutableRawPointer
    let clientCount: Int
    let layoutCount: Int

    /// Maps `length` bytes of `descriptor` (a file already that long).
    init?(descriptor: Int32, length: Int, writable: Bool = true) {
        guard let base = mmap(nil, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, descriptor, 0),
              base != MAP_FAILED else { return nil }
        self.base = base
        clientCount = UnsafeDirectArea.clientCapacity
        layoutCount = UnsafeDirectArea.layoutCapacity
    }

    /// An area found on disk, checked for the format before any word of it
    /// is trusted; nil if it is not one.
    static func mapExisting(descriptor: Int32, writable: Bool = true) -> UnsafeDirectArea? {
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_size == length,
              let area = UnsafeDirectArea(descriptor: descriptor, length: length, writable: writable) else { return nil }
        guard area.header(Header.magic).load(ordering: .acquiring) == magic,
              area.header(Header.version).load(ordering: .relaxed) == version else {
            area.unmap()
            return nil
        }
        return area
    }

    func unmap() { munmap(base, UnsafeDirectArea.length) }

    func formatHeader() {
        header(Header.identity).store(UInt64.random(in: 1...UInt64.max), ordering: .relaxed)
        header(Header.mount).store(UInt64(getpid()), ordering: .relaxed)
        header(Header.version).store(UnsafeDirectArea.version, ordering: .relaxed)
        header(Header.clients).store(UInt64(clientCount), ordering: .relaxed)
        header(Header.layouts).store(UInt64(layoutCount), ordering: .relaxed)
        header(Header.layoutWords).store(UInt64(UnsafeDirectArea.layoutWords), ordering: .relaxed)
        header(Header.magic).store(UnsafeDirectArea.magic, ordering: .releasing)
    }

    private func word(_ index: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (base + index * 8).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }

    func header(_ field: Int) -> UnsafeAtomic<UInt64> { word(field) }

    func client(_ index: Int, _ field: Int) -> UnsafeAtomic<UInt64> {
        word(Header.bytes / 8 + index * Client.words + field)
    }

    func layout(_ slot: Int, _ field: Int) -> UnsafeAtomic<UInt64> {
        word(Header.bytes / 8 + clientCount * Client.words + slot * UnsafeDirectArea.layoutWords + field)
    }

    func run(_ slot: Int, _ index: Int, _ field: Int) -> UnsafeAtomic<UInt64> {
        layout(slot, Layout.runs + index * Run.words + field)
    }

    /// Byte offsets in the file, for a process that maps it itself.
    public static func clientOffset(_ index: Int) -> Int { Header.bytes + index * Client.words * 8 }
    public static func layoutOffset(_ slot: Int) -> Int {
        Header.bytes + clientCapacity * Client.words * 8 + slot * layoutWords * 8
    }
}
