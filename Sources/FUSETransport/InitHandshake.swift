import CFuse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The INIT handshake, seen on its way through DeviceIO. libfuse 3.14
/// cannot ask for two things newer kernels offer, so this adds them to its
/// INIT reply:
/// - FUSE_DIRECT_IO_ALLOW_MMAP (6.6+): a file opened for direct I/O may
///   still be mapped shared, the kernel keeping the mapping's pages
///   coherent with direct writes;
/// - FUSE_OVER_IO_URING (6.14+, when the fuse module's enable_uring is
///   set): requests come through per-CPU rings (RingQueue.swift).
final class InitHandshake: Sendable {
    /// The INIT request's id while its reply is awaited; 0 otherwise.
    private let pending = Atomic<UInt64>(0)
    /// Of `wanted`, what the kernel offered in that request.
    private let offered = Atomic<UInt32>(0)

    static let initExtended = UInt32(FUSE_INIT_EXT)
    /// Bits of the second flags word, which holds bits 32-63.
    static let directIOAllowMmap = UInt32(truncatingIfNeeded: UInt64(FUSE_DIRECT_IO_ALLOW_MMAP) >> 32)
    static let overIOUring = UInt32(truncatingIfNeeded: UInt64(FUSE_OVER_IO_URING) >> 32)
    static let inFlags = DeviceIO.inHeader + MemoryLayout<fuse_init_in>.offset(of: \.flags)!
    static let inFlags2 = DeviceIO.inHeader + MemoryLayout<fuse_init_in>.offset(of: \.flags2)!
    static let outFlags = MemoryLayout<fuse_init_out>.offset(of: \.flags)!
    static let outFlags2 = MemoryLayout<fuse_init_out>.offset(of: \.flags2)!

    /// `wanted`: the flags2 bits to ask for if offered.
    func sawRequest(_ request: UnsafeRawPointer, wanted: UInt32) {
        guard request.loadUnaligned(as: fuse_in_header.self).opcode == FUSE_INIT.rawValue else { return }
        let flags = request.loadUnaligned(fromByteOffset: InitHandshake.inFlags, as: UInt32.self)
        let flags2 = request.loadUnaligned(fromByteOffset: InitHandshake.inFlags2, as: UInt32.self)
        guard flags & InitHandshake.initExtended != 0, flags2 & wanted != 0 else { return }
        offered.store(flags2 & wanted, ordering: .relaxed)
        pending.store(request.loadUnaligned(as: fuse_in_header.self).unique, ordering: .releasing)
    }

    /// If this reply is the INIT reply: the flags2 bits it now asks for.
    /// Rings are asked for only if `ringsReady` says they are.
    func willReply(_ vector: UnsafeMutableBufferPointer<iovec>, ringsReady: () -> Bool) -> UInt32 {
        let unique = pending.load(ordering: .acquiring)
        guard unique != 0, let header = vector[0].iov_base, vector[0].iov_len >= DeviceIO.outHeader,
              header.loadUnaligned(as: fuse_out_header.self).unique == unique,
              header.loadUnaligned(as: fuse_out_header.self).error == 0,
              let reply = vector[1].iov_base, vector[1].iov_len >= InitHandshake.outFlags2 + 4
        else { return 0 }
        pending.store(0, ordering: .releasing)
        var asked = offered.load(ordering: .relaxed)
        if asked & InitHandshake.overIOUring != 0 && !ringsReady() { asked &= ~InitHandshake.overIOUring }
        let flags = reply.loadUnaligned(fromByteOffset: InitHandshake.outFlags, as: UInt32.self)
        let flags2 = reply.loadUnaligned(fromByteOffset: InitHandshake.outFlags2, as: UInt32.self)
        reply.storeBytes(of: flags | InitHandshake.initExtended, toByteOffset: InitHandshake.outFlags, as: UInt32.self)
        reply.storeBytes(of: flags2 | asked, toByteOffset: InitHandshake.outFlags2, as: UInt32.self)
        return asked
    }
}
