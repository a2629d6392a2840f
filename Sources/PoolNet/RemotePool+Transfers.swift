import CUCX
import PoolCore

/// Reads, writes, CAS and fetch-add, each a call the node answers (see
/// NodeCall for why not one-sided): the bytes go beside the call's message,
/// straight between the caller's buffer and pool memory, by rendezvous when
/// large. A batch keeps all its calls in flight at once.
extension RemotePool {
    public func read(at address: GlobalAddress, into buffer: UnsafeMutableRawBufferPointer) throws {
        try read([(address, buffer)])
    }

    /// Several reads in flight at once (a queue depth of `batch.count`),
    /// all done when it returns.
    public func read(_ batch: [(GlobalAddress, UnsafeMutableRawBufferPointer)]) throws {
        try transfer(batch.map { Outgoing(call: .read($0.0, count: $0.1.count), into: $0.1) }, "read")
    }

    /// Returns once the bytes are in the node's pool (and persisted, on a
    /// pmem shelf): a write that returned survives a kill -9 of the node.
    public func write(at address: GlobalAddress, from buffer: UnsafeRawBufferPointer) throws {
        try write([(address, buffer)])
    }

    /// Several writes in flight at once, all in the node's pool when it returns.
    public func write(_ batch: [(GlobalAddress, UnsafeRawBufferPointer)]) throws {
        try transfer(batch.map { Outgoing(call: .write($0.0, count: $0.1.count), payload: $0.1) }, "write")
    }

    public func compareAndSwap(at address: GlobalAddress, expected: UInt64, desired: UInt64) throws
        -> (exchanged: Bool, original: UInt64)
    {
        let original = try atomic(.compareAndSwap(address, expected: expected, desired: desired), at: address,
                                  "compare-and-swap")
        return (original == expected, original)
    }

    public func fetchAndAdd(at address: GlobalAddress, _ value: UInt64) throws -> UInt64 {
        try atomic(.fetchAndAdd(address, value), at: address, "fetch-and-add")
    }

    /// Every range checked first, then every call sent: nothing is in
    /// flight when a check fails.
    private func transfer(_ calls: [Outgoing], _ what: String) throws {
        try lock.withLock {
            try withLink(what) { link, deadline throws(NetError) in
                var holding: [UCXMemory] = []
                defer { withExtendedLifetime(holding) {} }
                var calls = calls.filter { ($0.payload?.count ?? $0.into?.count ?? 0) > 0 }
                for i in calls.indices {
                    let buffer = calls[i].payload ?? calls[i].into.map(UnsafeRawBufferPointer.init)!
                    calls[i].memory = try registrations.handle(for: buffer, holding: &holding)
                }
                for outgoing in calls {
                    switch outgoing.call {
                    case let .read(address, count), let .write(address, count):
                        try check(address, count: count, on: link, by: deadline)
                    default: break
                    }
                }
                guard !calls.isEmpty else { return }
                _ = try exchange(calls, what, on: link, by: deadline)
            }
        }
    }

    private func atomic(_ call: NodeCall, at address: GlobalAddress, _ what: String) throws -> UInt64 {
        guard address.offset & 7 == 0 else { throw NetError.invalidAddress(address, reason: "not 8-byte aligned") }
        return try lock.withLock {
            try withLink(what) { link, deadline throws(NetError) in
                try check(address, count: 8, on: link, by: deadline)
                guard case let .word(original) = try exchange(call, what, on: link, by: deadline) else {
                    throw NetError.protocolViolation("the node answered \(what) with something else")
                }
                return original
            }
        }
    }
}
