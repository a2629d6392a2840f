/// One thread's view of one heap: for each size class, the span it
/// allocates from now (pointer and global address), and on the slow path
/// every span it owns. Private to the thread, so read without atomics.
/// Layout, in words: [spans object][owner id][pointer per class][address per class].
struct UnsafeHeapLane {
    let words: UnsafeMutablePointer<UInt64>

    init(_ raw: UnsafeMutableRawPointer) { words = raw.assumingMemoryBound(to: UInt64.self) }

    var raw: UnsafeMutableRawPointer { UnsafeMutableRawPointer(words) }

    private static let total = 2 + 2 * SizeClass.count

    static func allocate(owner: UInt64) -> UnsafeHeapLane {
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: total)
        words.initialize(repeating: 0, count: total)
        words[0] = UInt64(UInt(bitPattern: Unmanaged.passRetained(OwnedSpans()).toOpaque()))
        words[1] = owner
        return UnsafeHeapLane(UnsafeMutableRawPointer(words))
    }

    func deallocate() {
        Unmanaged<OwnedSpans>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(words[0]))!).release()
        words.deallocate()
    }

    /// Who owns this lane's spans: (process slot × lanes + lane) + 1.
    @inline(__always) var owner: UInt64 { words[1] }

    var spans: OwnedSpans {
        Unmanaged<OwnedSpans>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(words[0]))!).takeUnretainedValue()
    }

    @inline(__always)
    func current(_ sizeClass: Int) -> UnsafeSpan? {
        let raw = words[2 + sizeClass]
        return raw == 0 ? nil : UnsafeSpan(base: UnsafeMutableRawPointer(bitPattern: UInt(raw))!)
    }

    @inline(__always)
    func currentAddress(_ sizeClass: Int) -> UInt64 { words[2 + SizeClass.count + sizeClass] }

    func setCurrent(_ sizeClass: Int, _ span: UnsafeSpan?, address: UInt64) {
        words[2 + sizeClass] = span.map { UInt64(UInt(bitPattern: $0.base)) } ?? 0
        words[2 + SizeClass.count + sizeClass] = address
    }
}

/// The spans a lane owns, per size class, by global address, and those of
/// them that its own frees gave room since they ran out (tried first).
final class OwnedSpans {
    // Touched by one thread only: no dynamic exclusivity checks needed.
    @exclusivity(unchecked) var byClass = [[UInt64]](repeating: [], count: SizeClass.count)
    @exclusivity(unchecked) var withRoom = [[UInt64]](repeating: [], count: SizeClass.count)
}
