import CFuse
import PoolFS
#if canImport(Glibc)
import Glibc
#endif

/// One request slot of a FUSE ring queue (RingQueue.swift): the two buffers
/// registered with the kernel, which writes a request into them and reads
/// the reply back. The request is re-laid out as /dev/fuse delivers it, in
/// room kept before the payload, so that libfuse dispatches it as usual.
final class RingEntry {
    unowned let queue: RingQueue
    /// linux/fuse.h struct fuse_uring_req_header: the in/out header, the
    /// operation's own header, then struct fuse_uring_ent_in_out.
    let headers: UnsafeMutableRawPointer
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
    static let operationHeader = 128
    static let entInOut = 256, commitOffset = entInOut + 8, payloadSizeOffset = entInOut + 16
    /// linux/fuse.h: FUSE_FSYNC and FUSE_FALLOCATE, which may take seconds.
    static let slowOpcodes: [UInt32] = [20, 43]
    /// linux/fuse.h: FUSE_READ and FUSE_WRITE, and the bytes of struct
    /// fuse_read_in and fuse_write_in up to the end of their common
    /// fields (fh, offset, size).
    static let readOpcode: UInt32 = 15, writeOpcode: UInt32 = 16, ioArguments = 20

    var payload: UnsafeMutableRawPointer { buffer + RingEntry.room }

    init?(queue: RingQueue, payloadSize: Int) {
        let total = RingEntry.headersSize + RingEntry.room + payloadSize
        guard let memory = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              memory != MAP_FAILED
        else { return nil }
        self.queue = queue
        self.payloadSize = payloadSize
        headers = memory
        buffer = memory + RingEntry.headersSize
        vector = .allocate(capacity: 2)
        vector[0] = iovec(iov_base: headers, iov_len: RingEntry.headersSize)
        vector[1] = iovec(iov_base: buffer + RingEntry.room, iov_len: payloadSize)
    }

    deinit {
        munmap(headers, RingEntry.headersSize + RingEntry.room + payloadSize)
        vector.deallocate()
    }

    /// Serves the request the kernel put here: reads and writes itself,
    /// slow requests through the helper, the rest through libfuse, which
    /// calls the file system's handler; its reply comes back through `answer`.
    func serve() {
        let length = Int(headers.load(as: UInt32.self))
        let payloadCount = Int(headers.load(fromByteOffset: RingEntry.payloadSizeOffset, as: UInt32.self))
        unique = headers.load(fromByteOffset: 8, as: UInt64.self)
        commit = headers.load(fromByteOffset: RingEntry.commitOffset, as: UInt64.self)
        answered = false
        let operation = length - DeviceIO.inHeader - payloadCount
        guard (0...RingEntry.operationHeader).contains(operation), payloadCount <= payloadSize else {
            fail(EIO)
            return
        }
        if servedDirectly(operation: operation, payloadCount: payloadCount) { return }
        let start = payload - DeviceIO.inHeader - operation
        start.copyMemory(from: headers, byteCount: DeviceIO.inHeader)
        (start + DeviceIO.inHeader).copyMemory(from: headers + RingEntry.operationHeader, byteCount: operation)
        laidOut = fuse_buf(size: length, flags: fuse_buf_flags(rawValue: 0), mem: start, fd: -1, pos: 0)
        if RingEntry.slowOpcodes.contains(headers.load(fromByteOffset: 4, as: UInt32.self)) {
            handedOff = true
            if queue.handOff(self) { return }
            handedOff = false
        }
        dispatch()
    }

    /// libfuse dispatches the laid-out request, on the ring's thread or
    /// the helper's.
    func dispatch() {
        pthread_setspecific(RingQueue.key, Unmanaged.passUnretained(self).toOpaque())
        fuse_session_process_buf(queue.session, &laidOut)
        pthread_setspecific(RingQueue.key, nil)
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
    private func servedDirectly(operation: Int, payloadCount: Int) -> Bool {
        guard operation >= RingEntry.ioArguments else { return false }
        let node = headers.load(fromByteOffset: 16, as: UInt64.self)
        let arguments = headers + RingEntry.operationHeader
        let offset = arguments.load(fromByteOffset: 8, as: UInt64.self)
        let size = Int(arguments.load(fromByteOffset: 16, as: UInt32.self))
        switch headers.load(fromByteOffset: 4, as: UInt32.self) {
        case RingEntry.readOpcode:
            return queue.owner.ringRead(self, node: node, offset: offset, size: size)
        case RingEntry.writeOpcode where size == payloadCount:
            // linux/fuse.h struct fuse_in_header: uid and gid follow the nodeid.
            let caller = FileSystem.Caller(uid: headers.load(fromByteOffset: 24, as: UInt32.self),
                                           gid: headers.load(fromByteOffset: 28, as: UInt32.self))
            return queue.owner.ringWrite(self, node: node, offset: offset, UnsafeRawBufferPointer(start: payload, count: size),
                                         by: caller)
        default:
            return false
        }
    }

    /// Takes libfuse's reply (out header, then the reply's pieces) if it is
    /// for this entry's request; returns the bytes taken, or nil.
    func answer(_ vector: UnsafePointer<iovec>, _ count: Int) -> Int? {
        guard !answered, count >= 1, let header = vector[0].iov_base, vector[0].iov_len >= DeviceIO.outHeader,
              header.load(fromByteOffset: 8, as: UInt64.self) == unique
        else { return nil }
        return reply(UnsafeBufferPointer(start: vector + 1, count: count - 1),
                     error: header.load(fromByteOffset: 4, as: Int32.self))
    }

    /// Answers the request with `pieces`, copied into the payload.
    @discardableResult
    func reply(_ pieces: UnsafeBufferPointer<iovec>, error: Int32 = 0) -> Int {
        var total = 0
        for piece in pieces {
            guard total + piece.iov_len <= payloadSize else { return fail(EINVAL) }
            if let base = piece.iov_base { (payload + total).copyMemory(from: base, byteCount: piece.iov_len) }
            total += piece.iov_len
        }
        return send(total, error: error)
    }

    /// Answers a write: linux/fuse.h struct fuse_write_out (size, padding).
    func replyWritten(_ count: Int) {
        payload.storeBytes(of: UInt32(count), as: UInt32.self)
        payload.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        send(8, error: 0)
    }

    /// Answers the request with an error alone.
    @discardableResult
    func fail(_ error: Int32) -> Int {
        send(0, error: -error)
    }

    /// Sends the reply whose first `count` bytes of payload are in place.
    @discardableResult
    private func send(_ count: Int, error: Int32) -> Int {
        headers.storeBytes(of: UInt32(DeviceIO.outHeader + count), as: UInt32.self)
        headers.storeBytes(of: error, toByteOffset: 4, as: Int32.self)
        headers.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        headers.storeBytes(of: UInt32(count), toByteOffset: RingEntry.payloadSizeOffset, as: UInt32.self)
        answered = true
        if !handedOff { queue.commit(self, id: commit) }
        return DeviceIO.outHeader + count
    }
}
