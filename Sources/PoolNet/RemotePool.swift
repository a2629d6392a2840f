import CUCX
import PoolCore
import PoolThreads
#if canImport(Glibc)
import Glibc
#endif

/// Rcmp's client API: a pool that a memory node serves, used from another
/// machine, by the same `GlobalAddress`es a local `Pool` uses. Every call
/// (allocation, regions, reads, writes, CAS, fetch-add) is answered by the
/// node, the bytes travelling beside it.
///
/// Every call has a deadline (2 s unless told): a node that is killed,
/// stopped or cut off makes calls fail with `NetError` within it, never
/// hang. The next call connects again by itself. Calls from several threads
/// take turns on one connection; give each thread its own `RemotePool` for
/// calls side by side.
public final class RemotePool: PageMemory, @unchecked Sendable {
    public let node: NodeAddress
    /// Seconds each call may take, connecting again included.
    public let deadlineSeconds: Double
    public let pageSize: Int
    /// The name and UUID of the pool the node serves.
    public let poolName: String
    public let poolUUID: String

    let key: NodeKey
    let lock = ThreadMutex()
    let worker: UCXWorker
    let events = UCXEvents()
    /// Lunasa's registered memory: eager buffers and the lazy cache (lock).
    let registrations: RegistrationCache
    /// Eager data objects' registered memory, made at the first (lock).
    var arena: ObjectArena?
    var link: RemoteLink?
    /// Set by close(): no call connects again.
    var isClosed = false
    var nextRequest: UInt64 = 1
    var lastTraffic = Deadline.now()
    private var heartbeat: PeriodicThread?

    /// Connects and proves the key; throws if the node cannot be reached
    /// within the deadline or refuses.
    public init(connectingTo node: NodeAddress, key: NodeKey, deadlineSeconds: Double = 2) throws {
        guard deadlineSeconds.isFinite, deadlineSeconds > 0, deadlineSeconds <= 86_400 else {
            throw NetError.invalidSize("a deadline of \(deadlineSeconds) s", reason: "give 0 to 86400 seconds")
        }
        self.node = node
        self.key = key
        self.deadlineSeconds = deadlineSeconds
        worker = try UCXWorker(serving: false)
        registrations = RegistrationCache(context: worker.context)
        try worker.receiveMessages(into: events)
        let first = try RemoteLink.open(to: node, key: key, worker: worker, events: events,
                                        by: .after(seconds: deadlineSeconds), expecting: nil)
        link = first
        pageSize = first.pool.pageSize
        poolName = first.pool.name
        poolUUID = first.pool.uuid
        heartbeat = PeriodicThread(periodMilliseconds: Int32(Self.heartbeatMilliseconds)) { [weak self] in
            self?.beat()
        }
    }

    public static func connect(to node: String, key: NodeKey, deadlineSeconds: Double = 2) throws -> RemotePool {
        try RemotePool(connectingTo: NodeAddress(node), key: key, deadlineSeconds: deadlineSeconds)
    }

    deinit { close() }

    /// Stops the heartbeat and closes the connection.
    public func close() {
        heartbeat?.stop()
        heartbeat = nil
        lock.withLock {
            isClosed = true
            dropLink(leaving: true)
            // Before the context goes: a registration outliving it would unmap into nothing.
            registrations.dropAll()
        }
    }

    /// The fastest transport UCX may use to reach nodes: an RDMA one where
    /// the machine has it, else `tcp`.
    public var transport: String {
        let names = Set(worker.transports().compactMap { $0.split(separator: "/").first.map(String.init) })
        return ["rc_mlx5", "dc_mlx5", "rc_verbs", "ud_mlx5", "ud_verbs", "tcp"].first(where: names.contains) ?? "tcp"
    }

    /// Whether a proven connection is up now.
    public var isConnected: Bool { lock.withLock { link != nil } }

    // MARK: Pages and regions, by call

    public func allocatePages(count: Int = 1) throws -> GlobalAddress {
        try checkCount(count)
        guard case let .address(address) = try call(.allocate(count: count), "allocate") else { throw unexpected("allocate") }
        return address
    }

    public func freePages(at address: GlobalAddress, count: Int = 1) throws {
        try checkCount(count)
        _ = try call(.free(address, count: count), "free")
    }

    /// A run's page count, checked before it goes on the wire.
    private func checkCount(_ count: Int) throws {
        guard count > 0, count <= Int(Int32.max) else {
            throw NetError.invalidSize("\(count) pages", reason: "a run is 1 to \(Int32.max) pages")
        }
    }

    public func openRegion(name: String) throws -> RemoteRegion {
        guard case let .region(region) = try call(.openRegion(name), "open region") else { throw unexpected("open region") }
        return region
    }

    public func createRegion(name: String, size: UInt64) throws -> RemoteRegion {
        guard case let .region(region) = try call(.createRegion(name, size: size), "create region") else {
            throw unexpected("create region")
        }
        return region
    }

    /// Frees the region and its pages on the node.
    public func destroyRegion(name: String) throws {
        _ = try call(.destroyRegion(name), "destroy region")
    }

    /// The node's shelves: index, first data address and bytes of data pages.
    public func shelves() throws -> [(index: Int, start: GlobalAddress, bytes: UInt64)] {
        try lock.withLock {
            try withLink("describe") { link, deadline throws(NetError) in
                try refreshShelves(link, by: deadline)
                return link.pool.shelves.map { ($0.index, $0.start, $0.bytes) }
            }
        }
    }

    private func call(_ call: NodeCall, _ what: String) throws -> NodeAnswer {
        try lock.withLock { try withLink(what) { link, deadline throws(NetError) in try exchange(call, what, on: link, by: deadline) } }
    }

    private func unexpected(_ what: String) -> NetError {
        .protocolViolation("the node answered \(what) with something else")
    }

    // MARK: Heartbeat

    static let heartbeatMilliseconds = 500

    /// Pings an idle connection, so that a node that stopped or was cut
    /// off is found before the next call waits on it.
    private func beat() {
        lock.withLock {
            guard link != nil,
                  Deadline.now() - lastTraffic >= UInt64(Self.heartbeatMilliseconds) * 1_000_000 else { return }
            _ = try? withLink("heartbeat") { link, deadline throws(NetError) in try exchange(.ping, "heartbeat", on: link, by: deadline) }
        }
    }
}

/// Registered memory (Lunasa): what a caller registers for good, forgets,
/// and how transfers register the rest.
extension RemotePool {
    /// Registers `buffer` once, for every transfer into or out of it from
    /// now on, until `unregister` (eager memory: the mount's cache window).
    public func register(_ buffer: UnsafeRawBufferPointer) throws {
        _ = try lock.withLock { () throws(NetError) in try registrations.registerEager(buffer) }
    }

    /// Forgets the registrations inside `buffer`, eager or lazy: call it
    /// before freeing memory that transfers used, whose addresses may come
    /// back as other memory (on RDMA verbs the old pages stay pinned).
    public func unregister(_ buffer: UnsafeRawBufferPointer) {
        lock.withLock { registrations.forget(buffer, eagerToo: true) }
    }

    /// Cached (the default): a caller's buffer of 64 KiB or more is
    /// registered at its first transfer and kept. perTransfer: registered
    /// and dropped around each, to measure what reuse saves.
    public var registrationMode: RegistrationMode {
        get { lock.withLock { registrations.mode } }
        set { lock.withLock { registrations.mode = newValue } }
    }

    /// Registrations made so far, and transfers that reused one.
    public var registrationCounts: (registrations: Int, reuses: Int) {
        lock.withLock { (registrations.registrations, registrations.reuses) }
    }
}

public typealias RegistrationMode = RegistrationCache.Mode
