import PoolCore

/// Little-endian encoding of the memory-node protocol's messages.
struct WireWriter {
    private(set) var bytes: [UInt8] = []

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    mutating func i32(_ value: Int32) { u32(UInt32(bitPattern: value)) }
    mutating func address(_ value: GlobalAddress) { u64(value.rawValue) }
    mutating func data(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes += value
    }
    mutating func string(_ value: String) { data(Array(value.utf8)) }
}

/// Reads what WireWriter wrote; any shortfall or excess is a protocol
/// violation, never a trap: these bytes come from the network.
struct WireReader {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { position == bytes.count }

    private mutating func take(_ count: Int) throws(NetError) -> ArraySlice<UInt8> {
        guard count >= 0, bytes.count - position >= count else {
            throw .protocolViolation("a message of \(bytes.count) bytes ends early")
        }
        defer { position += count }
        return bytes[position..<position + count]
    }

    mutating func u8() throws(NetError) -> UInt8 { try take(1).first! }

    mutating func u32() throws(NetError) -> UInt32 {
        try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func u64() throws(NetError) -> UInt64 {
        try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func i32() throws(NetError) -> Int32 { Int32(bitPattern: try u32()) }
    mutating func address() throws(NetError) -> GlobalAddress { GlobalAddress(rawValue: try u64()) }

    mutating func data(atMost limit: Int = 1 << 16) throws(NetError) -> [UInt8] {
        let count = Int(try u32())
        guard count <= limit else { throw .protocolViolation("a field of \(count) bytes, more than \(limit)") }
        return Array(try take(count))
    }

    mutating func string() throws(NetError) -> String {
        String(decoding: try data(atMost: 4096), as: UTF8.self)
    }

    func finish() throws(NetError) {
        guard isAtEnd else { throw .protocolViolation("\(bytes.count - position) bytes after the end of a message") }
    }
}
