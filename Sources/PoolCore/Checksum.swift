/// FNV-1a, 64 bits: enough to tell a torn or foreign record from a good one.
enum Checksum {
    static func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    static func of(_ file: MappedFile, offset: Int, count: Int) -> UInt64 {
        file.withBytes(at: offset, count: count) { fnv1a(UnsafeRawBufferPointer($0)) }
    }
}
