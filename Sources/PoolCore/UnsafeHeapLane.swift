/// One thread's view of one heap: for each size class, the span it
/// allocates from now (pointer and global address), and on the slow path
/// every span it owns. Private to the thread, so read without atomics.
/// One allocation holds a `Header`, then a span pointer per size class,
/// then the global address of each of those spans.
struct UnsafeHeapLane {
    private struct Header {
        /// The lane's OwnedSpans, retained.
        let spans: UnsafeMutableRawPointer
        /// Who owns this lane's spans: (process slot × lanes + lane) + 1.
        let owner: UInt64
    }

    private static let spansOffset = MemoryLayout<Header>.stride
    private static let addressesOffset = spansOffset + SizeClass.count * MemoryLayout<UnsafeMutableRawPointer?>.stride
    private static let totalBytes = addressesOffset + SizeClass.count * MemoryLayout<UInt64>.stride

    let raw: UnsafeMutableRawPointer

    init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }

    static func allocate(owner: UInt64) -> UnsafeHeapLane {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: totalBytes, alignment: MemoryLayout<Header>.alignment)
        let spans = Unmanaged.passRetained(OwnedSpans()).toOpaque()
        raw.initializeMemory(as: Header.self, repeating: Header(spans: spans, owner: owner), count: 1)
        (raw + spansOffset).initializeMemory(as: UnsafeMutableRawPointer?.self, repeating: nil, count: SizeClass.count)
        (raw + addressesOffset).initializeMemory(as: UInt64.self, repeating: 0, count: SizeClass.count)
        return UnsafeHeapLane(raw)
    }

    func deallocate() {
        Unmanaged<OwnedSpans>.fromOpaque(header.pointee.spans).release()
        raw.deallocate()
    }

    private var header: UnsafeMutablePointer<Header> { raw.assumingMemoryBound(to: Header.self) }

    @inline(__always)
    private var currentSpans: UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        (raw + UnsafeHeapLane.spansOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    @inline(__always)
    private var currentAddresses: UnsafeMutablePointer<UInt64> {
        (raw + UnsafeHeapLane.addressesOffset).assumingMemoryBound(to: UInt64.self)
    }

    /// Who owns this lane's spans: (process slot × lanes + lane) + 1.
    @inline(__always) var owner: UInt64 { header.pointee.owner }

    var spans: OwnedSpans {
        Unmanaged<OwnedSpans>.fromOpaque(header.pointee.spans).takeUnretainedValue()
    }

    @inline(__always)
    func current(_ sizeClass: Int) -> UnsafeSpan? {
        currentSpans[sizeClass].map { UnsafeSpan(base: $0) }
    }

    @inline(__always)
    func currentAddress(_ sizeClass: Int) -> UInt64 { currentAddresses[sizeClass] }

    func setCurrent(_ sizeClass: Int, _ span: UnsafeSpan?, address: UInt64) {
        currentSpans[sizeClass] = span?.base
        currentAddresses[sizeClass] = address
    }
}

/// The spans a lane owns, per size class, by global address, and those of
/// them that its own frees gave room since they ran out (tried first).
final class OwnedSpans {
    // Touched by one thread only: no dynamic exclusivity checks needed.
    @exclusivity(unchecked) var byClass = [[UInt64]](repeating: [], count: SizeClass.count)
    @exclusivity(unchecked) var withRoom = [[UInt64]](repeating: [], count: SizeClass.count)
}
