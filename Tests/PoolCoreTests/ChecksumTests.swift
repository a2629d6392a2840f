import Testing
@testable import PoolCore

@Suite struct ChecksumTests {
    /// The CPU's crc32 instruction and the table agree, on every length
    /// and alignment, and both give CRC-32C's check value.
    @Test func theInstructionAndTheTableAgree() {
        #expect(Array("123456789".utf8).withUnsafeBytes { CRC32C.checksum($0) } == 0xE306_9283)
        #expect(Array("123456789".utf8).withUnsafeBytes { CRC32C.tableChecksum($0) } == 0xE306_9283)
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<70_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for start in 0..<9 {
                // From 12 KiB on, three lanes joined.
                for count in [0, 1, 7, 8, 9, 63, 64, 65, 4000, 12_287, 12_288, 12_289, 12_311, 65_536, 69_990] {
                    let piece = UnsafeRawBufferPointer(rebasing: all[start..<(start + count)])
                    #expect(CRC32C.checksum(piece) == CRC32C.tableChecksum(piece), "\(start) \(count)")
                }
            }
        }
    }
}
