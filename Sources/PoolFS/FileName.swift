#if canImport(Glibc)
import Glibc
#endif

/// A name in a directory, or an extended attribute's name: bytes, kept and
/// compared exactly as the kernel gave them. Linux names are any bytes but
/// `/` and NUL, not text: a `String` would turn bytes that are not UTF-8
/// into U+FFFD (two names becoming one) and compare by Unicode
/// equivalence (precomposed and decomposed "é" becoming one).
public struct FileName: Hashable, Sendable, Comparable, ExpressibleByStringInterpolation,
                       CustomStringConvertible {
    public let bytes: [UInt8]

    public init(_ bytes: some Sequence<UInt8>) { self.bytes = Array(bytes) }
    public init(_ string: String) { bytes = Array(string.utf8) }
    public init(stringLiteral value: String) { self.init(value) }
    public init(stringInterpolation: DefaultStringInterpolation) { self.init(String(stringInterpolation: stringInterpolation)) }

    /// The bytes up to a C string's NUL, copied at once (every request
    /// that names an entry makes one).
    public init(cString: UnsafePointer<CChar>) {
        bytes = Array(UnsafeRawBufferPointer(start: cString, count: strlen(cString)))
    }

    /// The bytes in one call, not one call a byte as Array's hash does.
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    public static func == (a: FileName, b: FileName) -> Bool { a.bytes == b.bytes }

    /// For messages only: bytes that are not UTF-8 show as U+FFFD.
    public var description: String { String(decoding: bytes, as: UTF8.self) }

    public var count: Int { bytes.count }
    public var isEmpty: Bool { bytes.isEmpty }

    public func hasPrefix(_ prefix: String) -> Bool { bytes.starts(with: prefix.utf8) }

    /// Bytewise, as `ls` in the C locale sorts.
    public static func < (a: FileName, b: FileName) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    /// The bytes with a NUL after them, for a C call (on the stack: a
    /// readdir reply makes one per entry).
    public func withCString<T>(_ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        try withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
            buffer[bytes.count] = 0
            return try body(UnsafePointer(buffer.baseAddress!))
        }
    }
}
