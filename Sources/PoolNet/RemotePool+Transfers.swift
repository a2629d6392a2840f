import CUCX
import PoolCore

/// Reads, writes, CAS and fetch-add: one-sided, the node's CPU untouched
/// where the fabric does RDMA (over TCP, UCX emulates them in the node's
/// serving thread).
extension RemotePool {
    public func read(at address: GlobalAddress, into buffer: UnsafeMutableRawBufferPointer) throws {
        try read([(address, buffer)])
    }

    /// Reads from this size up are asked of the node, which sends the bytes
    /// by rendezvous (zero-copy where the fabric allows) instead of a
    /// one-sided read: UCX emulates those over TCP at a quarter of the speed.
    static let largeRead = 128 << 10

    /// Several reads in flight at once (a queue depth of `batch.count`),
    /// all done when it returns.
    public func read(_ batch: [(GlobalAddress, UnsafeMutableRawBufferPointer)]) throws {
        try lock.withLock {
            try withLink("read") { link, deadline throws(NetError) in
                var requests: [UnsafeMutableRawPointer?] = []
                requests.reserveCapacity(batch.count)
                for (address, buffer) in batch where buffer.count > 0 && buffer.count < Self.largeRead {
                    let target = try locate(address, count: buffer.count, on: link, by: deadline)
                    var param = ucp_request_param_t()
                    requests.append(ucp_get_nbx(link.endpoint, buffer.baseAddress, buffer.count, target.remote,
                                                target.key, &param))
                }
                try finish(requests, "read", by: deadline)
                for (address, buffer) in batch where buffer.count >= Self.largeRead {
                    _ = try locate(address, count: buffer.count, on: link, by: deadline)
                    _ = try exchange(.read(address, count: buffer.count), "read", on: link, by: deadline, into: buffer)
                }
            }
        }
    }

    /// Returns once the bytes are in the node's memory (and, on a pmem
    /// shelf, persisted there): a write that returned survives a kill -9
    /// of the node.
    public func write(at address: GlobalAddress, from buffer: UnsafeRawBufferPointer) throws {
        try write([(address, buffer)])
    }

    /// Several writes in flight at once, all in the node's memory when it
    /// returns (one flush for the lot).
    public func write(_ batch: [(GlobalAddress, UnsafeRawBufferPointer)]) throws {
        try lock.withLock {
            try withLink("write") { link, deadline throws(NetError) in
                var requests: [UnsafeMutableRawPointer?] = []
                requests.reserveCapacity(batch.count + 1)
                var persistent: [(GlobalAddress, Int)] = []
                for (address, buffer) in batch where buffer.count > 0 {
                    let target = try locate(address, count: buffer.count, on: link, by: deadline)
                    var param = ucp_request_param_t()
                    requests.append(ucp_put_nbx(link.endpoint, buffer.baseAddress, buffer.count, target.remote,
                                                target.key, &param))
                    if target.shelf.persistent { persistent.append((address, buffer.count)) }
                }
                guard !requests.isEmpty else { return }
                // The flush completes when every put before it reached the node.
                var param = ucp_request_param_t()
                requests.append(ucp_ep_flush_nbx(link.endpoint, &param))
                try finish(requests, "write", by: deadline)
                for (address, count) in persistent {
                    _ = try exchange(.persist(address, count: count), "persist", on: link, by: deadline)
                }
            }
        }
    }

    public func compareAndSwap(at address: GlobalAddress, expected: UInt64, desired: UInt64) throws
        -> (exchanged: Bool, original: UInt64)
    {
        let original = try atomic(UCP_ATOMIC_OP_CSWAP, at: address, operand: expected, swap: desired, "compare-and-swap")
        return (original == expected, original)
    }

    public func fetchAndAdd(at address: GlobalAddress, _ value: UInt64) throws -> UInt64 {
        try atomic(UCP_ATOMIC_OP_ADD, at: address, operand: value, swap: 0, "fetch-and-add")
    }

    /// One 64-bit atomic. UCX takes the operand (CAS: the expected value)
    /// in `buffer`, and the reply buffer carries CAS's new value in and the
    /// word's old value out.
    private func atomic(_ operation: ucp_atomic_op_t, at address: GlobalAddress, operand: UInt64, swap: UInt64,
                        _ what: String) throws -> UInt64 {
        guard address.offset & 7 == 0 else { throw NetError.invalidAddress(address, reason: "not 8-byte aligned") }
        return try lock.withLock {
            try withLink(what) { link, deadline throws(NetError) in
                let target = try locate(address, count: 8, on: link, by: deadline)
                var operand = operand
                var reply = swap
                try withUnsafeMutablePointer(to: &reply) { reply throws(NetError) in
                    var param = ucp_request_param_t()
                    param.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_DATATYPE.rawValue | UCP_OP_ATTR_FIELD_REPLY_BUFFER.rawValue)
                    param.datatype = CUCX_dt_contig(8)
                    param.reply_buffer = UnsafeMutableRawPointer(reply)
                    let request = ucp_atomic_op_nbx(link.endpoint, operation, &operand, 1, target.remote, target.key, &param)
                    try finish([request], what, by: deadline)
                }
                return reply
            }
        }
    }
}
