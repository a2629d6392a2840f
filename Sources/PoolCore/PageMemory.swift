/// Rcmp's page-level calls, the same on a pool open in this process and on
/// one a memory node serves (PoolNet's `RemotePool`): code written against
/// this protocol runs against either. Addresses are `GlobalAddress`es of the
/// pool that holds the pages; word operations take 8-byte aligned addresses.
public protocol PageMemory: AnyObject, Sendable {
    /// The page allocator's unit, in bytes.
    var pageSize: Int { get }
    /// Allocates `count` contiguous pages; they stay allocated until freed.
    func allocatePages(count: Int) throws -> GlobalAddress
    /// Frees a run that `allocatePages(count:)` returned, with the same count.
    func freePages(at address: GlobalAddress, count: Int) throws
    func read(at address: GlobalAddress, into buffer: UnsafeMutableRawBufferPointer) throws
    func write(at address: GlobalAddress, from buffer: UnsafeRawBufferPointer) throws
    /// Replaces the word at `address` with `desired` if it holds `expected`;
    /// returns whether it did and the value it found, as one atomic step.
    func compareAndSwap(at address: GlobalAddress, expected: UInt64, desired: UInt64) throws
        -> (exchanged: Bool, original: UInt64)
    /// Adds `value` to the word at `address` (wrapping) and returns the word
    /// it held before, as one atomic step.
    func fetchAndAdd(at address: GlobalAddress, _ value: UInt64) throws -> UInt64
}

extension PageMemory {
    public func read(at address: GlobalAddress, count: Int) throws -> [UInt8] {
        guard count >= 0 else { throw PoolError.invalidSize("\(count)", reason: "a byte count is not negative") }
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(at: address, into: $0) }
        return bytes
    }

    public func write(at address: GlobalAddress, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(at: address, from: $0) }
    }
}

extension Pool: PageMemory {}
