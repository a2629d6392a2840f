import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One request slot of a FUSE ring queue (RingQueue.swift): the two buffers
/// registered with the kernel, which writes a request into them and reads
/// the reply back. The request is re-laid out as /dev/fuse delivers it, in
/// room kept before the payload, so that libfuse dispatches it as usual.
public final class RingEntry {
    unowned let queue: RingQueue
    /// The in/out header, the operation's own header, then the ring's
    /// fields (commit id, payload size).
    let headers: UnsafeMutablePointer<fuse_uring_req_header>
    /// `room` bytes for the headers of the re-laid request, then the payload.
    let buffer: UnsafeMutableRawPointer
    let payloadSize: Int
    /// The two iovecs registered: headers and payload.
    let vector: UnsafeMutablePointer<iovec>
    /// The request being served: its id and whether it has been answered.
    private(set) var unique: UInt64 = 0
    private var commit: UInt64 = 0
    private(set) var answered = true
    /// Set while a helper serves the request (RingHelper.swift): the reply
    /// waits for the ring's thread to send it.
    private var handedOff = false
    /// The request as /dev/fuse would have delivered it, for libfuse.
    private var laidOut = fuse_buf()

    static let headersSize = 4096, room = 4096
    static let operationHeader = Int(FUSE_URING_OP_IN_OUT_SZ)
    /// Requests that may take seconds.
    static let slowOpcodes: [UInt32] = [FUSE_FSYNC.rawValue, FUSE_FALLOCATE.rawValue]

    var payload: UnsafeMutableRawPointer { buffer + RingEntry.room }

    init?(queue: RingQueue, payloadSize: Int) {
        let total = RingEntry.headersSize + RingEntry.room + payloadSize
        guard let memory = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              memory != MAP_FAILED
        else { return nil }
        self.queue = queue
        self.payloadSize = payloadSize
        headers = memory.bindMemory(to: fuse_uring_req_header.self, capacity: 1)
        buffer = memory + RingEntry.headersSize
        vector = .allocate(capacity: 2)
        vector[0] = iovec(iov_base: memory, iov_len: RingEntry.headersSize)
        vector[1] = iovec(iov_base: buffer + RingEntry.room, iov_len: payloadSize)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(headers), RingEntry.headersSize + RingEntry.room + payloadSize)
        vector.deallocate()
    }

    /// Serves the request the kernel put here: reads and writes itself,
    /// slow requests through the helper, the rest through libfuse, which
    /// calls the file system's handler; its reply comes back through `answer`.
    func serve() {
        let request = poolfs_ring_in_header(headers).pointee
        let length = Int(request.len)
        let payloadCount = Int(headers.pointee.ring_ent_in_out.payload_sz)
        unique = request.unique
        commit = headers.pointee.ring_ent_in_out.commit_id
        answered = false
        let operation = length - DeviceIO.inHeader - payloadCount
        guard (0...RingEntry.operationHeader).contains(operation), payloadCount <= payloadSize else {
            fail(EIO)
            return
        }
        if servedDirectly(request, operation: operation, payloadCount: payloadCount) { return }
        let start = payload - DeviceIO.inHeader - operation
        start.copyMemory(from: poolfs_ring_in_header(headers), byteCount: DeviceIO.inHeader)
        (start + DeviceIO.inHeader).copyMemory(from: poolfs_ring_operation(headers), byteCount: operation)
        laidOut = fuse_buf(size: length, flags: fuse_buf_flags(rawValue: 0), mem: start, fd: -1, pos: 0)
        if RingEntry.slowOpcodes.contains(request.opcode) {
            handedOff = true
            if queue.handOff(self) { return }
            handedOff = false
        }
        dispatch()
    }

    /// The id of the request libfuse is dispatching from this entry now,
    /// 0 otherwise: its reply comes back through DeviceIO's writev, which
    /// finds this entry by it (FUSETransport.entry(dispatching:)).
    let dispatching = Atomic<UInt64>(0)

    /// libfuse dispatches the laid-out request, on the ring's thread or
    /// the helper's.
    func dispatch() {
        dispatching.store(unique, ordering: .releasing)
        fuse_session_process_buf(queue.session, &laidOut)
        dispatching.store(0, ordering: .releasing)
        // libfuse answers every request it dispatches; should one slip
        // through, the kernel must still hear back.
        if !answered { fail(EIO) }
    }

    /// On the ring's thread: sends the reply the helper left.
    func sendHandedBack() {
        handedOff = false
        queue.commit(self, id: commit)
    }

    /// Reads and writes of files, the requests that come most often,
    /// answered without libfuse (which allocates a request and a reply
    /// vector for each); false for the rest, which libfuse dispatches.
    private func servedDirectly(_ request: fuse_in_header, operation: Int, payloadCount: Int) -> Bool {
        let arguments = UnsafeRawPointer(poolfs_ring_operation(headers)!)
        switch request.opcode {
        case FUSE_READ.rawValue where operation >= MemoryLayout<fuse_read_in>.size:
            let read = arguments.load(as: fuse_read_in.self)
            return queue.handler.ringRead(self, node: request.nodeid, offset: read.offset, size: Int(read.size))
        case FUSE_WRITE.rawValue where operation >= MemoryLayout<fuse_write_in>.size:
            let write = arguments.load(as: fuse_write_in.self)
            guard Int(write.size) == payloadCount else { return false }
            return queue.handler.ringWrite(self, node: request.nodeid, offset: write.offset,
                                           UnsafeRawBufferPointer(start: payload, count: payloadCount),
                                           uid: request.uid, gid: request.gid)
        default:
            return false
        }
    }

    /// Takes libfuse's reply (out header, then the reply's pieces) if it is
    /// for this entry's request; returns the bytes taken, or nil.
    func answer(_ vector: UnsafePointer<iovec>, _ count: Int) -> Int? {
        guard !answered, count >= 1, let base = vector[0].iov_base, vector[0].iov_len >= DeviceIO.outHeader
        else { return nil }
        let header = base.loadUnaligned(as: fuse_out_header.self)
        guard header.unique == unique else { return nil }
        return reply(UnsafeBufferPointer(start: vector + 1, count: count - 1), error: header.error)
    }

    /// Answers the request with `pieces`, copied into the payload.
    @discardableResult
    public func reply(_ pieces: UnsafeBufferPointer<iovec>, error: Int32 = 0) -> Int {
        var total = 0
        for piece in pieces {
            guard total + piece.iov_len <= payloadSize else { return fail(EINVAL) }
            if let base = piece.iov_base { (payload + total).copyMemory(from: base, byteCount: piece.iov_len) }
            total += piece.iov_len
        }
        return send(total, error: error)
    }

    /// Answers a write.
    public func replyWritten(_ count: Int) {
        payload.storeBytes(of: fuse_write_out(size: UInt32(count), padding: 0), as: fuse_write_out.self)
        send(MemoryLayout<fuse_write_out>.size, error: 0)
    }

    /// Answers the request with an error alone.
    @discardableResult
    public func fail(_ error: Int32) -> Int {
        send(0, error: -error)
    }

    /// Sends the reply whose first `count` bytes of payload are in place.
    @discardableResult
    private func send(_ count: Int, error: Int32) -> Int {
        poolfs_ring_out_header(headers).pointee = fuse_out_header(len: UInt32(DeviceIO.outHeader + count), error: error,
                                                                  unique: unique)
        headers.pointee.ring_ent_in_out.payload_sz = UInt32(count)
        answered = true
        if !handedOff { queue.commit(self, id: commit) }
        return DeviceIO.outHeader + count
    }
}
