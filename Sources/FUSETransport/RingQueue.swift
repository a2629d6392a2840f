import PoolThreads
import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// FUSE over io_uring (kernel 6.14+, with the fuse module's enable_uring
/// set): one queue per CPU, served by a thread bound to that CPU. The
/// kernel puts a request on the queue of the CPU that made it, so it is
/// answered where it was asked, without waking another CPU for each round
/// trip (in a VM the dearest part of a small request). Forgets, interrupts
/// and INIT still come through /dev/fuse, served by libfuse's loop.
///
/// The threads run at idle priority, so that the scheduler wakes the
/// requester on this same CPU (it counts a CPU running only idle-priority
/// threads as free, and the requester preempts at once). A watchdog gives
/// normal priority back to a thread kept from running while it has work
/// (RingWatchdog.swift). Polling the ring for a while after each request
/// was measured and not kept: no faster, and a runnable poller on its CPU
/// makes the other CPU pull the requester away.
final class RingQueue: @unchecked Sendable {
    let index: Int
    let device: Int32
    /// libfuse's session, which dispatches requests, and the handler that
    /// answers reads and writes without it (RingEntry.swift).
    let session: OpaquePointer
    unowned let handler: any FUSETransportHandler
    /// Told when the kernel refuses an entry (with its errno).
    let refused: @Sendable (Int32) -> Void
    private let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
    private(set) var entries: [RingEntry] = []
    private let wake: Int32
    private var thread: JoinableThread?
    /// Posted by the thread once it has enabled the ring (the ring's only
    /// submitter must enable it), with the outcome in `enabled`.
    private let started = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    private let enabled = Atomic<Int32>(0)
    /// The thread's id, for the watchdog to raise its priority.
    let threadID = Atomic<Int32>(0)
    /// Requests answered so far: once one is, the kernel uses the rings.
    let served = Atomic<UInt64>(0)
    /// Whether the thread runs at idle priority: only where it may leave
    /// it again (root, or an RLIMIT_NICE that allows nice 0).
    let idlePriority = poolfs_may_leave_idle_priority() != 0
    /// Until when the thread keeps the normal priority the watchdog gave it
    /// (0: idle priority): its CPU was busy with others, where idle priority
    /// only delays requests.
    let raisedUntil = Atomic<UInt64>(0)

    /// Requests waiting on one CPU's ring (more wait in the kernel): the
    /// thread answers one at a time, so more would only hold memory, a
    /// payload of max_write each.
    static let depth = 2
    // linux/fuse.h enum fuse_uring_cmd
    static let register = FUSE_IO_URING_CMD_REGISTER.rawValue, commitAndFetch = FUSE_IO_URING_CMD_COMMIT_AND_FETCH.rawValue

    private init(index: Int, device: Int32, session: OpaquePointer, handler: any FUSETransportHandler,
                 refused: @escaping @Sendable (Int32) -> Void) {
        self.index = index
        self.device = device
        self.session = session
        self.handler = handler
        self.refused = refused
        wake = eventfd(0, Int32(EFD_CLOEXEC))
        sem_init(started, 0, 0)
    }

    deinit {
        ring.deallocate()
        sem_destroy(started)
        started.deallocate()
        if wake >= 0 { close(wake) }
    }

    /// A queue for every CPU the kernel may run on, its ring made and its
    /// thread started, waiting for `go`. Called before the INIT reply: once
    /// the kernel has been told to use rings it holds every request until
    /// each queue has registered, so rings are asked for only if all are
    /// ready (empty otherwise).
    static func prepare(device: Int32, session: OpaquePointer, handler: any FUSETransportHandler, payloadSize: Int,
                        refused: @escaping @Sendable (Int32) -> Void) -> [RingQueue] {
        var queues: [RingQueue] = []
        for index in 0..<RingQueue.possibleCPUs() {
            let queue = RingQueue(index: index, device: device, session: session, handler: handler, refused: refused)
            for _ in 0..<depth {
                guard let entry = RingEntry(queue: queue, payloadSize: payloadSize) else { break }
                queue.entries.append(entry)
            }
            guard queue.wake >= 0, queue.entries.count == depth,
                  poolfs_ring_init(queue.ring, UInt32(depth + 2)) == 0
            else {
                stop(queues)
                return []
            }
            guard queue.launch() else {
                io_uring_queue_exit(queue.ring)
                stop(queues)
                return []
            }
            queues.append(queue)
            guard queue.waitEnabled() == 0 else {
                stop(queues)
                return []
            }
        }
        return queues
    }

    /// The INIT reply is out: the threads register their entries.
    static func go(_ queues: [RingQueue]) {
        for queue in queues { queue.signal(RingQueue.go) }
    }

    static func stop(_ queues: [RingQueue]) {
        for queue in queues { queue.stop() }
    }

    /// What a thread reads from `wake` before it starts: go, or leave.
    static let go: UInt64 = 1, leave: UInt64 = 2

    /// The kernel's number of possible CPUs (num_possible_cpus), which is
    /// how many queues it waits for: how many the list in
    /// /sys/devices/system/cpu/possible names ("0-3", "0,2-5").
    static func possibleCPUs() -> Int {
        let fallback = max(1, sysconf(Int32(_SC_NPROCESSORS_CONF)))
        let file = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return fallback }
        defer { close(file) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { buffer in
            let count = read(file, buffer.baseAddress, buffer.count)
            guard count > 0 else { return fallback }
            let text = String(decoding: buffer[..<count], as: UTF8.self)
            guard let line = text.split(separator: "\n").first else { return fallback }
            var cpus = 0
            for part in line.split(separator: ",") {
                let bounds = part.split(separator: "-").compactMap { Int($0) }
                guard let first = bounds.first, let last = bounds.last, last >= first else { return fallback }
                cpus += last - first + 1
            }
            return max(1, cpus)
        }
    }

    private func launch() -> Bool {
        thread = JoinableThread { self.serve() }
        return thread != nil
    }

    private func waitEnabled() -> Int32 {
        while sem_wait(started) != 0 && errno == EINTR {}
        return enabled.load(ordering: .acquiring)
    }

    private func signal(_ value: UInt64) {
        var value = value
        _ = write(wake, &value, MemoryLayout<UInt64>.size)
    }

    /// Before `go`, the thread leaves at once; after, the ring's poll on
    /// `wake` ends its loop.
    private func stop() {
        guard let thread else { return }
        signal(RingQueue.leave)
        thread.join()
        self.thread = nil
        helper?.stop()
        helper = nil
    }

    /// Serves the slow requests, once there has been one (RingHelper.swift).
    private var helper: RingHelper?

    /// Gives `entry`'s request to the helper; false if it is busy (or
    /// cannot be made), and the ring's thread serves it.
    func handOff(_ entry: RingEntry) -> Bool {
        if helper == nil {
            guard let made = RingHelper(name: "poolfs-slow-\(index)") else { return false }
            helper = made
            waitForHelper()
        }
        return helper!.take(entry)
    }

    /// Has the ring wake this thread when the helper has a reply.
    private func waitForHelper() {
        guard let helper else { return }
        let tag = Unmanaged.passUnretained(helper).toOpaque()
        if poolfs_ring_poll(ring, helper.done, tag) != 0 {
            _ = io_uring_submit(ring)
            _ = poolfs_ring_poll(ring, helper.done, tag)
        }
    }

    private func serve() {
        let me = poolfs_thread_id()
        poolfs_name_thread("poolfs-ring-\(index)")
        threadID.store(me, ordering: .relaxed)
        defer { io_uring_queue_exit(ring) }
        enabled.store(poolfs_ring_enable(ring), ordering: .releasing)
        // Waits name the ring by its registered index, not its file: no
        // file lookup per request. A failure leaves the file in use.
        _ = io_uring_register_ring_fd(ring)
        // Told before idle priority: a CPU busy with others would keep an
        // idle thread (and so the INIT reply, which waits for every ring) waiting.
        sem_post(started)
        _ = poolfs_pin_to_cpu(Int32(index))
        if idlePriority { _ = poolfs_set_idle_priority(me, 1) }
        var start: UInt64 = 0
        while read(wake, &start, MemoryLayout<UInt64>.size) < 0 && errno == EINTR {}
        guard start == RingQueue.go else { return }
        for entry in entries {
            _ = poolfs_ring_fuse_command(ring, device, RingQueue.register, UInt16(index), 0, entry.vector,
                                         Unmanaged.passUnretained(entry).toOpaque())
        }
        _ = poolfs_ring_poll(ring, wake, nil)
        var completion: UnsafeMutablePointer<io_uring_cqe>?
        while true {
            // Answers go to the kernel as the thread waits for the next request.
            let raised = raisedUntil.load(ordering: .relaxed)
            if raised != 0, FUSETransport.monotonicNanoseconds() > raised {
                // Idle first, then say so: the watchdog raises only threads
                // it sees at idle priority.
                _ = poolfs_set_idle_priority(me, 1)
                raisedUntil.store(0, ordering: .relaxed)
            }
            let result = poolfs_ring_next(ring, &completion)
            if result == -EINTR || result == -EAGAIN { continue }
            guard result == 0 else {
                // The kernel would go on queueing this CPU's requests here:
                // keep trying, unless the mount is ending.
                var ending = pollfd(fd: wake, events: Int16(POLLIN), revents: 0)
                if poll(&ending, 1, 1) > 0 { return }
                continue
            }
            while let done = completion {
                let data = io_uring_cqe_get_data(done)
                let outcome = done.pointee.res
                io_uring_cqe_seen(ring, done)
                // The next one stays put in the ring until seen.
                if io_uring_peek_cqe(ring, &completion) != 0 { completion = nil }
                // The eventfd: the mount is ending (answers given go out).
                guard let data else {
                    _ = io_uring_submit(ring)
                    return
                }
                if let helper, data == Unmanaged.passUnretained(helper).toOpaque() {
                    helper.served()?.sendHandedBack()
                    // A poll the ring cancels (it is ending) is not asked again.
                    if outcome != -ECANCELED { waitForHelper() }
                    continue
                }
                guard outcome >= 0 else {
                    if outcome == -ENOTCONN || outcome == -ECONNABORTED || outcome == -ENODEV { return }
                    // The kernel refused this entry (a refused registration:
                    // it goes on with /dev/fuse); the others still serve.
                    refused(-outcome)
                    continue
                }
                let entry = Unmanaged<RingEntry>.fromOpaque(data).takeUnretainedValue()
                served.add(1, ordering: .relaxed)
                entry.serve()
            }
        }
    }

    /// Queues the entry's answer and its request for the next one; sent
    /// when the thread next waits.
    func commit(_ entry: RingEntry, id: UInt64) {
        let data = Unmanaged.passUnretained(entry).toOpaque()
        // The ring has a slot per entry and per poll, so it is full only if
        // others wait unsent: send them, then this.
        if poolfs_ring_fuse_command(ring, device, RingQueue.commitAndFetch, UInt16(index), id, nil, data) != 0 {
            _ = io_uring_submit(ring)
            _ = poolfs_ring_fuse_command(ring, device, RingQueue.commitAndFetch, UInt16(index), id, nil, data)
        }
    }
}
