/// A place in the pool that means the same bytes in every process, after every
/// restart and on every node: the shelf number in the top 16 bits and the byte
/// offset inside that shelf's file in the low 48. Zero is never a valid data
/// address (shelf 0 starts with the superblock), so it serves as null.
public struct GlobalAddress: RawRepresentable, Hashable, Comparable, Sendable,
    CustomStringConvertible
{
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public init(shelf: Int, offset: UInt64) {
        precondition(shelf >= 0 && shelf < 1 << 16 && offset < 1 << 48)
        rawValue = UInt64(shelf) << 48 | offset
    }

    public static let null = GlobalAddress(rawValue: 0)

    public var shelf: Int { Int(rawValue >> 48) }
    public var offset: UInt64 { rawValue & (1 << 48 - 1) }
    public var isNull: Bool { rawValue == 0 }

    public func advanced(by bytes: UInt64) -> GlobalAddress {
        GlobalAddress(shelf: shelf, offset: offset + bytes)
    }

    public static func < (a: GlobalAddress, b: GlobalAddress) -> Bool { a.rawValue < b.rawValue }

    /// `3:0x10000`, the form `poolfs` prints and parses.
    public var description: String { "\(shelf):0x\(String(offset, radix: 16))" }

    public init?(_ text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let shelf = Int(parts[0]), shelf >= 0, shelf < 1 << 16 else { return nil }
        let digits = parts[1].hasPrefix("0x") ? parts[1].dropFirst(2) : parts[1]
        guard let offset = UInt64(digits, radix: 16), offset < 1 << 48 else { return nil }
        self.init(shelf: shelf, offset: offset)
    }
}
