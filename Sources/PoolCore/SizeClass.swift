/// Heap size classes: 16-byte steps up to 128 bytes, then four classes per
/// doubling up to 256 KiB (at most 25% internal waste). Bigger objects get a
/// page run of their own.
enum SizeClass {
    static let maximumSmall = 256 << 10
    static let sizes: [Int] = {
        var sizes = Array(stride(from: 16, through: 128, by: 16))
        var base = 128
        while base < maximumSmall {
            for step in 1...4 { sizes.append(base + step * base / 4) }
            base *= 2
        }
        return sizes
    }()
    static let count = sizes.count
    /// The class of each size up to 1 KiB, by (size + 15) / 16.
    private static let small: [UInt8] = (0...64).map { UInt8(classSlow($0 * 16)) }
    /// The class recorded in a span that holds one large object.
    static let large = 0xffff

    @inline(__always)
    static func of(_ size: Int) -> Int {
        precondition(size >= 0 && size <= maximumSmall)
        if size <= 1024 { return Int(small.withUnsafeBufferPointer { $0[(size + 15) >> 4] }) }
        return classSlow(size)
    }

    private static func classSlow(_ size: Int) -> Int {
        if size <= 16 { return 0 }
        if size <= 128 { return (size + 15) / 16 - 1 }
        let bits = Int.bitWidth - (size - 1).leadingZeroBitCount   // size <= 1 << bits
        let base = 1 << (bits - 1)
        let step = (size - base + base / 4 - 1) / (base / 4)           // 1...4
        return 8 + (bits - 8) * 4 + step - 1
    }

    /// Pages of a span of this class: room for at least 8 objects and 64 KiB.
    static func spanPages(_ sizeClass: Int, pageSize: Int) -> Int {
        let bytes = max(64 << 10, UnsafeSpan.headerSize + 8 * sizes[sizeClass])
        return (bytes + pageSize - 1) / pageSize
    }
}
