import Atomics
import DirectFormat
#if canImport(Glibc)
import Glibc
#endif

/// The file `direct` beside a mounted pool's shelves (DirectAreaFormat),
/// mapped shared by the mount and by every process with direct access
/// (libpoolfs-direct.so): where the mount publishes the runs of the files
/// those processes lease, and where they say when they are copying. The
/// one place in PoolFS that holds raw pointers into it. Every word is a
/// UInt64 read and written atomically.
public struct UnsafeDirectArea: @unchecked Sendable {
    public typealias Header = DirectAreaFormat.Header
    public typealias Client = DirectAreaFormat.Client
    public typealias Layout = DirectAreaFormat.Layout
    public typealias Run = DirectAreaFormat.Run
    public static let fileName = DirectAreaFormat.fileName
    static let magic = DirectAreaFormat.magic
    static let version = DirectAreaFormat.version
    public static let clientCapacity = DirectAreaFormat.clientCapacity
    public static let layoutCapacity = DirectAreaFormat.layoutCapacity
    public static let layoutWords = DirectAreaFormat.layoutWords
    public static let maximumRuns = DirectAreaFormat.maximumRuns
    static var length: Int { DirectAreaFormat.length }

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
}
