import CUCX

/// Memory registered with a UCX context (ucp_mem_map of memory already
/// there): transfers that name its handle skip UCX's own lookup, and on
/// RDMA verbs its pages stay pinned, the registration paid once. Unmapped
/// when dropped.
final class UCXMemory {
    let handle: ucp_mem_h
    let start: UnsafeRawPointer
    let count: Int
    private let context: OpaquePointer

    init(_ buffer: UnsafeRawBufferPointer, context: OpaquePointer) throws(NetError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else {
            throw .invalidSize("\(buffer.count) bytes", reason: "registered memory holds at least one byte")
        }
        var params = ucp_mem_map_params_t()
        params.field_mask = UInt64(UCP_MEM_MAP_PARAM_FIELD_ADDRESS.rawValue | UCP_MEM_MAP_PARAM_FIELD_LENGTH.rawValue)
        params.address = UnsafeMutableRawPointer(mutating: base)
        params.length = buffer.count
        var handle: ucp_mem_h?
        try UCX.check("ucp_mem_map", ucp_mem_map(context, &params, &handle))
        self.handle = handle!
        self.context = context
        start = base
        count = buffer.count
    }

    deinit { ucp_mem_unmap(context, handle) }

    func contains(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress else { return false }
        return base >= start && base + buffer.count <= start + count
    }
}

/// Lunasa's two kinds of registered memory for one context. Eager: buffers
/// registered once, for good (the mount's cache window, data objects'
/// arena). Lazy: a caller's buffer registered the first time a transfer of
/// at least `lazyMinimum` bytes uses it and kept for the next, the least
/// lately used dropped past `lazyCapacity` bytes. Smaller transfers go
/// eager with their message, copied: registering them would cost more.
public final class RegistrationCache {
    public enum Mode: Sendable {
        /// Registered once, reused (Lunasa's way).
        case cached
        /// Registered and unregistered around each transfer, to measure what reuse saves.
        case perTransfer
    }

    static let lazyMinimum = 64 << 10
    static let lazyCapacity = 1 << 30
    private let context: OpaquePointer
    private var eager: [UCXMemory] = []
    /// Least lately used first.
    private var lazy: [UCXMemory] = []
    private var lazyBytes = 0
    var mode = Mode.cached
    /// Registrations made, and transfers that found theirs.
    private(set) var registrations = 0
    private(set) var reuses = 0

    init(context: OpaquePointer) { self.context = context }

    func registerEager(_ buffer: UnsafeRawBufferPointer) throws(NetError) -> UCXMemory {
        let memory = try UCXMemory(buffer, context: context)
        eager.append(memory)
        registrations += 1
        return memory
    }

    /// Drops the registrations that overlap `buffer` (lazy ones; eager
    /// ones too if told): memory about to be freed, whose addresses may
    /// come back as other memory.
    func forget(_ buffer: UnsafeRawBufferPointer, eagerToo: Bool = false) {
        guard let base = buffer.baseAddress else { return }
        func overlaps(_ memory: UCXMemory) -> Bool {
            memory.start < base + buffer.count && base < memory.start + memory.count
        }
        lazy.removeAll { memory in
            guard overlaps(memory) else { return false }
            lazyBytes -= memory.count
            return true
        }
        if eagerToo { eager.removeAll(where: overlaps) }
    }

    func dropAll() {
        eager.removeAll()
        lazy.removeAll()
        lazyBytes = 0
    }

    /// The handle a transfer of `buffer` names, nil to let UCX decide; a
    /// per-transfer registration is kept alive in `holding` until the
    /// transfer is done.
    func handle(for buffer: UnsafeRawBufferPointer, holding: inout [UCXMemory]) throws(NetError) -> ucp_mem_h? {
        guard buffer.count >= Self.lazyMinimum else { return nil }
        if let memory = eager.first(where: { $0.contains(buffer) }) {
            reuses += 1
            return memory.handle
        }
        if mode == .perTransfer {
            let memory = try UCXMemory(buffer, context: context)
            registrations += 1
            holding.append(memory)
            return memory.handle
        }
        if let index = lazy.lastIndex(where: { $0.contains(buffer) }) {
            let memory = lazy.remove(at: index)
            lazy.append(memory)
            reuses += 1
            return memory.handle
        }
        let memory = try UCXMemory(buffer, context: context)
        registrations += 1
        lazy.append(memory)
        lazyBytes += memory.count
        while lazyBytes > Self.lazyCapacity, lazy.count > 1 {
            // Kept until the batch is done: an earlier transfer of it may name it.
            let dropped = lazy.removeFirst()
            lazyBytes -= dropped.count
            holding.append(dropped)
        }
        return memory.handle
    }
}
