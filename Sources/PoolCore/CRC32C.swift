import CLinux

/// CRC-32C (Castagnoli), as ext4, btrfs and iSCSI check their metadata:
/// it finds every burst of up to 32 flipped bits in a record.
public enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    /// The CPU's crc32 instruction, where it has one (CLinux's shim).
    private static let hardware = CLinux_crc32c_available() != 0

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        if hardware, let base = bytes.baseAddress { return ~CLinux_crc32c_update(0xFFFF_FFFF, base, bytes.count) }
        return tableChecksum(bytes)
    }

    /// A byte at a time, by table: any CPU.
    static func tableChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int(UInt8(truncatingIfNeeded: crc) ^ byte)] ^ (crc >> 8) }
        }
        return ~crc
    }
}
