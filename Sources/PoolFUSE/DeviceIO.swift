import CFuse
#if canImport(Glibc)
import Glibc
#endif

/// libfuse's custom I/O on /dev/fuse: the INIT handshake is amended on its
/// way (InitHandshake.swift), and a reply to a request that came through a
/// ring goes back through that ring (RingEntry.swift).
enum DeviceIO {
    /// linux/fuse.h: struct fuse_in_header and struct fuse_out_header.
    static let inHeader = 40, outHeader = 16

    /// Puts itself on `se`'s device, after fuse_session_mount.
    static func install(on se: OpaquePointer, for session: FUSESession) -> Bool {
        session.fuseSession = se
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            guard let userdata else { return Glibc.read(fd, buffer, length) }
            let session = FUSESession.from(userdata)
            let count = session.devicePolling.read(fd, buffer, length, session: session.fuseSession,
                                                   ringsServe: session.ringsServe)
            if count >= InitHandshake.inFlags2 + 4, let buffer {
                session.handshake.sawRequest(UnsafeRawPointer(buffer), wanted: session.wantedFlags)
            }
            return count
        }
        io.writev = { fd, vector, count, userdata in
            guard let vector else { return Glibc.writev(fd, vector, count) }
            if let entry = RingQueue.current, let taken = entry.answer(vector, Int(count)) { return taken }
            guard count >= 2, let userdata else { return Glibc.writev(fd, vector, count) }
            let session = FUSESession.from(userdata)
            let reply = UnsafeMutableBufferPointer(mutating: UnsafeBufferPointer(start: vector, count: Int(count)))
            let granted = session.handshake.willReply(reply) { session.prepareRings(device: fd) }
            if granted & InitHandshake.directIOAllowMmap != 0 {
                // Every file opened from now on goes direct.
                session.fs.directIO.store(true, ordering: .releasing)
            }
            let written = Glibc.writev(fd, vector, count)
            if granted & InitHandshake.overIOUring != 0 {
                // The kernel has taken the INIT reply: rings may register now.
                if written > 0 { session.startRings() } else { session.stopRings() }
            }
            return written
        }
        return fuse_session_custom_io(se, &io, fuse_session_fd(se)) == 0
    }
}
