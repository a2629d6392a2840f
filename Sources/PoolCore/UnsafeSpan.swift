import Atomics

/// A span: a run of pages that holds objects of one size class of one heap,
/// with its header in the first 128 bytes. Links in free lists are byte
/// offsets from the span's start, the same in every process.
///
/// Fields and who writes them:
/// - `identity`, `blockSize`, `capacity`: fixed when the span is made.
/// - `owner`: the lane that allocates from it (0: abandoned); changed by the
///   owner when it gives the span up, and under the global lock on adoption.
/// - `localFree`, `bump`, `used`: the owner only, without atomics.
/// - `remoteFree`: anyone pushes with CAS; the owner takes the whole list.
/// Invariant: used == bump − |localFree|: blocks on the remote list still
/// count as used until the owner drains them.
struct UnsafeSpan {
    static let headerSize = 128
    static let magic: UInt64 = 0x4e41_5053   // "SPAN"

    let base: UnsafeMutableRawPointer

    private enum Field: Int {
        case identity = 0, owner = 8, geometry = 16, localFree = 24, bump = 32, used = 40
        case remoteFree = 48, next = 56, reciprocal = 64
    }

    @inline(__always)
    private func word(_ field: Field) -> UnsafeMutablePointer<UInt64> {
        (base + field.rawValue).assumingMemoryBound(to: UInt64.self)
    }

    @inline(__always)
    private func atomic(_ field: Field) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (base + field.rawValue).assumingMemoryBound(to: UnsafeAtomic<UInt64>.Storage.self))
    }

    static func format(_ base: UnsafeMutableRawPointer, heap: Int, sizeClass: Int, blockSize: Int,
                       capacity: Int, owner: UInt64) -> UnsafeSpan {
        let span = UnsafeSpan(base: base)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: headerSize)
        span.word(.geometry).pointee = UInt64(blockSize) | UInt64(capacity) << 32
        span.word(.reciprocal).pointee = (1 << 48) / UInt64(blockSize) + 1
        span.atomic(.owner).store(owner, ordering: .relaxed)
        span.atomic(.identity).store(magic | UInt64(sizeClass) << 32 | UInt64(heap) << 48, ordering: .releasing)
        return span
    }

    var isSpan: Bool { word(.identity).pointee & 0xffff_ffff == UnsafeSpan.magic }
    var sizeClass: Int { Int(word(.identity).pointee >> 32 & 0xffff) }
    var heap: Int { Int(word(.identity).pointee >> 48) }
    @inline(__always) var blockSize: Int { Int(word(.geometry).pointee & 0xffff_ffff) }
    @inline(__always) var capacity: Int { Int(word(.geometry).pointee >> 32) }

    var owner: UInt64 {
        @inline(__always) get { atomic(.owner).load(ordering: .acquiring) }
        nonmutating set { atomic(.owner).store(newValue, ordering: .releasing) }
    }

    @inline(__always) var used: Int {
        get { Int(word(.used).pointee) }
        nonmutating set { word(.used).pointee = UInt64(newValue) }
    }

    var bump: Int { Int(word(.bump).pointee) }
    var next: UInt64 {
        get { word(.next).pointee }
        nonmutating set { word(.next).pointee = newValue }
    }
    var hasRemoteFree: Bool { atomic(.remoteFree).load(ordering: .relaxed) != 0 }
    /// Free blocks at hand (not counting undrained remote frees).
    var freeCount: Int { capacity - used }
    /// Enough free blocks to be worth switching to: switching to spans with
    /// one free block each would put the slow path on every allocation.
    var isWorthUsing: Bool { freeCount >= max(1, capacity / 8) }
    var isExhausted: Bool { word(.localFree).pointee == 0 && word(.bump).pointee >= UInt64(capacity) }

    /// The block a byte `relative` past the header falls in: a multiply by a
    /// stored reciprocal instead of a division (exact below 2^30 bytes).
    @inline(__always)
    func blockIndex(_ relative: Int) -> Int {
        let product = UInt64(relative).multipliedFullWidth(by: word(.reciprocal).pointee)
        return Int(product.high << 16 | product.low >> 48)
    }

    /// Offset of block `index` from the span's start.
    @inline(__always)
    static func offset(ofBlock index: Int, size: Int) -> Int { headerSize + index * size }

    // MARK: Owner's fast path

    /// Takes a free block (the owner only); its offset, or nil when none.
    @inline(__always)
    func pop() -> Int? {
        let head = word(.localFree).pointee
        if head != 0 {
            word(.localFree).pointee = (base + Int(head)).load(as: UInt64.self)
            word(.used).pointee &+= 1
            return Int(head)
        }
        let bump = word(.bump).pointee
        guard bump < UInt64(capacity) else { return nil }
        word(.bump).pointee = bump + 1
        word(.used).pointee &+= 1
        return UnsafeSpan.offset(ofBlock: Int(bump), size: blockSize)
    }

    /// The block `pop` would take next, without taking it.
    func peek() -> Int? {
        let head = word(.localFree).pointee
        if head != 0 { return Int(head) }
        let bump = word(.bump).pointee
        return bump < UInt64(capacity) ? UnsafeSpan.offset(ofBlock: Int(bump), size: blockSize) : nil
    }

    /// True when the block at `offset` is free: on a list or never handed out.
    func isFree(_ offset: Int) -> Bool {
        let index = (offset - UnsafeSpan.headerSize) / blockSize
        if index >= bump { return true }
        return (localFreeBlocks ?? []).contains(offset) || (remoteFreeBlocks ?? []).contains(offset)
    }

    /// Gives a block back (the owner only).
    @inline(__always)
    func pushLocal(_ offset: Int) {
        (base + offset).storeBytes(of: word(.localFree).pointee, as: UInt64.self)
        word(.localFree).pointee = UInt64(offset)
        word(.used).pointee &-= 1
    }

    /// Gives a block back from another lane or process: one CAS.
    func pushRemote(_ offset: Int) {
        let head = atomic(.remoteFree)
        var expected = head.load(ordering: .relaxed)
        while true {
            (base + offset).storeBytes(of: expected, as: UInt64.self)
            let (done, found) = head.weakCompareExchange(expected: expected, desired: UInt64(offset),
                                                         successOrdering: .releasing, failureOrdering: .relaxed)
            if done { return }
            expected = found
        }
    }

    /// Moves every remotely freed block to the local list (the owner only).
    @discardableResult
    func drainRemote() -> Int {
        var offset = atomic(.remoteFree).exchange(0, ordering: .acquiring)
        var count = 0
        while offset != 0 {
            let next = (base + Int(offset)).load(as: UInt64.self)
            pushLocal(Int(offset))
            offset = next
            count += 1
        }
        return count
    }

    // MARK: Checking and recovery

    /// The offsets on a free list, or nil when it is damaged (a link out of
    /// range, misaligned, or a cycle).
    private func walk(_ head: UInt64) -> [Int]? {
        var offsets: [Int] = []
        var offset = head
        let size = blockSize
        guard size > 0, capacity > 0 else { return head == 0 ? [] : nil }
        while offset != 0 {
            let relative = Int(offset) - UnsafeSpan.headerSize
            guard relative >= 0, relative % size == 0, relative / size < bump, offsets.count <= capacity else { return nil }
            offsets.append(Int(offset))
            offset = (base + Int(offset)).load(as: UInt64.self)
        }
        return offsets
    }

    var localFreeBlocks: [Int]? { walk(word(.localFree).pointee) }
    var remoteFreeBlocks: [Int]? { walk(atomic(.remoteFree).load(ordering: .acquiring)) }

    /// Recounts `used` from the lists, after its owner died mid-update.
    /// False when a list is damaged or a block is on two lists.
    func recount() -> Bool {
        guard let local = localFreeBlocks, let remote = remoteFreeBlocks,
              Set(local + remote).count == local.count + remote.count
        else { return false }
        used = bump - local.count
        return true
    }
}
