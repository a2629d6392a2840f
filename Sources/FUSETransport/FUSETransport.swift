import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the transport asks of the file system's adapter: the two requests
/// it answers itself on a ring (the rest go through libfuse's dispatch to
/// the adapter's handlers), and what it has to tell.
public protocol FUSETransportHandler: AnyObject, Sendable {
    /// A read that came on a ring: answered through `entry`; false to
    /// have libfuse dispatch it to the adapter's handler instead.
    func ringRead(_ entry: RingEntry, node: UInt64, offset: UInt64, size: Int) -> Bool
    /// A write that came on a ring, its bytes in `data`; false as above.
    func ringWrite(_ entry: RingEntry, node: UInt64, offset: UInt64, _ data: UnsafeRawBufferPointer,
                   uid: UInt32, gid: UInt32) -> Bool
    /// The kernel keeps shared mappings coherent with direct I/O from now
    /// on (FUSE_DIRECT_IO_ALLOW_MMAP): files may be opened direct.
    func directIOAllowsSharedMappings()
    /// How requests arrive, in words, each time that changes.
    func requestsArrive(_ how: String)
}

/// How requests get from the kernel to the adapter and replies back:
/// /dev/fuse through libfuse's loop, amended at INIT (InitHandshake.swift),
/// and, where the kernel offers it, a ring per CPU (RingQueue.swift) that
/// answers reads and writes through the handler and the rest through
/// libfuse's dispatch. libfuse ≥ 3.18 has rings of its own; this is the
/// seam where they could take over.
public final class FUSETransport: @unchecked Sendable {
    unowned let handler: any FUSETransportHandler
    let handshake = InitHandshake()
    /// How /dev/fuse is read once the rings serve (DevicePolling.swift).
    let devicePolling = DevicePolling()
    /// libfuse's session, set by `install`: requests from rings go to it.
    private(set) var session: OpaquePointer?
    private let rings = Mutex<(queues: [RingQueue], watchdog: RingWatchdog?)>(([], nil))
    /// What to ask for at INIT when the kernel offers it.
    var wantedFlags = InitHandshake.directIOAllowMmap | InitHandshake.overIOUring

    /// The largest write (and read) a request carries.
    public static let maxWrite = 1 << 20
    /// A ring's payload: max_write, with room to spare.
    static let ringPayload = maxWrite + 4096

    public init(handler: any FUSETransportHandler) {
        self.handler = handler
        handler.requestsArrive("/dev/fuse")
    }

    /// Takes over `session`'s device I/O, after fuse_session_mount; with
    /// `rings` false, requests only ever come through /dev/fuse.
    public func install(on session: OpaquePointer, rings: Bool) -> Bool {
        self.session = session
        if !rings { wantedFlags &= ~InitHandshake.overIOUring }
        return DeviceIO.install(on: session, for: self)
    }

    /// After the session's loop: the rings' threads end.
    public func stop() {
        let (queues, watchdog) = rings.withLock { rings in
            defer { rings = ([], nil) }
            return rings
        }
        watchdog?.stop()
        RingQueue.stop(queues)
    }

    /// What libfuse's session must carry as its userdata (fuse_session_new):
    /// this transport, which its device I/O is given back; the adapter's
    /// handlers find the adapter from it (`handler(ofSessionUserdata:)`).
    public var sessionUserdata: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    public static func handler(ofSessionUserdata userdata: UnsafeMutableRawPointer) -> AnyObject {
        from(userdata).handler
    }

    static func from(_ userdata: UnsafeMutableRawPointer) -> FUSETransport {
        Unmanaged<FUSETransport>.fromOpaque(userdata).takeUnretainedValue()
    }

    /// Before the INIT reply: a ring for every CPU, or none (then the
    /// reply does not ask for rings).
    func prepareRings(device: Int32) -> Bool {
        guard let session else { return false }
        let handler = self.handler
        let queues = RingQueue.prepare(device: device, session: session, handler: handler,
                                       payloadSize: FUSETransport.ringPayload) { error in
            handler.requestsArrive("/dev/fuse (the kernel refused a ring: \(String(cString: strerror(error))))")
        }
        guard !queues.isEmpty else {
            handler.requestsArrive("/dev/fuse (no ring could be made)")
            return false
        }
        rings.withLock { $0 = (queues, nil) }
        return true
    }

    /// After the INIT reply: the rings register and serve.
    func startRings() {
        handler.requestsArrive("io_uring, a ring per CPU")
        devicePolling.ringsStarted.store(true, ordering: .relaxed)
        rings.withLock { rings in
            RingQueue.go(rings.queues)
            // Nothing to watch where the threads keep normal priority.
            if rings.queues.contains(where: \.idlePriority) { rings.watchdog = RingWatchdog(watching: rings.queues) }
        }
    }

    /// The ring entry libfuse is dispatching request `unique` from, if
    /// any: the kernel numbers requests once for rings and /dev/fuse alike.
    func entry(dispatching unique: UInt64) -> RingEntry? {
        guard unique != 0, devicePolling.ringsStarted.load(ordering: .relaxed) else { return nil }
        return rings.withLock { rings in
            for queue in rings.queues {
                for entry in queue.entries where entry.dispatching.load(ordering: .acquiring) == unique { return entry }
            }
            return nil
        }
    }

    /// Whether the kernel sends requests to the rings: it does once every
    /// CPU's has registered, so once one of them has served a request.
    func ringsServe() -> Bool {
        rings.withLock { $0.queues.contains { $0.served.load(ordering: .relaxed) > 0 } }
    }

    /// CLOCK_MONOTONIC in nanoseconds, for the rings' priority timing.
    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
