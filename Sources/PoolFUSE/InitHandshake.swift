import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Sits between libfuse and /dev/fuse for one thing: the INIT handshake.
/// libfuse 3.14 cannot ask for FUSE_DIRECT_IO_ALLOW_MMAP (kernel 6.6+),
/// which lets a file opened for direct I/O still be mapped shared, the
/// kernel keeping the mapping's pages coherent with direct writes. When the
/// kernel offers it, this adds it to libfuse's reply; every other request
/// and reply passes through untouched.
final class InitHandshake: Sendable {
    /// The INIT request's id while its reply is awaited; 0 otherwise.
    private let pending = Atomic<UInt64>(0)

    // linux/fuse.h
    static let initOpcode: UInt32 = 26
    static let initExtended: UInt32 = 1 << 30
    static let directIOAllowMmap: UInt32 = 1 << (36 - 32)   // in flags2
    static let inHeader = 40, outHeader = 16
    static let inFlags = inHeader + 12, inFlags2 = inHeader + 16
    static let outFlags = 12, outFlags2 = 32

    /// Puts the handshake on `session`'s device, after fuse_session_mount.
    static func install(on session: OpaquePointer) -> Bool {
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            let count = Glibc.read(fd, buffer, length)
            if count >= InitHandshake.inFlags2 + 4, let buffer, let userdata {
                FUSESession.from(userdata).handshake.sawRequest(UnsafeRawPointer(buffer))
            }
            return count
        }
        io.writev = { fd, vector, count, userdata in
            if let vector, count >= 2, let userdata {
                let session = FUSESession.from(userdata)
                if session.handshake.willReply(UnsafeMutableBufferPointer(start: vector, count: Int(count))) {
                    // Granted: every file opened from now on goes direct.
                    session.fs.directIO.store(true, ordering: .releasing)
                }
            }
            return Glibc.writev(fd, vector, count)
        }
        return fuse_session_custom_io(session, &io, fuse_session_fd(session)) == 0
    }

    private func sawRequest(_ request: UnsafeRawPointer) {
        guard request.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == InitHandshake.initOpcode else { return }
        let flags = request.loadUnaligned(fromByteOffset: InitHandshake.inFlags, as: UInt32.self)
        let flags2 = request.loadUnaligned(fromByteOffset: InitHandshake.inFlags2, as: UInt32.self)
        guard flags & InitHandshake.initExtended != 0, flags2 & InitHandshake.directIOAllowMmap != 0 else { return }
        pending.store(request.loadUnaligned(fromByteOffset: 8, as: UInt64.self), ordering: .releasing)
    }

    /// Whether this reply was the INIT reply, now asking for the flag.
    private func willReply(_ vector: UnsafeMutableBufferPointer<iovec>) -> Bool {
        let unique = pending.load(ordering: .acquiring)
        guard unique != 0, let header = vector[0].iov_base, vector[0].iov_len >= InitHandshake.outHeader,
              header.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == unique,
              header.loadUnaligned(fromByteOffset: 4, as: Int32.self) == 0,
              let reply = vector[1].iov_base, vector[1].iov_len >= InitHandshake.outFlags2 + 4
        else { return false }
        pending.store(0, ordering: .releasing)
        let flags = reply.loadUnaligned(fromByteOffset: InitHandshake.outFlags, as: UInt32.self)
        let flags2 = reply.loadUnaligned(fromByteOffset: InitHandshake.outFlags2, as: UInt32.self)
        reply.storeBytes(of: flags | InitHandshake.initExtended, toByteOffset: InitHandshake.outFlags, as: UInt32.self)
        reply.storeBytes(of: flags2 | InitHandshake.directIOAllowMmap, toByteOffset: InitHandshake.outFlags2, as: UInt32.self)
        return true
    }
}
